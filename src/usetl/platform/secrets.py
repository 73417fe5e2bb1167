"""Secrets: values a tenant keeps out of its code, given to its functions at invoke time.

Each value is sealed with AES-256-GCM (the `cryptography` library) under the server's key,
with the tenant and the secret's name as associated data (a sealed value moved to another
tenant or name does not open). The key is never in the registry: it is $USETL_SECRET_KEY
(32 bytes in URL-safe base64), else the file `secret.key` in the state directory, mode
0600, made on first use.

A function version names the secrets it gets (`usetl deploy --secret NAME`); each of its
invocations finds them in `context.secrets` (name -> value), read and opened for that
invocation only. They are never in a template or a snapshot (a warm-up run and the
module's top-level code do not get them), and a value that reaches the invocation's output,
error or result is replaced by `[secret NAME]` before the record is stored or answered:
the value itself, in the encodings handlers commonly print it in (encoded_forms: JSON and
repr escapes, URL encoding, hex, base64 at any offset), and split by line breaks. Not
caught: a value transformed otherwise (reversed, hashed, encrypted, cut into pieces
printed apart with other text between them), which no filter of the output can know.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import html
import json
import os
import re
import secrets as entropy
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from usetl.errors import UsetlError
from usetl.invocation import InvocationResult

KEY_ENV = "USETL_SECRET_KEY"
KEY_FILE = "secret.key"
KEY_BYTES = 32
NONCE_BYTES = 12
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")  # as an environment variable's
MAX_VALUE_BYTES = 64 << 10


class SecretError(UsetlError):
    """The key is unusable, or a sealed value does not open (the message says why)."""


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode())
    except (binascii.Error, ValueError) as e:
        raise SecretError(f"{where} is not URL-safe base64: {e}") from e
    if len(key) != KEY_BYTES:
        raise SecretError(f"{where} holds {len(key)} bytes; an AES-256 key is {KEY_BYTES}")
    return key


def load_key(state_dir: Path) -> bytes:
    """$USETL_SECRET_KEY, else the state directory's key file (made, 0600, if missing)."""
    text = os.environ.get(KEY_ENV)
    if text:
        return _decode_key(text, f"${KEY_ENV}")
    path = state_dir / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made earlier, or just now by another server on this state
        return _decode_key(path.read_text(), str(path))
    with os.fdopen(fd, "w") as f:
        f.write(base64.urlsafe_b64encode(AESGCM.generate_key(KEY_BYTES * 8)).decode() + "\n")
    return _decode_key(path.read_text(), str(path))


class SecretBox:
    """Seals and opens secret values; the key is loaded on first use."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.lock = threading.Lock()
        self.aead: AESGCM | None = None

    def _cipher(self) -> AESGCM:
        with self.lock:
            if self.aead is None:
                self.aead = AESGCM(load_key(self.state_dir))
            return self.aead

    def seal(self, tenant_id: int, name: str, value: str) -> bytes:
        nonce = entropy.token_bytes(NONCE_BYTES)
        return nonce + self._cipher().encrypt(nonce, value.encode(), _bound(tenant_id, name))

    def open(self, tenant_id: int, name: str, sealed: bytes) -> str:
        nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        try:
            return self._cipher().decrypt(nonce, ciphertext, _bound(tenant_id, name)).decode()
        except InvalidTag as e:
            raise SecretError(f"secret {name!r} does not open with this server's key (was "
                              f"${KEY_ENV} or {KEY_FILE} changed?)") from e


def _bound(tenant_id: int, name: str) -> bytes:
    """The associated data a value is sealed under: its tenant and name."""
    return f"{tenant_id}\0{name}".encode()


# Derived forms shorter than this are not redacted (the value itself always is): a short
# fragment of base64 would hide unrelated text too often.
MIN_FORM_CHARS = 6
LINE_BREAKS = re.compile(r"\r?\n")


def _base64_fragments(data: bytes) -> list[str]:
    """The base64 characters that encode only `data`'s bits, at each of the three offsets it
    may start at inside a longer encoded text (an HTTP Basic credential, `user:password`):
    the characters shared with its neighbours' bits are left out."""
    fragments = []
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + data + bytes(2)).decode()
        first = -(-8 * shift // 6)  # the first character whose 6 bits are all data's
        last = (8 * (shift + len(data))) // 6  # one past the last
        fragments.append(encoded[first:last])
    return fragments


def encoded_forms(value: str) -> set[str]:
    """The value and the forms a handler commonly prints it in: the escapes of a JSON
    string (ASCII-only and not), of a Python str's and bytes' repr, HTML, URL encoding
    (path, query and form), hex of its UTF-8 bytes (either case), and base64 (standard
    and URL-safe, at any offset in a longer encoded text). As GitHub Actions' masker does
    for a secret's encodings."""
    data = value.encode()
    forms = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
             repr(value)[1:-1], repr(data)[2:-1], html.escape(value),
             urllib.parse.quote(value), urllib.parse.quote(value, safe=""),
             urllib.parse.quote_plus(value), data.hex(), data.hex().upper()}
    for fragment in _base64_fragments(data):
        forms.update((fragment, fragment.translate(URLSAFE)))
    return {value} | {f for f in forms if len(f) >= MIN_FORM_CHARS}


URLSAFE = str.maketrans("+/", "-_")


class Redactor:
    """Replaces secret values, in any of their encoded_forms(), with `[secret NAME]`: where
    they appear whole, and where line breaks split them (printed in pieces, or wrapped)."""

    def __init__(self, values: dict[str, str]):
        pairs = {form: f"[secret {name}]" for name, value in values.items() if value
                 for form in encoded_forms(value)}
        # Longest first: one value, or one form, may contain another.
        self.pairs = sorted(pairs.items(), key=lambda p: -len(p[0]))

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def clean(self, text: str) -> str:
        for form, mark in self.pairs:
            if form in text:
                text = text.replace(form, mark)
        return self._split(text) if "\n" in text else text

    def _split(self, text: str) -> str:
        """Forms found once the line breaks are taken out, replaced (breaks and all)."""
        joined = LINE_BREAKS.sub("", text)
        spans: list[tuple[int, int, str]] = []  # in `joined`
        for form, mark in self.pairs:
            if len(form) < MIN_FORM_CHARS:
                continue
            at = joined.find(form)
            while at >= 0:
                spans.append((at, at + len(form), mark))
                at = joined.find(form, at + len(form))
        if not spans:
            return text
        breaks = [(m.start(), m.end()) for m in LINE_BREAKS.finditer(text)]
        removed = [0]  # removed[i]: characters taken out before the i-th break's place
        places = []  # where each break sits in `joined`
        for start, end in breaks:
            places.append(start - removed[-1])
            removed.append(removed[-1] + end - start)

        def original(j: int, ends: bool) -> int:
            # A span's end maps before the breaks that follow its last character.
            i = bisect.bisect_left(places, j) if ends else bisect.bisect_right(places, j)
            return j + removed[i]

        pieces, done = [], 0
        for start, end, mark in _disjoint(spans):
            begin = original(start, False)
            pieces += [text[done:begin], mark]
            done = original(end, True)
        return "".join(pieces) + text[done:]


def _disjoint(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Overlapping spans merged (the first one's mark kept), in order."""
    merged: list[tuple[int, int, str]] = []
    for start, end, mark in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]), merged[-1][2])
        else:
            merged.append((start, end, mark))
    return merged


def redact(outcome: InvocationResult, values: dict[str, str]) -> None:
    """Replace every secret value (Redactor) in the invocation's output, error and result."""
    redactor = Redactor(values)
    if not redactor:
        return
    clean = redactor.clean
    outcome.stdout, outcome.stderr = clean(outcome.stdout), clean(outcome.stderr)
    if outcome.error is not None:
        outcome.error = msgspec.structs.replace(outcome.error, message=clean(outcome.error.message),
                                                traceback=clean(outcome.error.traceback))
    outcome.value = _clean_value(outcome.value, clean)


def _clean_value(value: Any, clean) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        return [_clean_value(v, clean) for v in value]
    if isinstance(value, dict):
        return {clean(k) if isinstance(k, str) else k: _clean_value(v, clean)
                for k, v in value.items()}
    return value
