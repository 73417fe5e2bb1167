"""Envelope encryption as KMS-backed functions do it, with cryptography: a Fernet token
with rotation (MultiFernet), AES-GCM data keys wrapped with RSA-OAEP, RSA-PSS and Ed25519
signatures, an X25519 agreement through HKDF, and PEM keys serialised and loaded back."""

import base64
import os

from cryptography.exceptions import InvalidSignature
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def envelope(plaintext, public_key):
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    sealed = AESGCM(data_key).encrypt(nonce, plaintext, b"corpus")
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    return public_key.encrypt(data_key, oaep), nonce, sealed, oaep


def handler(event, context):
    message = (event["message"] * event["repeat"]).encode()
    old, new = Fernet(Fernet.generate_key()), Fernet(Fernet.generate_key())
    token = old.encrypt(message)
    rotated = MultiFernet([new, old]).rotate(token)
    try:
        old.decrypt(rotated)
        stale = "decrypted"
    except InvalidToken:
        stale = "invalid"
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(b"pass"))
    loaded = serialization.load_pem_private_key(pem, password=b"pass")
    wrapped, nonce, sealed, oaep = envelope(message, private.public_key())
    opened = AESGCM(loaded.decrypt(wrapped, oaep)).decrypt(nonce, sealed, b"corpus")
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
    signature = private.sign(message, pss, hashes.SHA256())
    try:
        private.public_key().verify(signature, message + b"!", pss, hashes.SHA256())
        tampered = "accepted"
    except InvalidSignature:
        tampered = "rejected"
    ed = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    a, b = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    shared = [HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"corpus").derive(
        k.exchange(p.public_key())) for k, p in ((a, b), (b, a))]
    return {"fernet": MultiFernet([new, old]).decrypt(rotated) == message, "stale": stale,
            "opened": opened == message, "wrapped_len": len(wrapped),
            "sealed_len": len(sealed), "tampered": tampered,
            "pem_head": pem.splitlines()[0].decode(),
            "ed25519": base64.b64encode(ed.sign(b"fixed")).decode(),
            "agreed": shared[0] == shared[1]}
