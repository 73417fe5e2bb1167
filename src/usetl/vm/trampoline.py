"""The only code the monitor puts in the guest, as machine code.

SYSCALL entry: save the caller's rsp, switch to the trampoline stack, exit to
the monitor with a port write (it serves the syscall from the registers in
kvm_run and leaves the result in rax), then return to rcx with the flags in
r11 and the caller's stack through IRETQ (SYSRET is not emulated under PVM).
getpid is answered in the guest, with no exit, from the pid the monitor keeps in
a word beside the save slot (0: ask the monitor): asyncio's C loop calls it on
every get_running_loop, logging once a record, and an exit costs ~100 µs.

Exception vectors 0-31: push the error code (0 where the CPU pushes none)
and the vector, exit with a port write (the monitor reads them and the
interrupt frame from the ring-0 stack), then drop both and IRETQ.
"""

from __future__ import annotations

import struct

PORT_SYSCALL = 0x80
PORT_EXCEPTION = 0x81

SYSCALL_OUT_OFFSET = 21  # where syscall_entry's port write starts (see syscall_entry)
SYSCALL_OUT_SIZE = 2
EXCEPTION_STUB_SIZE = 16
EXCEPTION_VECTORS = 32
VECTORS_WITH_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
SYS_GETPID = 39


def syscall_entry_size() -> int:
    return len(syscall_entry(0, 0, 0, 0, 0))


def syscall_entry(save_rsp: int, stack_top: int, user_cs: int, user_ds: int,
                  pid: int) -> bytes:
    """The entry; `pid`: the address of the word getpid answers from."""
    save, stack = struct.pack("<I", save_rsp), struct.pack("<I", stack_top)
    switch_stack = b"\x48\x89\x24\x25" + save + b"\x48\xc7\xc4" + stack  # save rsp; rsp = top
    code = b"".join(
        [
            bytes([0x48, 0x83, 0xF8, SYS_GETPID]),  # 0: cmp rax, SYS_GETPID
            b"\x74\x21",  # 4: je fast (39)
            switch_stack,  # 6: slow: mov [save_rsp], rsp; mov rsp, stack_top
            bytes([0xE6, PORT_SYSCALL]),  # 21: out PORT_SYSCALL, al
            bytes([0x6A, user_ds]),  # 23: back: push ss
            b"\xff\x34\x25" + save,  # push qword [save_rsp]
            b"\x41\x53",  # push r11 (rflags)
            bytes([0x6A, user_cs]),  # push cs
            b"\x51",  # push rcx (rip)
            b"\x48\xcf",  # iretq
            b"\x83\x3c\x25" + struct.pack("<I", pid) + b"\x00",  # 39: fast: cmp dword [pid], 0
            b"\x74\xd5",  # je slow (6)
            b"\x8b\x04\x25" + struct.pack("<I", pid),  # mov eax, [pid]
            switch_stack,
            b"\xeb\xce",  # jmp back (23)
        ]
    )
    return code


def exception_stubs() -> bytes:
    out = bytearray()
    for vector in range(EXCEPTION_VECTORS):
        stub = b"" if vector in VECTORS_WITH_ERROR_CODE else b"\x6a\x00"  # push 0
        stub += bytes([0x6A, vector])  # push vector
        stub += bytes([0xE6, PORT_EXCEPTION])  # out PORT_EXCEPTION, al
        stub += b"\x48\x83\xc4\x10"  # add rsp, 16
        stub += b"\x48\xcf"  # iretq
        out += stub.ljust(EXCEPTION_STUB_SIZE, b"\x90")
    return bytes(out)
