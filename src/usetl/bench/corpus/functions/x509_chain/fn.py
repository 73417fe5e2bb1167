"""X.509 as mTLS gateways and signing services handle it with cryptography: a root CA, an
intermediate and a leaf with SANs and extensions, a CSR signed by the intermediate, chain
verification with cryptography's verifier (WebPKI's rules: EC keys), a CRL revoking a
certificate, PKCS#12 bundling and loading, an Ed25519 signing key, and PEM/DER round
trips; keys derived from fixed seeds (ECDSA's signatures are not, so neither are the
certificates' fingerprints)."""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

NOW = datetime.datetime(2024, 6, 1, tzinfo=datetime.UTC)


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corpus"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def cert(subject, issuer, public, signer, serial, ca, path_len=None, sans=()):
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(public).serial_number(serial)
         .not_valid_before(NOW - datetime.timedelta(days=1))
         .not_valid_after(NOW + datetime.timedelta(days=365))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             signer.public_key()), critical=False))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                          False), critical=True)
    else:
        b = (b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]),
                             critical=False)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                            critical=False)
             .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                          False, False), critical=True))
    return b.sign(signer, hashes.SHA256())


def handler(event, context):
    root_key = ec.derive_private_key(event["seed"], ec.SECP384R1())
    inter_key = ec.derive_private_key(event["seed"] + 1, ec.SECP256R1())
    leaf_key = ec.derive_private_key(event["seed"] + 2, ec.SECP256R1())
    release_key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    root = cert(name("Root CA"), name("Root CA"), root_key.public_key(), root_key, 1, True, 1)
    inter = cert(name("Issuing CA"), root.subject, inter_key.public_key(), root_key, 2, True, 0)
    csr = (x509.CertificateSigningRequestBuilder().subject_name(name(event["host"]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(event["host"])]),
                          critical=False).sign(leaf_key, hashes.SHA256()))
    leaf = cert(csr.subject, inter.subject, csr.public_key(), inter_key, 1000, False,
                sans=[event["host"], "alt." + event["host"]])
    verifier = (PolicyBuilder().store(Store([root])).time(NOW)
                .build_server_verifier(x509.DNSName(event["host"])))
    chain = verifier.verify(leaf, [inter])
    try:
        (PolicyBuilder().store(Store([root])).time(NOW)
         .build_server_verifier(x509.DNSName("evil.example")).verify(leaf, [inter]))
        wrong_host = "verified"
    except Exception as e:
        wrong_host = type(e).__name__
    crl = (x509.CertificateRevocationListBuilder().issuer_name(inter.subject)
           .last_update(NOW).next_update(NOW + datetime.timedelta(days=7))
           .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(1000)
                                    .revocation_date(NOW).build())
           .sign(inter_key, hashes.SHA256()))
    bundle = pkcs12.serialize_key_and_certificates(
        b"leaf", leaf_key, leaf, [inter, root],
        serialization.BestAvailableEncryption(b"pw"))
    key_back, cert_back, extra = pkcs12.load_key_and_certificates(bundle, b"pw")
    pem = leaf.public_bytes(serialization.Encoding.PEM)
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return {"chain": [c.subject.rfc4514_string() for c in chain], "wrong_host": wrong_host,
            "csr_valid": csr.is_signature_valid,
            "sans": leaf.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName),
            "revoked": crl.get_revoked_certificate_by_serial_number(1000) is not None,
            "crl_signed": crl.is_signature_valid(inter_key.public_key()),
            "p12": [cert_back == leaf, len(extra), key_back.private_numbers() ==
                    leaf_key.private_numbers()],
            "key_ids": [c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
                        .value.digest.hex()[:16] for c in (root, inter, leaf)],
            # Ed25519's signatures are deterministic: a root's key signed for a trust bundle
            "ed25519": release_key.sign(root_key.public_key().public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo)).hex()[:32],
            "der": x509.load_der_x509_certificate(der) == leaf,
            "root_self_signed": root.verify_directly_issued_by(root) is None}
