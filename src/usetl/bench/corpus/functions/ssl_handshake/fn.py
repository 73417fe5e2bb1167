"""ssl contexts: a certificate made with cryptography, a TLS server on 127.0.0.1 in a thread,
a verifying client, and a handshake over memory BIOs."""

import datetime
import socket
import ssl
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def certificate():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    with open("/tmp/tls-cert.pem", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open("/tmp/tls-key.pem", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def serve(server_ctx, listener, replies):
    conn, _ = listener.accept()
    with server_ctx.wrap_socket(conn, server_side=True) as tls:
        replies.append(tls.recv(100).decode())
        tls.sendall(b"pong " + tls.version().encode())


def handler(event, context):
    certificate()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain("/tmp/tls-cert.pem", "/tmp/tls-key.pem")
    client_ctx = ssl.create_default_context(cafile="/tmp/tls-cert.pem")
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    listener = socket.create_server(("127.0.0.1", 0))
    replies = []
    thread = threading.Thread(target=serve, args=(server_ctx, listener, replies))
    thread.start()
    with socket.create_connection(listener.getsockname(), timeout=30) as raw:
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"ping")
            answer = tls.recv(100).decode()
            peer = tls.getpeercert()["subject"]
    thread.join(30)
    listener.close()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    bio = client_ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        bio.do_handshake()
    except ssl.SSLWantReadError:
        hello = outgoing.pending > 0
    default = ssl.create_default_context()
    try:
        untrusted = client_ctx.wrap_socket(socket.socket(), server_hostname="example.org")
        untrusted.close()
        wrapped = True
    except ssl.SSLError:
        wrapped = False
    return {"answer": answer, "server_got": replies, "peer": peer, "client_hello": hello,
            "default_verifies": default.verify_mode == ssl.CERT_REQUIRED and
            default.check_hostname, "wrapped": wrapped, "openssl": ssl.OPENSSL_VERSION_INFO[0]}
