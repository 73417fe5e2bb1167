"""Sockets inside one USF: servers and clients of the same guest, as on Linux's loopback."""

import pytest

from guest_code import run_lines
from usetl.etl import UrlPolicy

pytestmark = pytest.mark.kvm


def test_an_asyncio_server_and_its_client_in_one_guest(usf):
    assert run_lines(usf, """
        import asyncio
        async def handle(reader, writer):
            line = await reader.readline()
            writer.write(line.upper() * 2000)
            await writer.drain()
            writer.close()
        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            host, port = server.sockets[0].getsockname()
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"ping\\n")
            await writer.drain()
            data = await reader.read()
            print(len(data), data[:5], writer.get_extra_info("peername") == (host, port))
            writer.close()
            server.close()
            await server.wait_closed()
        asyncio.run(main())
        """) == ["10000 b'PING\\n' True"]


def test_a_threaded_socketserver_with_a_client_thread(usf):
    assert run_lines(usf, """
        import socket, socketserver, threading
        class Reverse(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write(self.rfile.readline().strip()[::-1] + b"\\n")
        replies = []
        with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Reverse) as server:
            serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
            serving.start()
            def client(n):
                with socket.create_connection(server.server_address) as c:
                    c.sendall(b"abc%d\\n" % n)
                    replies.append(c.makefile("rb").readline())
            clients = [threading.Thread(target=client, args=(n,)) for n in range(3)]
            for t in clients:
                t.start()
            for t in clients:
                t.join()
            server.shutdown()
            serving.join()
        print(sorted(replies))
        """) == ["[b'0cba\\n', b'1cba\\n', b'2cba\\n']"]


def test_a_non_blocking_accept_and_connect_under_epoll(usf):
    assert run_lines(usf, """
        import errno, select, socket
        listener = socket.socket()
        listener.setblocking(False)
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        try:
            listener.accept()
        except BlockingIOError:
            print("accept EAGAIN")
        ep = select.epoll()
        ep.register(listener.fileno(), select.EPOLLIN)
        print("idle", ep.poll(0))
        client = socket.socket()
        client.setblocking(False)
        print("connect", errno.errorcode[client.connect_ex(listener.getsockname())])
        print("ready", ep.poll(1) == [(listener.fileno(), select.EPOLLIN)])
        ep.unregister(listener.fileno())
        ep.register(client.fileno(), select.EPOLLOUT | select.EPOLLET)
        print("writable", ep.poll(1) == [(client.fileno(), select.EPOLLOUT)], ep.poll(0))
        print("so_error", client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        conn, peer = listener.accept()
        print("peer", peer == client.getsockname(), conn.getpeername() == peer)
        print("again", errno.errorcode[client.connect_ex(listener.getsockname())])
        print("drained", ep.poll(0))
        conn.sendall(b"x")
        print("edge", ep.poll(1) == [(client.fileno(), select.EPOLLOUT)])
        for s in (conn, client, listener):
            s.close()
        """) == ["accept EAGAIN", "idle []", "connect EINPROGRESS", "ready True",
                 "writable True []", "so_error 0", "peer True True", "again EISCONN",
                 "drained []", "edge True"]


def test_af_unix_servers_by_path_and_by_abstract_name(usf):
    assert run_lines(usf, """
        import errno, os, socket, stat
        def attempt(what, fn):
            try:
                fn()
                print(what, "ok")
            except OSError as e:
                print(what, errno.errorcode[e.errno])
        for name in ("/tmp/server.sock", "\\0usetl-test"):
            server = socket.socket(socket.AF_UNIX)
            server.bind(name)
            server.listen()
            client = socket.socket(socket.AF_UNIX)
            client.connect(name)
            conn, _ = server.accept()
            client.sendall(b"over unix")
            named = (name, name.encode())  # Python gives an abstract name as bytes
            print(conn.recv(100), client.getpeername() in named, conn.getsockname() in named)
            attempt("bind again", lambda: socket.socket(socket.AF_UNIX).bind(name))
            for s in (conn, client, server):
                s.close()
            attempt("connect after close", lambda: socket.socket(socket.AF_UNIX).connect(name))
        print(stat.S_ISSOCK(os.stat("/tmp/server.sock").st_mode))
        os.unlink("/tmp/server.sock")
        unix = socket.socket(socket.AF_UNIX)
        attempt("connect unlinked", lambda: unix.connect("/tmp/server.sock"))
        open("/tmp/plain", "w").close()
        attempt("connect to a file", lambda: unix.connect("/tmp/plain"))
        attempt("send unconnected", lambda: unix.send(b"x"))
        attempt("bind outside /tmp", lambda: unix.bind("/usr/s.sock"))
        """) == 2 * ["b'over unix' True True", "bind again EADDRINUSE",
                     "connect after close ECONNREFUSED"] + [
                 "True", "connect unlinked ENOENT", "connect to a file ECONNREFUSED",
                 "send unconnected ENOTCONN", "bind outside /tmp EROFS"]


def test_an_af_unix_path_relative_to_a_cwd_whose_name_is_not_utf8(usf):
    assert run_lines(usf, """
        import os, socket
        os.mkdir(b"/tmp/d\\xff")
        os.chdir(b"/tmp/d\\xff")
        server = socket.socket(socket.AF_UNIX)
        server.bind(b"s.sock")
        server.listen()
        client = socket.socket(socket.AF_UNIX)
        client.connect(b"/tmp/d\\xff/s.sock")
        print(os.listdir(b"."), server.accept()[0].getsockname())
        os.chdir("/")
        """) == ["[b's.sock'] s.sock"]


def test_so_peercred_names_the_af_unix_peer_process_and_no_one_for_inet(usf):
    assert run_lines(usf, """
        import os, socket, struct
        def cred(s):
            pid, uid, gid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET,
                                                             socket.SO_PEERCRED, 12))
            return pid == os.getpid(), uid == os.getuid(), gid == os.getgid(), pid
        a, b = socket.socketpair()
        print(cred(a)[:3], cred(b)[:3])
        server = socket.socket(socket.AF_UNIX)
        server.bind("\\0usetl-cred")
        print("unlistened", cred(server)[3])
        server.listen()
        client = socket.socket(socket.AF_UNIX)
        client.connect("\\0usetl-cred")
        conn, _ = server.accept()
        print(cred(server)[:3], cred(client)[:3], cred(conn)[:3])
        print("unbound", struct.unpack("3i", socket.socket(socket.AF_UNIX).getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, 12)))
        tcp = socket.create_server(("127.0.0.1", 0))
        inet = socket.create_connection(tcp.getsockname())
        print("tcp", struct.unpack("3i", inet.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        12)))
        """) == ["(True, True, True) (True, True, True)", "unlistened 0",
                 "(True, True, True) (True, True, True) (True, True, True)",
                 "unbound (0, -1, -1)", "tcp (0, -1, -1)"]


def test_bind_takes_the_guests_own_ports(usf):
    assert run_lines(usf, """
        import errno, socket
        def attempt(what, fn):
            try:
                fn()
                print(what, "ok")
            except OSError as e:
                print(what, errno.errorcode[e.errno])
        a = socket.socket()
        a.bind(("127.0.0.1", 0))
        port = a.getsockname()[1]
        b = socket.socket()
        b.bind(("127.0.0.1", 0))
        print("ephemeral", 32768 <= port <= 60999, b.getsockname()[1] != port)
        a.listen()
        attempt("same port", lambda: socket.socket().bind(("127.0.0.1", port)))
        attempt("wildcard", lambda: socket.socket().bind(("0.0.0.0", port)))
        six = socket.socket(socket.AF_INET6)
        attempt("v6 wildcard", lambda: six.bind(("::", port)))
        six.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        attempt("v6 only", lambda: six.bind(("::", port)))
        attempt("another address", lambda: socket.socket().bind(("10.1.2.3", 0)))
        attempt("privileged", lambda: socket.socket().bind(("127.0.0.1", 80)))
        b.close()
        a.close()
        again = socket.socket()
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        attempt("after close", lambda: again.bind(("127.0.0.1", port)))
        print("reuseaddr", again.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR))
        again.close()
        six.close()
        """) == ["ephemeral True True", "same port EADDRINUSE", "wildcard EADDRINUSE",
                 "v6 wildcard EADDRINUSE", "v6 only ok", "another address EADDRNOTAVAIL",
                 "privileged EACCES", "after close ok", "reuseaddr 1"]


def test_dual_stack_listener_and_datagrams(usf):
    assert run_lines(usf, """
        import errno, socket
        server = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
        port = server.getsockname()[1]
        for host in ("127.0.0.1", "::1"):
            with socket.create_connection((host, port)) as c:
                conn, peer = server.accept()
                print(host, peer[0], conn.getsockname()[1] == c.getpeername()[1] == port)
                conn.close()
        six = socket.socket(socket.AF_INET6)
        six.bind(("::1", 0))
        try:
            six.connect(("::ffff:127.0.0.1", port))
        except OSError as e:
            print("from ::1 to IPv4", e.errno == errno.ENETUNREACH)
        six.close()
        server.close()
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(("127.0.0.1", 0))
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b.sendto(b"one", a.getsockname())
        b.sendto(b"two", a.getsockname())
        data, source = a.recvfrom(10)
        print(data, source[0], source[1] == b.getsockname()[1], a.recv(2))
        b.connect(a.getsockname())
        b.send(b"three")
        print(a.recv(10), b.getpeername() == a.getsockname())
        try:
            b.sendto(b"out", ("10.0.0.1", 53))
        except PermissionError:
            print("datagrams stay in the VM")
        a.close()
        b.close()
        """) == ["127.0.0.1 ::ffff:127.0.0.1 True", "::1 ::1 True", "from ::1 to IPv4 True",
                 "b'one' 127.0.0.1 True b'tw'", "b'three' True", "datagrams stay in the VM"]


def test_a_connect_with_no_guest_listener_goes_to_the_host(usf, http_server):
    http_server.add("/x", b"from the host")
    usf.kernel.allow_sockets(UrlPolicy([http_server.base + "/"]))
    try:
        lines = run_lines(usf, f"""
            import socket, urllib.request
            print(urllib.request.urlopen("{http_server.base}/x").read())
            guest = socket.create_server(("127.0.0.1", {http_server.port}))
            c = socket.create_connection(("127.0.0.1", {http_server.port}))
            conn, _ = guest.accept()
            print("the guest's own listener answers", c.getpeername()[1] == {http_server.port})
            for s in (conn, c, guest):
                s.close()
            try:
                socket.create_connection(("127.0.0.1", 1))
            except ConnectionRefusedError:
                print("refused")
            """)
    finally:
        usf.kernel.allow_sockets(None)
    assert lines == ["b'from the host'", "the guest's own listener answers True", "refused"]


def test_ancillary_data_passes_fds_and_reports_ipv6_hop_limits(usf):
    assert run_lines(usf, """
        import array, os, socket
        a, b = socket.socketpair()
        r, w = os.pipe()
        a.sendmsg([b"fds"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r, w]))])
        os.close(r)
        data, ancillary, flags, _ = b.recvmsg(10, socket.CMSG_SPACE(8))
        fds = array.array("i", ancillary[0][2])
        os.write(fds[1], b"through passed fds")
        print(data, flags, os.read(fds[0], 100))
        a.sendmsg([b"cut"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w, w]))])
        data, ancillary, flags, _ = b.recvmsg(10, socket.CMSG_LEN(4))
        print(data, len(array.array("i", ancillary[0][2])), flags == socket.MSG_CTRUNC)
        receiver = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        receiver.bind(("::1", 0))
        receiver.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        hops = [(socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, array.array("i", [7]))]
        sender.sendmsg([b"datagram"], hops, 0, receiver.getsockname())
        data, ancillary, flags, _ = receiver.recvmsg(4, 100)
        print(data, ancillary, flags == socket.MSG_TRUNC)
        try:
            sender.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, b"\\0" * 4)], 0,
                           receiver.getsockname())
        except OSError as e:
            print("SCM_RIGHTS on UDP", e.errno)
        for s in (a, b, sender, receiver):
            s.close()
        """) == ["b'fds' 0 b'through passed fds'", "b'cut' 1 True",
                 "b'data' [(41, 52, b'\\x07\\x00\\x00\\x00')] True", "SCM_RIGHTS on UDP 22"]


def test_writes_after_the_peer_closed_as_over_tcp(usf):
    assert run_lines(usf, """
        import errno, socket
        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        client.close()
        print(conn.recv(10), conn.send(b""), conn.send(b"goes out, then reset"))
        try:
            conn.send(b"again")
        except OSError as e:
            print(errno.errorcode[e.errno])
        a, b = socket.socketpair()
        b.close()
        try:
            a.send(b"unix")
        except OSError as e:
            print("unix", errno.errorcode[e.errno])
        for s in (conn, server, a):
            s.close()
        """) == ["b'' 0 20", "EPIPE", "unix EPIPE"]


def test_the_guests_own_name_and_service_names_resolve(usf):
    assert run_lines(usf, """
        import socket
        print(socket.gethostbyname(socket.gethostname()), socket.getservbyname("http", "tcp"))
        print(socket.getaddrinfo("localhost", "https", socket.AF_INET, socket.SOCK_STREAM)[0][4])
        """) == ["127.0.1.1 80", "('127.0.0.1', 443)"]


def test_a_close_with_linger_zero_resets_the_connection(usf):
    assert run_lines(usf, """
        import errno, socket, struct
        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.sendall(b"sent before the reset")
        client.close()
        try:
            conn.getpeername()
        except OSError as e:
            print("getpeername", errno.errorcode[e.errno])
        print(conn.recv(100))
        try:
            conn.recv(100)
        except OSError as e:
            print("recv", errno.errorcode[e.errno])
        conn.close()
        server.close()
        """) == ["getpeername ENOTCONN", "b'sent before the reset'", "recv ECONNRESET"]


def test_rtnetlink_dumps_the_loopback_interface_and_its_addresses(usf):
    """glibc's getifaddrs and if_nameindex ask NETLINK_ROUTE (libzmq's bind does)."""
    assert run_lines(usf, """
        import errno, socket, struct
        print(socket.if_nameindex())
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        s.bind((0, 0))
        port = s.getsockname()[0]
        other = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
        try:
            other.bind((port, 0))
        except OSError as e:
            print(errno.errorcode[e.errno])
        other.bind((0, 0))
        print(other.getsockname()[0] != port)
        def messages(data):
            at = 0
            while at < len(data):
                length, kind, _, seq, pid = struct.unpack_from("<IHHII", data, at)
                yield kind, seq, pid, data[at + 16:at + length]
                at += (length + 3) & ~3
        s.send(struct.pack("<IHHII", 20, 22, 0x301, 7, 0) + bytes([socket.AF_UNSPEC]) + bytes(3))
        found = []
        for kind, seq, pid, body in messages(s.recv(65536)):
            assert (seq, pid) == (7, port)
            if kind == 20:  # RTM_NEWADDR: the address attribute
                family, prefix, index = body[0], body[1], struct.unpack_from("<i", body, 4)[0]
                alen = struct.unpack_from("<H", body, 8)[0]
                found.append((socket.inet_ntop(family, body[12:8 + alen]), prefix, index))
            else:
                found.append(kind)  # NLMSG_DONE ends the dump
        print(found)
        s.send(struct.pack("<IHHII", 16, 26, 0x5, 8, 0))  # an RTM_GETROUTE this does not serve
        kind, seq, _, body = next(messages(s.recv(100)))
        print(kind, seq, struct.unpack_from("<i", body)[0] == -errno.EOPNOTSUPP)
        s.setblocking(False)
        try:
            s.recv(100)
        except BlockingIOError:
            print("EAGAIN")
        """) == ["[(1, 'lo')]", "EADDRINUSE", "True",
                 "[('127.0.0.1', 8, 1), ('::1', 128, 1), 3]", "2 8 True", "EAGAIN"]


def test_interface_ioctls_name_the_loopback(usf):
    """if_nametoindex and psutil.net_if_stats ask with SIOCGIF* ioctls on a socket."""
    assert run_lines(usf, """
        import array, errno, fcntl, socket, struct
        print(socket.if_nametoindex("lo"), socket.if_indextoname(1))
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        ifr = struct.pack("16s24x", b"lo")
        print(hex(struct.unpack_from("<H", fcntl.ioctl(s, 0x8913, ifr), 16)[0]),  # SIOCGIFFLAGS
              socket.inet_ntoa(fcntl.ioctl(s, 0x8915, ifr)[20:24]),  # SIOCGIFADDR
              struct.unpack_from("<i", fcntl.ioctl(s, 0x8921, ifr), 16)[0])  # SIOCGIFMTU
        for request, name in ((0x8913, b"eth0"), (0x8946, b"lo"), (0x8914, b"lo")):
            try:
                fcntl.ioctl(s, request, struct.pack("16s24x", name))
            except OSError as e:
                print(e.errno in (errno.ENODEV, errno.EOPNOTSUPP, errno.EPERM) and e.strerror)
        buf = array.array("B", bytes(80))
        conf = fcntl.ioctl(s, 0x8912, struct.pack("<i4xQ", 80, buf.buffer_info()[0]))
        print(struct.unpack_from("<i", conf)[0], bytes(buf[:3]), socket.inet_ntoa(buf[20:24]))
        print([line.split(":")[0].strip() for line in open("/proc/net/dev")][2:])  # psutil's list
        """) == ["1 lo", "0x49 127.0.0.1 65536", "No such device",  # not an interface here
                 "Operation not supported", "Operation not permitted",  # ethtool, SIOCSIFFLAGS
                 "40 b'lo\\x00' 127.0.0.1", "['lo']"]
