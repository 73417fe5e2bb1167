"""A Lambda authorizer: bearer tokens issued and verified with PyJWT, HS256 with a shared
secret and RS256 and ES256 with keys made by cryptography, a JWKS lookup by kid, expiry,
audience and signature failures, and the IAM policy an authorizer answers."""

import json
from datetime import UTC, datetime, timedelta

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def policy(principal, effect, arn):
    return {"principalId": principal, "policyDocument": {"Version": "2012-10-17", "Statement": [
        {"Action": "execute-api:Invoke", "Effect": effect, "Resource": arn}]}}


def authorize(token, jwks, secret):
    header = jwt.get_unverified_header(token)
    if header["alg"] == "HS256":
        key = secret
    else:
        key = jwks[header["kid"]]
    try:
        claims = jwt.decode(token, key, algorithms=[header["alg"]], audience="corpus-api",
                            options={"verify_exp": True}, leeway=0)
    except jwt.ExpiredSignatureError:
        return "expired", None
    except jwt.InvalidAudienceError:
        return "audience", None
    except jwt.InvalidSignatureError:
        return "signature", None
    return "ok", claims["sub"]


def handler(event, context):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwks = {"rsa-1": RSAAlgorithm.from_jwk(jwk), "ec-1": ec_key.public_key()}
    secret = "s3cret-" * 5
    exp = datetime.now(UTC) + timedelta(minutes=5)
    base = {"iss": "https://issuer.example", "aud": "corpus-api", "iat": NOW, "exp": exp}
    tokens = [jwt.encode({**base, "sub": "alice"}, secret, algorithm="HS256"),
              jwt.encode({**base, "sub": "bob"}, rsa_key, algorithm="RS256",
                         headers={"kid": "rsa-1"}),
              jwt.encode({**base, "sub": "carol"}, ec_key, algorithm="ES256",
                         headers={"kid": "ec-1"}),
              jwt.encode({**base, "sub": "dave", "exp": NOW}, secret, algorithm="HS256"),
              jwt.encode({**base, "sub": "erin", "aud": "other"}, secret, algorithm="HS256"),
              jwt.encode({**base, "sub": "frank"}, "wrong-" * 6, algorithm="HS256")]
    arn = event["methodArn"]
    results = []
    for token in tokens:
        verdict, who = authorize(token, jwks, secret)
        results.append({"verdict": verdict, "policy": policy(
            who or "anonymous", "Allow" if who else "Deny", arn)})
    return {"results": results, "jwk_keys": sorted(jwk), "segments": [t.count(".") for t in tokens]}
