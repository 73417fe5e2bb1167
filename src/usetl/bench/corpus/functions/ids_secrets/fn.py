"""uuid, secrets, hmac and hashlib's key derivations: identifiers and tokens as handlers
make them."""

import hashlib
import hmac
import secrets
import uuid


def handler(event, context):
    ids = {uuid.uuid4() for _ in range(100)}
    node_based = uuid.uuid1()
    token = secrets.token_urlsafe(32)
    key = hashlib.pbkdf2_hmac("sha256", b"password", b"salt", event["iterations"])
    scrypt = hashlib.scrypt(b"password", salt=b"salt", n=1024, r=8, p=1)
    mac = hmac.new(key, b"message", "sha256").hexdigest()
    return {"unique": len(ids), "versions": sorted({u.version for u in ids}),
            "uuid1_version": node_based.version,
            "uuid5": str(uuid.uuid5(uuid.NAMESPACE_DNS, "example.org")),
            "token_len": len(token), "below": secrets.randbelow(10) < 10,
            "pbkdf2": key.hex()[:16], "scrypt": scrypt.hex()[:16],
            "mac_ok": hmac.compare_digest(mac, hmac.new(key, b"message", "sha256").hexdigest())}
