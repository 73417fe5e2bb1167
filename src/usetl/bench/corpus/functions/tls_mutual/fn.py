"""Mutual TLS as service-to-service handlers set it up: a private CA made with
cryptography signing a server and a client certificate, a threaded socketserver that
requires the client's certificate, ALPN and an SNI callback, TLS 1.3 session tickets
reused on a second connection, a client without a certificate refused, and unwrap back
to plain text."""

import datetime
import socket
import socketserver
import ssl
import tempfile
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(subject, key, issuer, issuer_key, ca=False, san=None, usage=None):
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
    return builder.sign(issuer_key, hashes.SHA256())


def write(d, stem, cert, key):
    (d / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / f"{stem}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


def pki(d):
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = issue("corpus CA", ca_key, "corpus CA", ca_key, ca=True)
    write(d, "ca", ca, ca_key)
    write(d, "server", issue("api.internal", server_key, "corpus CA", ca_key,
                             san="api.internal", usage=ExtendedKeyUsageOID.SERVER_AUTH),
          server_key)
    write(d, "client", issue("worker-7", client_key, "corpus CA", ca_key,
                             usage=ExtendedKeyUsageOID.CLIENT_AUTH), client_key)


class Whoami(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            tls = self.server.context.wrap_socket(self.request, server_side=True)
        except ssl.SSLError:
            return  # a client without a certificate, or one that refused ours
        peer = dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]
        command = tls.recv(100)
        tls.sendall(f"{peer} {tls.selected_alpn_protocol()} {command.decode()}".encode())
        if command == b"starttls-off":
            tls.unwrap().sendall(b"plain again")
        else:
            tls.close()


def handler(event, context):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        pki(d)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(d / "server.pem", d / "server.key")
        server_ctx.load_verify_locations(d / "ca.pem")
        server_ctx.verify_mode = ssl.CERT_REQUIRED
        server_ctx.set_alpn_protocols(["h2", "http/1.1"])
        names = []
        server_ctx.sni_callback = lambda sock, sni, ctx: names.append(sni)
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Whoami)
        server.context = server_ctx
        serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        serving.start()
        client_ctx = ssl.create_default_context(cafile=d / "ca.pem")
        client_ctx.load_cert_chain(d / "client.pem", d / "client.key")
        client_ctx.set_alpn_protocols(["http/1.1"])
        client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        out = {}
        session = None
        for attempt in range(2):
            with socket.create_connection(server.server_address, timeout=30) as raw:
                tls = client_ctx.wrap_socket(raw, server_hostname="api.internal", session=session)
                tls.sendall(f"call-{attempt}".encode())
                out[f"reply_{attempt}"] = tls.recv(200).decode()
                out[f"version_{attempt}"] = tls.version()
                out[f"reused_{attempt}"] = tls.session_reused
                session = tls.session
                tls.close()
        with socket.create_connection(server.server_address, timeout=30) as raw:
            tls = client_ctx.wrap_socket(raw, server_hostname="api.internal")
            tls.sendall(b"starttls-off")
            out["before_unwrap"] = tls.recv(200).decode()
            plain = tls.unwrap()
            out["after_unwrap"] = plain.recv(100).decode()
        anonymous = ssl.create_default_context(cafile=d / "ca.pem")
        try:
            with socket.create_connection(server.server_address, timeout=30) as raw:
                with anonymous.wrap_socket(raw, server_hostname="api.internal") as tls:
                    tls.sendall(b"hello")
                    out["anonymous"] = "accepted" if tls.recv(100) else "refused"
        except (ssl.SSLError, ConnectionError):
            out["anonymous"] = "refused"
        try:
            with socket.create_connection(server.server_address, timeout=30) as raw:
                client_ctx.wrap_socket(raw, server_hostname="wrong.name")
            out["wrong_name"] = "accepted"
        except ssl.SSLCertVerificationError as e:
            out["wrong_name"] = e.verify_message
        server.shutdown()
        server.server_close()
        serving.join(30)
    out["sni"] = sorted(set(names))
    return out
