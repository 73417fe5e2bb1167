"""A sign-up and login function's password handling: bcrypt hashes with a cost, passlib's
CryptContext with pbkdf2_sha256 and sha512_crypt (deprecation and rehash), constant-time
checks, and the stdlib's scrypt and pbkdf2_hmac for comparison."""

import hashlib
import hmac

import bcrypt
from passlib.context import CryptContext


def handler(event, context):
    password = event["password"].encode()
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds=event["rounds"]))
    ctx = CryptContext(schemes=["pbkdf2_sha256", "sha512_crypt"], deprecated=["sha512_crypt"],
                       pbkdf2_sha256__rounds=20000, sha512_crypt__rounds=5000)
    old = ctx.handler("sha512_crypt").hash(event["password"])
    new = ctx.hash(event["password"])
    ok, upgraded = ctx.verify_and_update(event["password"], old)
    salt = b"fixed-salt-16byt"
    scrypt = hashlib.scrypt(password, salt=salt, n=2 ** 12, r=8, p=1, dklen=32).hex()
    pbkdf2 = hashlib.pbkdf2_hmac("sha256", password, salt, 50000).hex()
    return {"bcrypt_ok": bcrypt.checkpw(password, hashed),
            "bcrypt_bad": bcrypt.checkpw(b"nope", hashed),
            "bcrypt_prefix": hashed[:7].decode(), "kdf": bcrypt.kdf(
                password, salt, 32, 10).hex(),
            "pbkdf2_scheme": ctx.identify(new), "old_scheme": ctx.identify(old),
            "verify_old": ok, "needs_update": ctx.needs_update(old),
            "upgraded_scheme": ctx.identify(upgraded), "wrong": ctx.verify("nope", new),
            "scrypt": scrypt, "pbkdf2": pbkdf2,
            "compare": hmac.compare_digest(scrypt, scrypt)}
