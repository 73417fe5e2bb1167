"""What service-discovery and monitoring code asks about the network: interfaces and their
addresses (getifaddrs), their flags and MTU (ioctls), by index and name."""

import socket

import psutil


def handler(event, context):
    addrs = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    loopback = [a.address for a in addrs.get("lo", []) if a.family == socket.AF_INET]
    return {"loopback": loopback, "up": stats["lo"].isup, "mtu": stats["lo"].mtu > 0,
            "index": socket.if_nametoindex("lo"), "name": socket.if_indextoname(1),
            "listed": "lo" in dict((n, i) for i, n in socket.if_nameindex()),
            "counters": "lo" in psutil.net_io_counters(pernic=True)}
