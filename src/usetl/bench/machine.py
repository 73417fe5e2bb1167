"""The machine the evaluation ran on, read from the machine itself."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key and key not in info:
            info[key] = value.strip()
    return info


def _meminfo_mib(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise KeyError(field)


def kvm_backend() -> str:
    """Which KVM backend serves /dev/kvm: PVM, or hardware VMX / SVM."""
    modules = Path("/sys/module")
    loaded = sorted(p.name for p in modules.iterdir() if p.name.startswith("kvm"))
    if not os.path.exists("/dev/kvm"):
        return "none (/dev/kvm is missing)"
    flags = set(_cpuinfo().get("flags", "").split())
    if "kvm_pvm" in loaded:
        cpu = "no VMX/SVM in the CPU flags" if not flags & {"vmx", "svm"} else "VMX/SVM present"
        return f"PVM (module kvm_pvm loaded; {cpu})"
    if "kvm_intel" in loaded:
        return "hardware, Intel VMX (module kvm_intel)"
    if "kvm_amd" in loaded:
        return "hardware, AMD SVM (module kvm_amd)"
    return f"unknown (modules: {', '.join(loaded) or 'none'})"


def _git_commit() -> str:
    here = Path(__file__).resolve().parent
    done = subprocess.run(
        ["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def describe() -> dict:
    cpu = _cpuinfo()
    return {
        "cpu_model": cpu.get("model name", "unknown"),
        "cores": os.cpu_count() or 0,
        "memory_mib": _meminfo_mib("MemTotal"),
        "memory_available_mib": _meminfo_mib("MemAvailable"),
        "kernel": platform.release(),
        "os": _os_name(),
        "kvm_backend": kvm_backend(),
        "python": platform.python_version(),
        "python_executable": sys._base_executable,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git_commit(),
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()
