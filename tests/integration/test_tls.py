"""HTTPS from a USF: the image's CA bundle, and trust roots an operator adds (UsfConfig.ca_certs).

The CA and the server's certificate are made here; the server is a real TLS
server on 127.0.0.1, reached through the proxied socket path.
"""

import datetime
import http.server
import ipaddress
import ssl
import textwrap
import threading

import pytest

from usetl.etl.policy import UrlPolicy
from usetl.usf import UsfConfig, UsfError, start_usf

pytestmark = pytest.mark.kvm

x509 = pytest.importorskip("cryptography.x509", reason="the dev extra 'cryptography' is needed")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _certificate(subject, issuer, key, signer, *, ca, san=None):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """An HTTPS server on 127.0.0.1 with a certificate from a CA made for this test."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("usetl test CA", "usetl test CA", ca_key, ca_key, ca=True)
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = _certificate("localhost", "usetl test CA", key, ca_key, ca=False, san=san)
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"secret over tls"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "cert.pem", d / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], ca.public_bytes(serialization.Encoding.PEM).decode()
    server.shutdown()
    server.server_close()


FETCH = """
    import ssl, urllib.request
    try:
        print(urllib.request.urlopen("https://localhost:{port}/x").read().decode())
    except urllib.error.URLError as e:
        print("failed:", e.reason.verify_message if isinstance(e.reason, ssl.SSLError) else e)
"""


def _fetch(image, port, ca_certs=""):
    with start_usf(image, UsfConfig(ca_certs=ca_certs)) as u:
        u.kernel.allow_sockets(UrlPolicy([f"https://localhost:{port}/"]))
        r = u.run_code(textwrap.dedent(FETCH.format(port=port)), timeout=60)
    assert r.error is None, (r.error, r.stderr)
    return r.stdout.strip()


def test_https_verifies_with_an_added_trust_root(image, tls_server):
    port, ca_pem = tls_server
    assert _fetch(image, port, ca_certs=ca_pem) == "secret over tls"


def test_https_to_an_unknown_ca_is_refused_by_verification(image, tls_server):
    port, _ = tls_server
    assert _fetch(image, port) == "failed: unable to get local issuer certificate"


def test_added_roots_keep_the_image_bundle_and_bad_pem_is_refused(image, tls_server):
    _, ca_pem = tls_server
    with start_usf(image, UsfConfig(ca_certs=ca_pem)) as u:
        r = u.run_code(textwrap.dedent("""
            import ssl
            certs = ssl.create_default_context().get_ca_certs()
            names = [dict(x[0] for x in c["subject"]).get("commonName") for c in certs]
            print("usetl test CA" in names, len(names) > 10)
        """), timeout=30)
    assert r.stdout.split() == ["True", "True"], (r.error, r.stderr)
    with pytest.raises(UsfError, match="not PEM certificates"):
        start_usf(image, UsfConfig(ca_certs="-----BEGIN CERTIFICATE-----\nnope\n"))
