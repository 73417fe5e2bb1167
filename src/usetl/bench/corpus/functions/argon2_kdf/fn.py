"""Password storage with Argon2, as auth handlers adopt it: argon2-cffi's PasswordHasher
(hash, verify, a wrong password, needs-rehash after a parameter change), raw Argon2id and
Argon2i with a fixed salt across thread counts (the C library's own threads), and the
parameters parsed back from an encoded hash."""

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import VerifyMismatchError
from argon2.low_level import hash_secret, hash_secret_raw


def handler(event, context):
    password = event["password"]
    ph = PasswordHasher(time_cost=2, memory_cost=8192, parallelism=2)
    stored = ph.hash(password)
    ok = ph.verify(stored, password)
    try:
        ph.verify(stored, password + "!")
        wrong = "accepted"
    except VerifyMismatchError:
        wrong = "mismatch"
    stronger = PasswordHasher(time_cost=3, memory_cost=8192, parallelism=2)
    params = extract_parameters(stored)
    salt = event["salt"].encode()
    raw = {}
    for lanes in (1, 2, 4):
        for kind in (Type.ID, Type.I):
            raw[f"{kind.name}-{lanes}"] = hash_secret_raw(
                password.encode(), salt, time_cost=2, memory_cost=4096, parallelism=lanes,
                hash_len=16, type=kind).hex()
    encoded = hash_secret(password.encode(), salt, time_cost=1, memory_cost=1024,
                          parallelism=1, hash_len=16, type=Type.ID).decode()
    return {"prefix": stored.split("$")[1:4], "verify": ok, "wrong": wrong,
            "rehash_same": ph.check_needs_rehash(stored),
            "rehash_stronger": stronger.check_needs_rehash(stored),
            "params": [params.time_cost, params.memory_cost, params.parallelism,
                       params.type.name],
            "raw": raw, "encoded": encoded}
