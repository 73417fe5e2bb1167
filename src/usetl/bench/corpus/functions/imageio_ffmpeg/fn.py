"""Video in a handler the way SeBS's and vSwarm's video functions do it without OpenCV:
imageio-ffmpeg's bundled ffmpeg binary run as a child program, frames piped to it
(lossless H.264 in MP4, then FFV1 in Matroska) and read back through its stdout, the
container probed by reading ffmpeg's stderr."""

import hashlib
import os
import subprocess
import tempfile

import imageio_ffmpeg
import numpy as np


def frames(count, w, h):
    y, x = np.mgrid[0:h, 0:w]
    for i in range(count):
        frame = np.zeros((h, w, 3), np.uint8)
        frame[..., 0] = (x + 4 * i) % 256
        frame[..., 1] = (y * 2 + i) % 256
        frame[..., 2] = ((x // 16 + y // 16 + i) % 2) * 255
        yield frame


def roundtrip(path, count, w, h, codec, params):
    writer = imageio_ffmpeg.write_frames(path, (w, h), fps=10, codec=codec,
                                         output_params=params, macro_block_size=1,
                                         ffmpeg_log_level="error")
    writer.send(None)
    source = hashlib.sha256()
    for f in frames(count, w, h):
        source.update(f.tobytes())
        writer.send(f)
    writer.close()
    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    meta = next(reader)
    back = hashlib.sha256()
    n = 0
    for raw in reader:
        back.update(bytes(raw))
        n += 1
    return {"frames": n, "size": list(meta["size"]), "fps": meta["fps"],
            "codec": meta["codec"].split()[0], "source": source.hexdigest()[:16],
            "back": back.hexdigest()[:16]}


def handler(event, context):
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    version = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True,
                             text=True, timeout=60).stdout.split()[2]
    count, w, h = event["frames"], event["width"], event["height"]
    with tempfile.TemporaryDirectory() as tmp:
        ffv1 = roundtrip(os.path.join(tmp, "clip.mkv"), count, w, h, "ffv1",
                         ["-threads", "1", "-pix_fmt", "bgr0"])
        x264 = roundtrip(os.path.join(tmp, "clip.mp4"), count, w, h, "libx264rgb",
                         ["-threads", "1", "-qp", "0", "-preset", "ultrafast"])
    return {"version": version == imageio_ffmpeg.get_ffmpeg_version(), "ffv1": ffv1,
            "x264": x264, "lossless": ffv1["back"] == ffv1["source"]}
