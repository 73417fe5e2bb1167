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
error or result is replaced by `[secret NAME]` before the record is stored or answered.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets as entropy
import threading
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


def redact(outcome: InvocationResult, values: dict[str, str]) -> None:
    """Replace every secret value in the invocation's output, error and result."""
    pairs = sorted(((v, f"[secret {n}]") for n, v in values.items() if v),
                   key=lambda p: -len(p[0]))  # longest first: one value may contain another
    if not pairs:
        return

    def clean(text: str) -> str:
        for value, mark in pairs:
            text = text.replace(value, mark)
        return text

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
