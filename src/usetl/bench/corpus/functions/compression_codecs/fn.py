"""Compression codecs beyond the stdlib's, as log shippers and CDN functions use them:
zstandard (levels, a trained dictionary, streaming with a multi-threaded compressor),
brotli (qualities, text mode) and lz4 frames and blocks, each round-tripped."""

import hashlib
import io
import random

import brotli
import lz4.block
import lz4.frame
import zstandard


def corpus(seed, lines):
    rng = random.Random(seed)
    words = ["GET", "POST", "/api/v1/items", "/health", "200", "404", "500", "ms", "user"]
    return "\n".join(" ".join(rng.choice(words) for _ in range(8)) + f" {rng.randrange(10**6)}"
                     for _ in range(lines)).encode()


def handler(event, context):
    data = corpus(event["seed"], event["lines"])
    digest = hashlib.sha256(data).hexdigest()
    sizes = {}
    for level in (1, 9, 19):
        z = zstandard.ZstdCompressor(level=level).compress(data)
        assert zstandard.ZstdDecompressor().decompress(z) == data
        sizes[f"zstd{level}"] = len(z)
    samples = [corpus(event["seed"] + i, 20) for i in range(200)]
    dictionary = zstandard.train_dictionary(4096, samples)
    with_dict = zstandard.ZstdCompressor(dict_data=dictionary).compress(samples[0])
    back = zstandard.ZstdDecompressor(dict_data=dictionary).decompress(with_dict)
    stream = io.BytesIO()
    with zstandard.ZstdCompressor(threads=2).stream_writer(stream, closefd=False) as w:
        for i in range(0, len(data), 65536):
            w.write(data[i:i + 65536])
    streamed = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stream.getvalue())).read()
    for q in (1, 6, 11):
        b = brotli.compress(data, quality=q, mode=brotli.MODE_TEXT)
        assert brotli.decompress(b) == data
        sizes[f"brotli{q}"] = len(b)
    frame = lz4.frame.compress(data, compression_level=9, content_checksum=True)
    block = lz4.block.compress(data, mode="high_compression")
    return {"sha256": digest, "sizes": sizes, "dict_ok": back == samples[0],
            "dict_smaller": len(with_dict) < len(zstandard.ZstdCompressor().compress(samples[0])),
            "streamed": streamed == data, "lz4_frame": len(frame),
            "lz4_frame_ok": lz4.frame.decompress(frame) == data,
            "lz4_block_ok": lz4.block.decompress(block) == data, "raw": len(data)}
