"""The URL policy: prefixes, schemes and ports, the address rule after DNS, the socket check."""

import ipaddress
import socket

import pytest

from usetl.etl import EtlError, UrlPolicy


def denied(policy: UrlPolicy, url: str) -> EtlError:
    with pytest.raises(EtlError) as e:
        policy.check_url(url)
    return e.value


def test_empty_allow_list_denies_everything():
    e = denied(UrlPolicy(), "http://127.0.0.1:8000/x")
    assert e.kind == "denied"
    assert str(e) == "http://127.0.0.1:8000/x: not covered by the allow-list"
    assert "\n" not in str(e)


def test_prefix_path_rules():
    p = UrlPolicy(["http://127.0.0.1:8000/data/", "http://127.0.0.1:8000/file"])
    assert p.check_url("http://127.0.0.1:8000/data/a.csv").addresses == ("127.0.0.1",)
    assert p.check_url("http://127.0.0.1:8000/data/sub/b?x=1").target == "/data/sub/b?x=1"
    assert p.check_url("http://127.0.0.1:8000/file").target == "/file"
    assert p.check_url("http://127.0.0.1:8000/file/part").target == "/file/part"
    for url in (
        "http://127.0.0.1:8000/data",  # the prefix "/data/" is a directory
        "http://127.0.0.1:8000/database",
        "http://127.0.0.1:8000/filed",
        "http://127.0.0.1:8000/",
        "http://127.0.0.1:8001/data/a.csv",  # another port
        "https://127.0.0.1:8000/data/a.csv",  # another scheme
        "http://127.0.0.2:8000/data/a.csv",  # another host
        "http://127.0.0.1:8000/data/../secret",  # normalised to /secret
    ):
        assert denied(p, url).kind == "denied", url


def test_default_ports_and_case():
    p = UrlPolicy(["HTTP://LOCALHOST/", "https://localhost/s/"])
    assert p.check_url("http://localhost:80/a").port == 80
    assert p.check_url("http://LocalHost/a").host_header == "localhost"
    assert p.check_url("https://localhost:443/s/x").port == 443
    assert denied(p, "http://localhost:8080/a").kind == "denied"
    assert p.check_url("http://localhost/a#frag").url == "http://localhost/a"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "not a url",
        "http:///nohost",
        "http://user:pw@127.0.0.1/x",
        "http://127.0.0.1/data/%2e%2e/secret",
        "http://127.0.0.1/data/..%2Fsecret",
        "http://127.0.0.1/data/%2E/x",
    ],
)
def test_invalid_urls(url):
    assert denied(UrlPolicy(["http://127.0.0.1/"]), url).kind == "invalid"


def test_prefix_with_query_is_invalid():
    with pytest.raises(EtlError) as e:
        UrlPolicy(["http://127.0.0.1/x?a=1"])
    assert e.value.kind == "invalid"


def test_ip_literals_and_localhost_name_their_addresses():
    # Non-global addresses, each named by its prefix: allowed without allow_private.
    p = UrlPolicy(["http://127.0.0.1/", "http://10.1.2.3/", "http://[::1]/"])
    assert p.check_url("http://10.1.2.3/x").addresses == ("10.1.2.3",)
    assert p.check_url("http://[::1]/x").host_header == "[::1]"
    assert p.check_url("http://[0:0::1]/x").addresses == ("::1",)
    # Named explicitly: loopback through "localhost".
    assert (
        "127.0.0.1" in UrlPolicy(["http://localhost:9/"]).check_url("http://localhost:9/").addresses
    )


def test_a_name_resolving_to_a_private_address_is_denied(monkeypatch):
    # A DNS answer the attacker controls: an allowed public name pointing inside.
    answers = {
        "data.example.com": "10.0.0.5",
        "meta.example.com": "169.254.169.254",
        "mapped.example.com": "::ffff:127.0.0.1",
        "ok.example.com": "93.184.216.34",
    }

    def getaddrinfo(host, port, *args, **kwargs):
        ip = answers[host]
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sockaddr = (ip, port, 0, 0) if family == socket.AF_INET6 else (ip, port)
        return [(family, socket.SOCK_STREAM, 6, "", sockaddr)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    allow = [f"http://{h}/" for h in answers]
    p = UrlPolicy(allow)
    for host in ("data", "meta", "mapped"):
        e = denied(p, f"http://{host}.example.com/x")
        assert e.kind == "denied"
        assert str(ipaddress.ip_address(answers[f"{host}.example.com"])) in e.reason
    assert p.check_url("http://ok.example.com/x").addresses == ("93.184.216.34",)
    assert UrlPolicy(allow, allow_private=True).check_url("http://data.example.com/").addresses == (
        "10.0.0.5",
    )
    assert p.allowed_hosts() == {"ok.example.com": ["93.184.216.34"]}


def test_dns_failure():
    e = denied(UrlPolicy(["http://no-such-host.invalid/"]), "http://no-such-host.invalid/x")
    assert e.kind == "dns"
    assert "no-such-host.invalid" in str(e)


def test_check_socket():
    p = UrlPolicy(["http://127.0.0.1:8000/data/", "http://localhost:9000/", "https://10.9.9.9/",
                   "tcp://127.0.0.1:5432"])
    assert p.check_socket("127.0.0.1", 5432) == ["127.0.0.1"]  # a tcp:// entry
    assert "127.0.0.1" in p.check_socket("127.0.0.1", 9000)  # localhost resolves to it
    assert "127.0.0.1" in p.check_socket("localhost", 9000)
    assert p.check_socket("10.9.9.9", 443) == ["10.9.9.9"]  # https's default port
    for host, port in [
        ("127.0.0.1", 8000),  # a prefix with a path grants no raw TCP
        ("127.0.0.1", 8001),
        ("10.9.9.9", 80),
        ("169.254.169.254", 80),
        ("127.0.0.2", 8000),
        ("::1", 8000),
    ]:
        with pytest.raises(EtlError) as e:
            p.check_socket(host, port)
        assert e.value.kind == "denied"
        assert str(e.value).startswith(f"{host}:{port}: ")


def test_a_tcp_entry_grants_sockets_and_no_url():
    p = UrlPolicy(["tcp://127.0.0.1:5432"])
    with pytest.raises(EtlError) as e:
        p.check_url("http://127.0.0.1:5432/")
    assert e.value.kind == "denied"
    for bad in ["tcp://127.0.0.1", "tcp://127.0.0.1:5432/db", "tcp://u:p@127.0.0.1:1"]:
        with pytest.raises(EtlError) as e:
            UrlPolicy([bad])
        assert e.value.kind == "invalid"


def test_allowed_hosts_lists_names_not_literals():
    p = UrlPolicy(["http://127.0.0.1:8000/", "http://localhost:9000/a", "http://localhost:9001/"])
    hosts = p.allowed_hosts()
    assert list(hosts) == ["localhost"]  # from :9001/ (a prefix with a path grants no socket)
    assert "127.0.0.1" in hosts["localhost"]
