"""usetl.libos.signals: the rt_sigframe has Linux x86-64's layout."""

from __future__ import annotations

import struct

from usetl.libos import signals as S
from usetl.vm.layout import PID_ADDR, SAVE_RSP_ADDR, TRAMPOLINE_STACK_TOP, USER_CS, USER_DS
from usetl.vm.trampoline import SYSCALL_OUT_OFFSET, syscall_entry

REGS = {name: 0x1000 + i for i, name in enumerate(S.SIGCONTEXT_REGS)}


def test_sizes_and_offsets_are_the_kernels() -> None:
    # struct ucontext: 8 + 8 + 24 (stack_t) + 256 (sigcontext) + 8 (sigset)
    assert S.UCONTEXT.size == 304 and S.SIGCONTEXT.size == 256 and S.STACK_T.size == 24
    assert S.SIGINFO.size == 128
    assert S.SIGINFO_OFFSET == 312 and S.FRAME_SIZE == 440


def test_frame_fields_land_where_glibc_reads_them() -> None:
    place = S.FramePlace(frame=0x7000_0008, fpstate=0x7000_1000, on_altstack=False)
    info = S.SigInfo(14, S.SI_KERNEL, 0, 0)
    raw = S.pack_frame(REGS, 0x2000, info, S.AltStack(), place, restorer=0x401234)
    assert len(raw) == S.FRAME_SIZE
    assert struct.unpack_from("<Q", raw, 0)[0] == 0x401234  # pretcode
    mcontext = 8 + 40  # uc_mcontext, as ucontext_t's gregs[] start
    gregs = struct.unpack_from("<18Q", raw, mcontext)
    # glibc's REG_R8 .. REG_EFL order: r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags
    assert gregs == tuple(REGS[n] for n in S.SIGCONTEXT_REGS)
    assert struct.unpack_from("<Q", raw, mcontext + 184)[0] == place.fpstate  # fpregs
    assert struct.unpack_from("<Q", raw, 8 + 296)[0] == 0x2000  # uc_sigmask
    signo, _, code = struct.unpack_from("<iii", raw, S.SIGINFO_OFFSET)
    assert (signo, code) == (14, S.SI_KERNEL)
    saved = S.unpack_frame(raw)
    assert saved.regs == REGS and saved.mask == 0x2000 and saved.fpstate == place.fpstate


def test_frame_placement_keeps_the_red_zone_and_the_alignment() -> None:
    sp = 0x7FFF_F123
    place = S.place_frame(sp, S.AltStack(), use_altstack=True)  # disabled: stays on the stack
    assert place.fpstate % 64 == 0 and place.fpstate + S.FPSTATE_SIZE <= sp - S.RED_ZONE
    assert (place.frame + 8) % 16 == 0 and place.frame + S.FRAME_SIZE <= place.fpstate
    assert not place.on_altstack
    alt = S.AltStack(0x5000_0000, 0x10000, 0)
    on_alt = S.place_frame(sp, alt, use_altstack=True)
    assert on_alt.on_altstack and alt.sp < on_alt.frame < alt.sp + alt.size
    assert S.place_frame(sp, alt, use_altstack=False).frame == place.frame
    # Already on the alternate stack: the frame goes below the current sp there.
    inner = S.place_frame(alt.sp + 0x8000, alt, use_altstack=True)
    assert inner.on_altstack and inner.frame < alt.sp + 0x8000 - S.RED_ZONE


def test_fpstate_is_marked_as_an_xsave_frame() -> None:
    region = bytes(range(256)) * 16
    fp = S.pack_fpstate(region)
    assert len(fp) == S.FPSTATE_SIZE and fp[:464] == region[:464]
    assert S.fpstate_is_valid(fp)
    assert not S.fpstate_is_valid(region[: S.FPSTATE_SIZE])


def test_the_trampolines_port_write_is_where_delivery_expects_it() -> None:
    code = syscall_entry(SAVE_RSP_ADDR, TRAMPOLINE_STACK_TOP, USER_CS, USER_DS, PID_ADDR)
    assert code[SYSCALL_OUT_OFFSET] == 0xE6  # out imm8, al
