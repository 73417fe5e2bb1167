"""usetl.kvm.structs and usetl.kvm.constants checked against the kernel's <linux/kvm.h>.

A small C program, written and compiled here with gcc, prints sizeof/offsetof
of every struct and field and the value of every KVM_* constant; each must
equal what the ctypes classes and the Python constants say.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from usetl.kvm import constants as C
from usetl.kvm import structs as S

# C struct -> (ctypes class, [(C field expression, Python field path or None if the same)])
STRUCTS: dict[str, tuple[type, list[tuple[str, str | None]]]] = {
    "kvm_regs": (S.kvm_regs, [(name, None) for name, _ in S.kvm_regs._fields_]),
    "kvm_segment": (S.kvm_segment, [(name, None) for name, _ in S.kvm_segment._fields_]),
    "kvm_dtable": (S.kvm_dtable, [("base", None), ("limit", None), ("padding", None)]),
    "kvm_sregs": (S.kvm_sregs, [(name, None) for name, _ in S.kvm_sregs._fields_]),
    "kvm_fpu": (S.kvm_fpu, [(name, None) for name, _ in S.kvm_fpu._fields_]),
    "kvm_vcpu_events": (
        S.kvm_vcpu_events,
        [
            ("exception.injected", None),
            ("exception.nr", None),
            ("exception.has_error_code", None),
            ("exception.pending", None),
            ("exception.error_code", None),
            ("interrupt.injected", None),
            ("interrupt.nr", None),
            ("interrupt.soft", None),
            ("interrupt.shadow", None),
            ("nmi.injected", None),
            ("nmi.pending", None),
            ("nmi.masked", None),
            ("nmi.pad", None),
            ("sipi_vector", None),
            ("flags", None),
            ("smi.smm", None),
            ("smi.pending", None),
            ("smi.smm_inside_nmi", None),
            ("smi.latched_init", None),
            ("exception_has_payload", None),
            ("exception_payload", None),
        ],
    ),
    "kvm_sync_regs": (S.kvm_sync_regs, [("regs", None), ("sregs", None), ("events", None)]),
    "kvm_run": (
        S.kvm_run,
        [
            ("request_interrupt_window", None),
            ("immediate_exit", None),
            ("exit_reason", None),
            ("ready_for_interrupt_injection", None),
            ("if_flag", None),
            ("flags", None),
            ("cr8", None),
            ("apic_base", None),
            # the anonymous exit union is `exit` in Python
            ("io", "exit.io"),
            ("io.direction", "exit.io.direction"),
            ("io.size", "exit.io.size"),
            ("io.port", "exit.io.port"),
            ("io.count", "exit.io.count"),
            ("io.data_offset", "exit.io.data_offset"),
            ("mmio.phys_addr", "exit.mmio.phys_addr"),
            ("mmio.data", "exit.mmio.data"),
            ("mmio.len", "exit.mmio.len"),
            ("mmio.is_write", "exit.mmio.is_write"),
            ("fail_entry.hardware_entry_failure_reason",
             "exit.fail_entry.hardware_entry_failure_reason"),
            ("fail_entry.cpu", "exit.fail_entry.cpu"),
            ("internal.suberror", "exit.internal.suberror"),
            ("internal.ndata", "exit.internal.ndata"),
            ("internal.data", "exit.internal.data"),
            ("system_event.type", "exit.system_event.type"),
            ("system_event.ndata", "exit.system_event.ndata"),
            ("system_event.data", "exit.system_event.data"),
            ("kvm_valid_regs", None),
            ("kvm_dirty_regs", None),
            ("s", None),
            ("s.regs.regs.rax", None),
            ("s.regs.regs.rip", None),
            ("s.regs.sregs.cr3", None),
            ("s.regs.events.flags", None),
        ],
    ),
    "kvm_userspace_memory_region": (
        S.kvm_userspace_memory_region,
        [(name, None) for name, _ in S.kvm_userspace_memory_region._fields_],
    ),
    "kvm_msr_entry": (S.kvm_msr_entry, [(name, None) for name, _ in S.kvm_msr_entry._fields_]),
    "kvm_msrs": (S.kvm_msrs, [("nmsrs", None), ("pad", None)]),
    "kvm_cpuid_entry2": (
        S.kvm_cpuid_entry2, [(name, None) for name, _ in S.kvm_cpuid_entry2._fields_]
    ),
    "kvm_cpuid2": (S.kvm_cpuid2, [("nent", None), ("padding", None)]),
    "kvm_xsave": (S.kvm_xsave, [("region", None)]),
    "kvm_xcr": (S.kvm_xcr, [(name, None) for name, _ in S.kvm_xcr._fields_]),
    "kvm_xcrs": (S.kvm_xcrs, [(name, None) for name, _ in S.kvm_xcrs._fields_]),
    "kvm_enable_cap": (S.kvm_enable_cap, [(name, None) for name, _ in S.kvm_enable_cap._fields_]),
}

# Sizes the kernel's documentation (and DESIGN.md) state outright.
KNOWN = {
    "sizeof kvm_regs": 144,
    "sizeof kvm_sregs": 312,
    "offsetof kvm_run.io": 32,
    "offsetof kvm_run.kvm_valid_regs": 288,
    "offsetof kvm_run.kvm_dirty_regs": 296,
    "offsetof kvm_run.s": 304,
}

# The ioctl requests (and other numbers) the monitor uses; each is a C macro.
IOCTLS = [
    "KVM_GET_API_VERSION", "KVM_CREATE_VM", "KVM_CHECK_EXTENSION", "KVM_GET_VCPU_MMAP_SIZE",
    "KVM_GET_SUPPORTED_CPUID", "KVM_CREATE_VCPU",
    "KVM_SET_USER_MEMORY_REGION", "KVM_SET_TSS_ADDR", "KVM_ENABLE_CAP", "KVM_RUN",
    "KVM_GET_REGS", "KVM_SET_REGS", "KVM_GET_SREGS", "KVM_SET_SREGS", "KVM_GET_MSRS",
    "KVM_SET_MSRS", "KVM_GET_FPU", "KVM_SET_FPU", "KVM_SET_CPUID2", "KVM_GET_VCPU_EVENTS",
    "KVM_SET_VCPU_EVENTS", "KVM_GET_XSAVE", "KVM_SET_XSAVE", "KVM_GET_XCRS", "KVM_SET_XCRS",
]
# Every other KVM_* integer in constants.py must be a C macro with the same value too.
OTHER_CONSTANTS = sorted(
    name
    for name, value in vars(C).items()
    if name.startswith("KVM_") and isinstance(value, int) and name not in IOCTLS
)


def c_type_of(cls: type, name: str) -> type:
    for fname, ftype, *_ in cls._fields_:
        if fname == name:
            return ftype
    raise KeyError(f"{cls.__name__} has no field {name}")


def py_offset(cls: type, path: str) -> int:
    """Offset of a dotted field path inside a ctypes Structure/Union."""
    offset = 0
    for part in path.split("."):
        offset += getattr(cls, part).offset
        cls = c_type_of(cls, part)
    return offset


def py_field_size(cls: type, path: str) -> int:
    for part in path.split("."):
        cls = c_type_of(cls, part)
    return ctypes.sizeof(cls)


def c_program() -> str:
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        "#include <linux/kvm.h>",
        "#define FSIZE(T, F) sizeof(((T *)0)->F)",
        "int main(void) {",
    ]
    for cname, (_, fields) in STRUCTS.items():
        lines.append(f'  printf("sizeof {cname} %zu\\n", sizeof(struct {cname}));')
        for cfield, _ in fields:
            lines.append(
                f'  printf("offsetof {cname}.{cfield} %zu\\n", '
                f"offsetof(struct {cname}, {cfield}));"
            )
            lines.append(
                f'  printf("fieldsize {cname}.{cfield} %zu\\n", '
                f"FSIZE(struct {cname}, {cfield}));"
            )
    for name in IOCTLS + OTHER_CONSTANTS + ["KVM_NR_INTERRUPTS", "KVM_MAX_XCRS", "KVMIO"]:
        lines += [
            f"#ifdef {name}",
            f'  printf("value {name} %llu\\n", (unsigned long long)({name}));',
            "#else",
            f'  printf("value {name} missing\\n");',
            "#endif",
        ]
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the C compiler says, as {"sizeof kvm_regs": "144", ...}."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: cannot check the structs against <linux/kvm.h>")
    tmp: Path = tmp_path_factory.mktemp("kvmabi")
    probe = tmp / "probe.c"
    probe.write_text("#include <linux/kvm.h>\nint main(void) { return 0; }\n")
    r = subprocess.run([gcc, "-fsyntax-only", str(probe)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"<linux/kvm.h> is not usable (install linux-libc-dev): {r.stderr[:300]}")
    src = tmp / "kvmabi.c"
    src.write_text(c_program())
    exe = tmp / "kvmabi"
    r = subprocess.run([gcc, "-O0", "-o", str(exe), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, f"the ABI program does not compile:\n{r.stderr}"
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    result = {}
    for line in out.splitlines():
        key, _, value = line.rpartition(" ")
        result[key] = value
    return result


@pytest.mark.parametrize("cname", list(STRUCTS))
def test_struct_layout_matches_kernel(kernel: dict[str, str], cname: str) -> None:
    cls, fields = STRUCTS[cname]
    expected = {f"sizeof {cname}": kernel[f"sizeof {cname}"]}
    actual = {f"sizeof {cname}": str(ctypes.sizeof(cls))}
    for cfield, pyfield in fields:
        path = pyfield or cfield
        for kind, value in (
            ("offsetof", py_offset(cls, path)),
            ("fieldsize", py_field_size(cls, path)),
        ):
            key = f"{kind} {cname}.{cfield}"
            expected[key] = kernel[key]
            actual[key] = str(value)
    assert actual == expected


def test_kvm_run_sync_regs_fit_in_the_padding(kernel: dict[str, str]) -> None:
    # The kernel's kvm_run.s is a 2048-byte union; the sync regs must fit in it.
    assert ctypes.sizeof(S.kvm_sync_regs) <= 2048
    assert str(ctypes.sizeof(S.kvm_run_s)) == kernel["fieldsize kvm_run.s"]
    assert str(ctypes.sizeof(S.kvm_run)) == kernel["sizeof kvm_run"]


@pytest.mark.parametrize("key", list(KNOWN))
def test_documented_sizes(kernel: dict[str, str], key: str) -> None:
    assert kernel[key] == str(KNOWN[key])  # the header itself
    kind, _, what = key.partition(" ")
    cname, _, path = what.partition(".")
    cls, fields = STRUCTS[cname]
    if kind == "sizeof":
        assert ctypes.sizeof(cls) == KNOWN[key]
    else:
        pyfield = dict(fields).get(path) or path
        assert py_offset(cls, pyfield) == KNOWN[key]


@pytest.mark.parametrize("name", IOCTLS)
def test_ioctl_numbers_match_kernel(kernel: dict[str, str], name: str) -> None:
    assert kernel[f"value {name}"] != "missing", f"{name} is not defined in <linux/kvm.h>"
    assert getattr(C, name) == int(kernel[f"value {name}"]), (
        f"{name}: python {getattr(C, name):#x}, kernel {int(kernel[f'value {name}']):#x}"
    )


@pytest.mark.parametrize("name", OTHER_CONSTANTS)
def test_other_constants_match_kernel(kernel: dict[str, str], name: str) -> None:
    assert kernel[f"value {name}"] != "missing", f"{name} is not defined in <linux/kvm.h>"
    assert getattr(C, name) == int(kernel[f"value {name}"])


def test_array_bounds_match_kernel(kernel: dict[str, str]) -> None:
    assert S.KVM_NR_INTERRUPTS == int(kernel["value KVM_NR_INTERRUPTS"])
    assert S.KVM_MAX_XCRS == int(kernel["value KVM_MAX_XCRS"])
    assert C.KVMIO == int(kernel["value KVMIO"])


def test_variable_length_buffers() -> None:
    # msrs_buffer/cpuid_buffer: the header followed by `count` entries, no padding.
    for count in (0, 1, 7):
        msrs = S.msrs_buffer(count)
        assert ctypes.sizeof(msrs) == ctypes.sizeof(S.kvm_msrs) + count * 16
        assert msrs.entries.offset == ctypes.sizeof(S.kvm_msrs)
        cpuid = S.cpuid_buffer(count)
        assert ctypes.sizeof(cpuid) == ctypes.sizeof(S.kvm_cpuid2) + count * 40
        assert cpuid.entries.offset == ctypes.sizeof(S.kvm_cpuid2)
