"""Environment queries that packaging and diagnostics code makes: platform's interpreter
and machine, libc_ver, uname's fields, sysconfig's paths, config vars and platform tag,
the running interpreter's build flags, os.cpu_count against sched_getaffinity,
os.confstr and sysconf, and sys.implementation."""

import os
import platform
import sys
import sysconfig


def handler(event, context):
    uname = platform.uname()
    paths = sysconfig.get_paths()
    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "compiler": bool(platform.python_compiler()), "machine": platform.machine(),
            "system": uname.system, "release_set": bool(uname.release),
            "processor_type": type(platform.processor()).__name__,
            "libc": platform.libc_ver()[0], "architecture": platform.architecture()[0],
            "platform_prefix": platform.platform().split("-")[0],
            "freedesktop": type(platform.freedesktop_os_release()).__name__
            if os.path.exists("/etc/os-release") else "no os-release",
            "sysconfig_platform": sysconfig.get_platform(), "soabi":
            sysconfig.get_config_var("SOABI"), "ext_suffix": sysconfig.get_config_var(
                "EXT_SUFFIX"),
            "path_keys": sorted(paths), "stdlib_exists": os.path.isdir(paths["stdlib"]),
            "py_gil_disabled": sysconfig.get_config_var("Py_GIL_DISABLED"),
            "cpus_consistent": len(os.sched_getaffinity(0)) <= os.cpu_count(),
            "page_size": os.sysconf("SC_PAGE_SIZE"), "open_max": os.sysconf("SC_OPEN_MAX") > 0,
            "libc_version": os.confstr("CS_GNU_LIBC_VERSION").split()[0],
            "implementation_name": sys.implementation.name, "maxsize": sys.maxsize,
            "byteorder": sys.byteorder, "float_dig": sys.float_info.dig,
            "hash_bits": sys.hash_info.width, "int_info": sys.int_info.bits_per_digit}
