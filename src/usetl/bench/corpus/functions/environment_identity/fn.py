"""What libraries ask about the machine: user and home, host name, platform, CPUs and
affinity, resource limits and usage, locale, terminal size, library and program lookup."""

import ctypes.util
import getpass
import locale
import os
import platform
import pwd
import resource
import shutil
import socket
import sys


def handler(event, context):
    user = getpass.getuser()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    locale.setlocale(locale.LC_ALL, "")
    return {
        "user_matches_pwd": pwd.getpwuid(os.getuid()).pw_name == user,
        "home": os.path.expanduser("~") != "~",
        "hostname": bool(socket.gethostname()),
        "fqdn": bool(socket.getfqdn()),
        "uname": platform.uname().system, "machine": platform.machine(),
        "platform": platform.platform().startswith("Linux"),
        "libc": platform.libc_ver()[0],
        "cpus": os.cpu_count() >= 1 and len(os.sched_getaffinity(0)) >= 1,
        "nofile": 0 < soft <= hard, "maxrss": usage.ru_maxrss > 0,
        # "utf-8" in Python's UTF-8 mode, "UTF-8" from the locale otherwise
        "encoding": locale.getpreferredencoding(False).lower(), "fs": sys.getfilesystemencoding(),
        "terminal": shutil.get_terminal_size((80, 24)).columns > 0,
        "libc_found": bool(ctypes.util.find_library("c")),
        "libm_loads": ctypes.CDLL(ctypes.util.find_library("m")).cos is not None,
        "which_sh": shutil.which("sh") is not None,
        "page": resource.getpagesize(), "loadavg": len(os.getloadavg()),
    }
