"""usetl.libos.syscalls.table: every entry is well formed, and the numbers are Linux's."""

from __future__ import annotations

import inspect
import shutil
import subprocess
from pathlib import Path

import pytest

from usetl.libos.syscalls import numbers
from usetl.libos.syscalls.table import FULL, HANDLERS, PARTIAL, REFUSED, TABLE, Syscall

ENTRIES = sorted(TABLE.items())


def entry_id(item: tuple[int, Syscall]) -> str:
    return f"{item[0]}-{item[1].name}"


@pytest.mark.parametrize("item", ENTRIES, ids=[entry_id(i) for i in ENTRIES])
def test_entry_is_well_formed(item: tuple[int, Syscall]) -> None:
    nr, entry = item
    assert numbers.SYSCALL_NAMES.get(nr) == entry.name
    assert numbers.NR[entry.name] == nr
    assert entry.support in (FULL, PARTIAL, REFUSED)
    if entry.support in (PARTIAL, REFUSED):
        assert entry.note.strip(), f"{entry.name} is {entry.support} but has no note saying why"
    assert callable(entry.handler)
    assert HANDLERS[nr] is entry.handler


@pytest.mark.parametrize("item", ENTRIES, ids=[entry_id(i) for i in ENTRIES])
def test_handler_accepts_the_dispatchers_arguments(item: tuple[int, Syscall]) -> None:
    # Kernel.handle_syscall calls handler(kernel, rdi, rsi, rdx, r10, r8, r9).
    _, entry = item
    inspect.signature(entry.handler).bind(object(), 0, 0, 0, 0, 0, 0)


def test_table_lists_each_syscall_once() -> None:
    from usetl.libos.syscalls import table

    names = [e.name for e in table._ENTRIES]
    assert len(names) == len(set(names))
    assert len(TABLE) == len(names)


def test_the_basics_are_there() -> None:
    # What any CPython start-up needs (see DESIGN.md): missing ones would be ENOSYS.
    for name in ("read", "write", "openat", "close", "mmap", "munmap", "brk", "newfstatat",
                 "readlink", "getrandom", "clock_gettime", "exit_group", "arch_prctl"):
        assert numbers.NR[name] in TABLE, name
    for name in ("clone", "fork", "vfork", "execve", "wait4", "waitid", "futex", "pipe2",
                 "socketpair", "eventfd2", "epoll_create1", "epoll_ctl", "epoll_wait",
                 "epoll_pwait"):
        assert TABLE[numbers.NR[name]].support != REFUSED, name


def test_numbers_are_a_bijection() -> None:
    assert len(numbers.NR) == len(numbers.SYSCALL_NAMES)
    assert all(numbers.SYSCALL_NAMES[nr] == name for name, nr in numbers.NR.items())


def test_numbers_match_asm_unistd(tmp_path: Path) -> None:
    """Every name/number in numbers.py is the __NR_ macro of <asm/unistd_64.h>."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: cannot read <asm/unistd_64.h>")
    lines = ["#include <stdio.h>", "#include <asm/unistd_64.h>", "int main(void) {"]
    for name in numbers.NR:
        lines += [
            f"#ifdef __NR_{name}",
            f'  printf("{name} %d\\n", __NR_{name});',
            "#else",
            f'  printf("{name} missing\\n");',
            "#endif",
        ]
    lines += ["  return 0;", "}"]
    src = tmp_path / "nr.c"
    src.write_text("\n".join(lines) + "\n")
    r = subprocess.run([gcc, "-o", str(tmp_path / "nr"), str(src)], capture_output=True,
                       text=True)
    if r.returncode and "unistd_64.h" in r.stderr:
        pytest.skip("<asm/unistd_64.h> is not installed (linux-libc-dev)")
    assert r.returncode == 0, r.stderr
    out = subprocess.run([str(tmp_path / "nr")], capture_output=True, text=True, check=True)
    kernel = dict(line.split() for line in out.stdout.splitlines())
    ours = {name: str(nr) for name, nr in numbers.NR.items()}
    assert ours == kernel
