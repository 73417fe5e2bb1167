"""The guest half of the syscall fuzzer: runs inside a USF, stdlib only.

usetl.bench.fuzz sends this file's source as an exec request, followed by
`main(params)`. It issues `params["count"]` raw syscalls through libc's
syscall(), seeded by `params["seed"]`, over numbers 0-450 with hostile
arguments: 0, -1, huge and non-canonical values, pointers into memory the
fuzzer owns (filled with nested structures whose pointers point back into
it), to the supervisor-only low region, past guest RAM, valid fds and
invalid ones. The monitor must answer every one with a result or an errno.

What the fuzzer keeps away from, because it would end or wedge the guest
on purpose rather than test the monitor: exit, exit_group, rt_sigreturn,
pause and rt_sigsuspend; fork, vfork and clone without CLONE_VM (each child
would go on fuzzing, in a VM of its own or in its parent's place; clone's
flags always ask for CLONE_VM, so it is refused or a thread); execve and
execveat (a program found would replace the fuzzer;
tests/integration/test_children.py gives execve hostile arguments in vfork
children instead); fatal signals to itself and timers that would
raise them; the agent's own channel fd (its reads block by design, a close
ends the agent); memory syscalls on any memory but a scratch mapping it
owns (and brk below the current break); ARCH_SET_FS to a usable address
(the guest's TLS); threads with a garbage stack; waits with no timeout (a
timeout argument always points to a short or invalid time, and new fds are
made non-blocking).
"""

import ctypes
import json
import os
import random
import socket
import stat
import struct
import sys

_libc = ctypes.CDLL(None, use_errno=True)
_raw = _libc.syscall
_raw.restype = ctypes.c_long
_raw.argtypes = [ctypes.c_long] * 7

PAGE = 4096
USER_START = 0x400000
# The memory the fuzzer points at. Pointers land in its first SPAN; the rest is room
# for what a syscall writes there when given a length of tens of MiB (a file's size,
# getrandom), so that such a write still lands in memory the fuzzer owns.
AREA = 96 << 20
SPAN = 2 << 20
MM_SIZE = 1 << 20  # the scratch mapping memory syscalls may change
BLOCK = 512
MAX_BLOCKS = 4  # fresh blocks per call: nested pointers beyond that reuse them
MAX_NR = 450
AGENT_RDEV = os.makedev(10, 242)

# Syscall numbers the fuzzer treats specially (x86-64).
# rt_sigreturn, pause, fork, vfork, execve, exit, rt_sigsuspend, exit_group, execveat:
# never issued
NEVER = {15, 34, 57, 58, 59, 60, 130, 231, 322}
MEMORY = {10, 11, 26, 27, 28, 149, 150, 216, 237, 325, 329}  # (addr, len, ...) syscalls
MMAP, BRK, MREMAP = 9, 12, 25
SIGNALLERS = {62: 1, 200: 1, 234: 2, 129: 1, 297: 2, 424: 1}  # nr -> index of the signal arg
TIMEOUT_PTR = {35: 0, 230: 2, 271: 2, 23: 4, 270: 4, 441: 3, 202: 3, 449: 3, 128: 2}
TIMEOUT_MS = {7: 2, 232: 3, 281: 3}
SIGNAL_TIMERS = {38: 1, 223: 2}  # setitimer, timer_settime: index of the new value
OPENS = {2: 1, 257: 2, 85: None}  # open, openat flags index (creat has none)
FD_MAKERS = {2, 257, 85, 437, 32, 33, 292, 41, 43, 288, 213, 291, 253, 294, 282, 289, 283,
             284, 290, 319, 323, 434, 425, 298, 300}
PAIR_MAKERS = {22: 0, 293: 0, 53: 3}  # pipe, pipe2, socketpair: index of the int[2]
CLONE, CLONE3, ARCH_PRCTL, ALARM, CLOSE_RANGE, IOCTL, FCNTL = 56, 435, 158, 37, 436, 16, 72
SOCKET = 41
ARCH_SET_FS, ARCH_GET_FS = 0x1002, 0x1003
CLONE_VM, CLONE_VFORK, CLONE_THREAD = 0x100, 0x4000, 0x10000
O_NONBLOCK = 0o4000
F_GETFL, F_SETFL = 3, 4
ETL_REQUEST, FIONBIO = 0xC0085545, 0x5421
IOCTLS = [ETL_REQUEST, FIONBIO, 0x5451, 0x5450, 0x5401, 0x5413, 0x541B, 0x80086601]
SAFE_SIGNALS = [0, 65, 100, 1000, -1, -9, 1 << 31]  # none a signal that could be delivered

PATHS = [
    "/tmp/fz/f1", "/tmp/fz/d", "/tmp/fz", "/tmp", "/", ".", "..", "", "/tmp/fz/new",
    "/tmp/fz/d/x", "/tmp/../../..", "/dev/null", "/dev/zero", "/dev/urandom", "/dev/etl",
    "/dev", "/proc/self/exe", "/proc/self/fd/0", "/proc/self/fd/1", "/proc/self",
    "/proc/self/maps", "/etc/hosts", "/etc/passwd", os.__file__, os.path.dirname(os.__file__),
    sys.executable, "/fzhost", "/fzhost/file", "/fzhost/dir", "/fzhost/fifo", "/fzhost/sock",
    "/fzhost/link", "/fzhost/dir/inner", "/nonexistent/x", "/tmp/fz/f1/notadir",
    "/tmp/fz/\udcff\udcfe", "/tmp/fz/" + "a" * 300, "/" + "d/" * 3000, "//tmp//fz//f1",
]
INTS = [0, 1, 2, 4, 7, 8, 16, 64, 100, 255, 256, 4095, 4096, 4097, 65535, 65536,
        (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 63) - 1, 1 << 63,
        (1 << 64) - 1, (1 << 64) - 2, (1 << 64) - 4095, (1 << 64) - 4096, (1 << 64) - 100]
LENGTHS = [0, 1, 2, 7, 8, 15, 16, 24, 64, 128, 144, 256, 512, 4095, 4096, 4097, 65536]
HUGE_LENGTHS = [1 << 30, 0x7FFFF000, 1 << 31, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
TIMES = [(0, 0), (0, 1), (0, 999), (-1, 0), (0, -1), (0, 10**9), (-(1 << 63), 0)]
SELECT, TIMEVALS = 23, [(0, 0), (0, 1), (-1, 0), (0, -1)]  # select takes microseconds


class Fuzzer:
    def __init__(self, params):
        self.rng = random.Random(params["seed"])
        self.numbers = params["numbers"]
        self.ram_end = params["mem_mib"] << 20
        self.state = _state()
        self.area, self.mm = self.state["area"], self.state["mm"]
        self.agent = self.state["agent"]
        self.fresh = []  # blocks written for the current call: nested pointers go there
        self.bad = [0, 1, 8, 0x1000, 0x9000, 0x200000, 0x200800, 0x210000, USER_START - 8,
                    self.ram_end, self.ram_end + PAGE, 2 << 30, (1 << 47) - 8, 1 << 47,
                    0xFFFF800000000000, 0xDEADBEEFDEADBEEF, (1 << 64) - 1, (1 << 64) - 4096]

    # -- values -------------------------------------------------------------

    def integer(self):
        r = self.rng.random()
        if r < 0.5:
            v = self.rng.choice(INTS)
        elif r < 0.65:
            v = self.rng.getrandbits(self.rng.choice((8, 16, 32, 64)))
        elif r < 0.8:
            v = sum(1 << self.rng.randrange(32) for _ in range(self.rng.randrange(1, 4)))
        else:
            v = self.rng.randrange(-4096, 4096) & ((1 << 64) - 1)
        # A value that is an address of the guest's live memory would have syscalls
        # write over it: bit 32 moves it past RAM and leaves a 32-bit flag word as it was.
        return v | 1 << 32 if USER_START <= v < self.ram_end else v

    def length(self):
        r = self.rng.random()
        if r < 0.6:
            return self.rng.choice(LENGTHS)
        if r < 0.85:
            return self.rng.randrange(65536)
        return self.rng.choice(HUGE_LENGTHS)

    def fd(self):
        r = self.rng.random()
        if r < 0.55:
            fd = self.rng.choice(self.state["fds"])
        elif r < 0.85:
            fd = self.rng.randrange(24)
        else:
            fd = self.rng.choice([-1, -100, 1023, 1024, 4096, (1 << 31) - 1, -(1 << 31),
                                  (1 << 32) + 5])
        return fd & ((1 << 64) - 1)

    def stale_pointer(self):
        off = self.rng.randrange(SPAN)
        return self.area + (off & ~7 if self.rng.random() < 0.9 else off)

    def pointer(self, depth=0):
        r = self.rng.random()
        if r < 0.6 and depth < 3 and len(self.fresh) < MAX_BLOCKS:
            return self.block(depth)
        if r < 0.75 and self.fresh:
            return self.rng.choice(self.fresh)
        if r < 0.85:
            return self.stale_pointer()
        if r < 0.9:
            return self.mm + self.rng.randrange(0, MM_SIZE, 8)
        return self.rng.choice(self.bad)

    def word(self, depth):
        r = self.rng.random()
        if r < 0.3:
            return self.pointer(depth + 1)
        if r < 0.55:
            return self.length()
        if r < 0.7:
            return self.fd()
        return self.integer()

    # -- blocks: fresh memory a pointer argument points at --------------------

    def place(self, data):
        addr = self.area + self.rng.randrange(0, SPAN, 8)
        ctypes.memmove(addr, data, len(data))
        self.fresh.append(addr)
        return addr

    def block(self, depth=0):
        kind = self.rng.random()
        if kind < 0.35:
            path = self.rng.choice(PATHS)
            if self.rng.random() < 0.1:
                path += "/" + str(self.rng.randrange(100))
            data = path.encode("utf-8", "surrogateescape") + b"\0"
            return self.place(data.ljust(BLOCK, b"\0") if len(data) < BLOCK else data)
        if kind < 0.4:
            return self.place(bytes(BLOCK))
        if kind < 0.45:
            return self.place(self.rng.randbytes(BLOCK))
        if kind < 0.5:
            sec, nsec = self.rng.choice(TIMES)
            return self.place(struct.pack("<qq", sec, nsec) * 4)
        if kind < 0.55:
            return self.place(struct.pack("<HH4s8x", 2, 9 << 8, bytes([127, 0, 0, 1])) * 8)
        n = self.rng.choice((1, 2, 3, 4, 6, 8, 16, BLOCK // 8))
        words = [self.word(depth) & ((1 << 64) - 1) for _ in range(n)]
        return self.place(struct.pack(f"<{n}Q", *words))

    def timeout_block(self, times=TIMES):
        return self.place(struct.pack("<qq", *self.rng.choice(times)))

    def etl_request(self):
        r = self.rng.random()
        if r < 0.1:
            payload = b"[" * 100_000 + b"]" * 100_000
        elif r < 0.2:
            payload = self.rng.randbytes(self.rng.randrange(64))
        else:
            op = self.rng.choice(["info", "get", "post", "alloc", "stat", "ls", "reply", "x", 1])
            fields = {"op": op}
            for key in self.rng.sample(["url", "name", "size", "source", "content_type",
                                        "region", "offset"], self.rng.randrange(4)):
                fields[key] = self.rng.choice([
                    "http://127.0.0.1:9/a", "http://10.0.0.1/", "file:///etc/passwd", "",
                    "x" * 300, "\udcff", -1, 1 << 70, 2**63, 1.5, None, True, [], {},
                    {"tmp": "/tmp/fz/f1"}, {"region": "host", "offset": 1 << 62, "size": 8},
                    {"region": "guest", "offset": -1, "size": 1 << 40}, "host", "guest"])
            payload = json.dumps(fields).encode("utf-8", "surrogatepass")
        capacity = self.rng.choice([len(payload), 1 << 20, 16, 0, (1 << 32) - 1])
        length = len(payload) if self.rng.random() < 0.8 else self.rng.getrandbits(32)
        return self.place(struct.pack("<II", length, capacity) + payload)

    # -- one call ----------------------------------------------------------

    def mm_range(self):
        if self.rng.random() < 0.8:
            off = self.rng.randrange(0, MM_SIZE, PAGE if self.rng.random() < 0.9 else 1)
            return self.mm + off, self.rng.randrange(0, MM_SIZE - off + 1)
        return self.rng.choice(self.bad[9:]), self.integer()

    def arguments(self, nr):
        """Six hostile arguments for syscall nr, or None to skip it."""
        self.fresh = []
        args = [self.any_arg() for _ in range(6)]
        if nr in NEVER:
            return None
        if nr in MEMORY or nr == MREMAP:
            args[0], args[1] = self.mm_range()
            if nr == MREMAP:
                args[2] = self.rng.randrange(MM_SIZE) if self.rng.random() < 0.8 else self.length()
                args[4] = self.mm + self.rng.randrange(0, MM_SIZE, PAGE)
            elif nr == 27:  # mincore's vector
                args[2] = self.block()
        elif nr == MMAP:
            if args[3] & 0x100010:  # MAP_FIXED or MAP_FIXED_NOREPLACE: only the scratch map
                args[0], args[1] = self.mm_range()
        elif nr == BRK:
            # glibc's malloc moves the break too: restored to where it is now, never lower
            brk = self.state["brk"] = _raw(BRK, 0, 0, 0, 0, 0, 0, 0)
            args[0] = self.rng.choice([0, brk + self.rng.randrange(64) * PAGE, brk + (1 << 30),
                                       1 << 63, (1 << 64) - 1])
        elif nr in SIGNALLERS:
            args[SIGNALLERS[nr]] = self.rng.choice(SAFE_SIGNALS) & ((1 << 64) - 1)
        elif nr in TIMEOUT_PTR:
            args[TIMEOUT_PTR[nr]] = self.timeout_block(TIMEVALS if nr == SELECT else TIMES)
        elif nr in TIMEOUT_MS:
            args[TIMEOUT_MS[nr]] = self.rng.choice([0, 1])
        elif nr in SIGNAL_TIMERS:
            args[SIGNAL_TIMERS[nr]] = self.place(bytes(32)) if self.rng.random() < 0.7 \
                else self.rng.choice(self.bad)
        elif nr == ALARM:
            args[0] = self.rng.choice([0, (1 << 32) - 1, 1 << 31])
        elif nr == CLONE:
            args[0] = args[0] & ~(CLONE_THREAD | CLONE_VFORK) | CLONE_VM
        elif nr == CLONE3:
            args[0] = self.place(bytes(88)) if self.rng.random() < 0.5 else self.bad[0]
        elif nr == ARCH_PRCTL:
            args[0] = self.rng.choice([0x1001, ARCH_SET_FS, ARCH_GET_FS, 0x1004, 0x1011, 0x1012,
                                       0x2001, 0x2002, self.integer()])
            if args[0] == ARCH_SET_FS:
                args[1] = self.rng.choice([self.state["fs"], *self.bad[12:]])
        elif nr == SOCKET:
            args[0] = self.rng.choice([2, 10, 1, 16, 17, args[0]])
            args[1] = self.rng.choice([1, 2, 3, 5, 1 | 0o4000 | 0o2000000, args[1]])
            args[2] = self.rng.choice([0, 6, 17, 255, args[2]])
        elif nr == CLOSE_RANGE:
            args[0] = self.agent + 1 + self.rng.randrange(64)
        elif nr == IOCTL:
            args[1] = self.rng.choice(IOCTLS) if self.rng.random() < 0.8 else args[1]
            if args[1] == ETL_REQUEST:
                args[0] = self.state["etl"] if self.rng.random() < 0.8 else args[0]
                args[2] = self.etl_request()
            elif args[1] == FIONBIO:
                args[2] = self.place(struct.pack("<Q", 1 + self.rng.getrandbits(8)))
        elif nr == FCNTL and args[1] & 0xFFFFFFFF == F_SETFL:
            args[2] |= O_NONBLOCK
        elif nr in OPENS and OPENS[nr] is not None:
            args[OPENS[nr]] |= O_NONBLOCK
        return [self.not_agent(a) for a in args]

    def any_arg(self):
        r = self.rng.random()
        if r < 0.4:
            return self.pointer()
        if r < 0.65:
            return self.integer()
        if r < 0.85:
            return self.fd()
        return self.length()

    def not_agent(self, value):
        """No argument may name the agent's channel fd: its read blocks, a close ends it."""
        return value ^ 0x40 if value & 0xFFFFFFFF == self.agent else value

    def call(self, nr, args):
        return _raw(nr, *args, 0)

    def after(self, nr, args, result):
        """Undo what would wedge or end the guest later: blocking fds, moved memory."""
        if nr in FD_MAKERS and 0 <= result < 1024:
            _nonblock(result)
        elif nr in PAIR_MAKERS and result == 0:
            ptr = args[PAIR_MAKERS[nr]]
            if self.area <= ptr < self.area + AREA:
                for fd in struct.unpack("<ii", ctypes.string_at(ptr, 8)):
                    _nonblock(fd)
        elif nr in MEMORY or nr in (MMAP, MREMAP):
            moved = nr in (MMAP, MREMAP) and 0 < result < (1 << 47)
            if moved and not self.mm <= result < self.mm + MM_SIZE:
                _raw(11, result, args[1] if nr == MMAP else args[2], 0, 0, 0, 0, 0)
            _map_scratch(self.mm)
        elif nr == BRK:
            _raw(BRK, self.state["brk"], 0, 0, 0, 0, 0, 0)

    def run(self, count):
        issued = skipped = 0
        for i in range(count):
            if i % 256 == 0:
                ctypes.memmove(self.area, self.state["pattern"], SPAN)
            if self.rng.random() < 0.8:
                nr = self.rng.choice(self.numbers)
            else:
                nr = self.rng.randrange(MAX_NR + 1)
            args = self.arguments(nr)
            if args is None:
                skipped += 1
                continue
            self.after(nr, args, self.call(nr, args))
            issued += 1
        return issued, skipped


def _nonblock(fd):
    flags = _raw(72, fd, F_GETFL, 0, 0, 0, 0, 0)
    if flags >= 0:
        _raw(72, fd, F_SETFL, flags | O_NONBLOCK, 0, 0, 0, 0)


def _map_scratch(addr):
    # MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, read-write: the scratch map as it began
    return _raw(9, addr, MM_SIZE, 3, 0x32, -1, 0, 0)


def _find_agent_fd():
    for fd in range(64):
        try:
            info = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISCHR(info.st_mode) and info.st_rdev == AGENT_RDEV:
            return fd
    raise RuntimeError("the agent's channel fd was not found")


def _state():
    """What survives from one chunk to the next in this guest: the memory the fuzzer owns."""
    holder = sys.modules.get("_usetl_fuzz_state")
    if holder is None:
        import mmap
        import types

        area = mmap.mmap(-1, AREA)
        fs = ctypes.c_uint64()
        _raw(158, ARCH_GET_FS, ctypes.addressof(fs), 0, 0, 0, 0, 0)
        address = ctypes.addressof(ctypes.c_char.from_buffer(area))
        holder = sys.modules["_usetl_fuzz_state"] = types.ModuleType("_usetl_fuzz_state")
        holder.state = {
            "map": area,  # kept alive: pointers go into it
            "area": address,
            "mm": _raw(9, 0, MM_SIZE, 3, 0x22, -1, 0, 0),
            "agent": _find_agent_fd(),
            "fs": fs.value,
            "pattern": _pattern(address),
        }
    return holder.state


def _pattern(area):
    """The area's refill: words that are harmless whatever a syscall reads them as."""
    rng = random.Random(0)
    words = [rng.choice([0, 1, (1 << 64) - 1, area + rng.randrange(0, SPAN, 8),
                         0xDEADBEEFDEADBEEF, 1 << 63, rng.randrange(4096)])
             for _ in range(4096)]
    return struct.pack("<4096Q", *words) * (SPAN // (4096 * 8))


def _prepare(state):
    """Each chunk starts from the same files: fds above the agent's closed, then reopened."""
    for fd in range(state["agent"] + 1, 64):
        _raw(3, fd, 0, 0, 0, 0, 0, 0)
    for path in ("/tmp/fz", "/tmp/fz/d"):
        _raw(83, _cstr(path), 0o777, 0, 0, 0, 0, 0)
    opens = [("/tmp/fz/f1", 0o102), ("/tmp/fz/d", 0o200000), ("/dev/null", 2), ("/dev/zero", 0),
             ("/dev/urandom", 0), ("/dev/etl", 2), (os.__file__, 0), ("/", 0o200000),
             ("/fzhost/file", 0), ("/fzhost", 0o200000)]
    fds = {}
    for path, flags in opens:
        fds[path] = _raw(2, _cstr(path), flags | O_NONBLOCK, 0o644, 0, 0, 0, 0)
    sockets = [_raw(41, family, 1 | O_NONBLOCK, 0, 0, 0, 0, 0) for family in (2, 10)]
    sockets += _guest_sockets()
    state["fds"] = [0, 1, 2] + [fd for fd in [*fds.values(), *sockets] if fd >= 0]
    state["etl"] = fds["/dev/etl"] if fds["/dev/etl"] >= 0 else 0
    _map_scratch(state["mm"])


def _guest_sockets():
    """Sockets in the states the monitor keeps for them: listening, connected (both ends),
    a bound datagram socket and an AF_UNIX listener; their raw fds, non-blocking."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    if os.path.lexists("/tmp/fz/sock"):
        os.unlink("/tmp/fz/sock")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind("/tmp/fz/sock")
    unix.listen(8)
    made = [listener, client, accepted, udp, unix]
    for s in made:
        s.setblocking(False)
    return [s.detach() for s in made]


_strings = {}


def _cstr(text):
    buf = _strings.get(text)
    if buf is None:
        buf = _strings[text] = ctypes.create_string_buffer(text.encode())
    return ctypes.addressof(buf)


def main(params):
    fuzzer = Fuzzer(params)
    _prepare(fuzzer.state)
    issued, skipped = fuzzer.run(params["count"])
    raise ChunkDone(json.dumps({"issued": issued, "skipped": skipped}))


class ChunkDone(Exception):
    """A chunk's counts, carried in the agent's error reply: stdout may be closed or
    replaced by then, the agent's channel is the one thing the fuzzer leaves alone."""
