"""FunctionBench pyaes: AES-CTR in pure Python (pyaes), a message encrypted and decrypted."""

import hashlib
import random

import pyaes


def handler(event, context):
    rng = random.Random(event["seed"])
    message = "".join(rng.choice("abcdefghij") for _ in range(event["length_of_message"]))
    key = bytes(rng.randrange(256) for _ in range(32))
    for _ in range(event["num_of_iterations"]):
        ciphertext = pyaes.AESModeOfOperationCTR(key).encrypt(message)
        plaintext = pyaes.AESModeOfOperationCTR(key).decrypt(ciphertext)
    return {"sha256": hashlib.sha256(ciphertext).hexdigest(),
            "round_trip": plaintext.decode() == message}
