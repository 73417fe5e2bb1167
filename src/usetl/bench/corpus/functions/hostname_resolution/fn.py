"""Name lookups libraries make at start-up: the host's own name (logging, metrics tags),
localhost in both families, getaddrinfo with a service name, and a name that does not
exist."""

import socket


def handler(event, context):
    own = socket.gethostname()
    try:
        own_address = socket.gethostbyname(own)
        resolved = own_address != ""
    except OSError as e:
        resolved = f"error {e.errno}"
    local = sorted({info[4][0] for info in socket.getaddrinfo("localhost", 80,
                                                              proto=socket.IPPROTO_TCP)})
    service = socket.getaddrinfo("127.0.0.1", "http", socket.AF_INET)[0][4]
    try:
        socket.getaddrinfo("no-such-host.invalid", 80)
        unknown = "resolved"
    except socket.gaierror as e:
        unknown = e.errno in (socket.EAI_NONAME, socket.EAI_AGAIN)
    return {"own_resolves": resolved, "localhost": local, "service": list(service),
            "unknown": unknown, "fqdn": bool(socket.getfqdn())}
