"""A text-preprocessing function with Hugging Face's tokenizers: a BPE tokenizer trained in
memory on a generated corpus (normalisers, a pre-tokenizer, special tokens, post-processing
template), batches encoded with padding and truncation on its Rust threads, and the
tokenizer saved to JSON and loaded back."""

import json
import tempfile

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)


def lines(n):
    subjects = ["the function", "a cold start", "the snapshot", "every request", "our VM"]
    verbs = ["restores", "serves", "loads", "forks", "measures"]
    objects = ["its memory", "the handler", "quickly", "millions of pages", "a café's menu"]
    for i in range(n):
        yield f"{subjects[i % 5]} {verbs[i * 3 % 5]} {objects[i * 7 % 5]} ({i % 97})."


def handler(event, context):
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(),
                                           normalizers.StripAccents()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=event["vocab"], min_frequency=2,
                                  special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
                                  show_progress=False)
    tok.train_from_iterator(lines(event["lines"]), trainer=trainer, length=event["lines"])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(max_length=24)
    batch = tok.encode_batch(list(lines(64)))
    with tempfile.NamedTemporaryFile("w+", suffix=".json") as f:
        tok.save(f.name)
        again = Tokenizer.from_file(f.name)
    sample = "The Café restores its memory (3)."
    return {"vocab": tok.get_vocab_size(), "lengths": sorted({len(e.ids) for e in batch}),
            "first": batch[0].tokens[:8], "ids": batch[1].ids,
            "same_after_load": again.encode(sample).ids == tok.encode(sample).ids,
            "decoded": tok.decode(tok.encode(sample).ids),
            "merges": len(json.loads(tok.to_str())["model"]["merges"])}
