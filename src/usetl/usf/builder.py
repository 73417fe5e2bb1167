"""Making a USF: the VM, its ETL device, filesystem and kernel, and a program loaded.

`boot_usf()` runs no guest code; `start_usf()` boots the image's CPython with its
agent and runs it until the agent waits for work. Both return a `Usf`
whose parts are all present: a USF that exists is built.
"""

from __future__ import annotations

import json
import time

from usetl import abi
from usetl.abi.archive import MODULES_DEVICE
from usetl.etl.errors import EtlError
from usetl.etl.policy import UrlPolicy
from usetl.image import default_image
from usetl.image.archive import ImageArchive
from usetl.libos.archivefs import ModuleRegion
from usetl.libos.clock import GuestClock
from usetl.libos.devices import AgentChannel, console_node, makedev, standard_devices
from usetl.libos.errors import LibosError
from usetl.libos.etl_device import ETL_DEVICE, EtlDevice
from usetl.libos.files import O_RDONLY, NullFile, OutputFile
from usetl.libos.fs import Namespace
from usetl.libos.kernel import Kernel
from usetl.libos.loader import load_program, read_program
from usetl.libos.syscalls.table import HANDLERS
from usetl.libos.vdso import VdsoClock, tsc_usable
from usetl.vm import Vm, VmError
from usetl.vm.layout import VDSO_ADDR

from .config import UsfConfig, UsfError
from .running import Startup, Usf

# One malloc arena: guest threads share one vCPU, and each further arena
# reserves 64 MiB of identity-mapped guest RAM (eight would exceed 256 MiB).
GUEST_ENV = ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "TMPDIR=/tmp",
             "MALLOC_ARENA_MAX=1"]
ETL_MINOR = 243  # /dev/etl: a misc device (major 10)
MODULES_MINOR = 244  # /dev/usetl-modules

_clock: VdsoClock | None = None


def shared_clock() -> VdsoClock | None:
    """One TSC calibration per monitor process, refined at every anchor."""
    global _clock
    if _clock is None and tsc_usable():
        _clock = VdsoClock()
    return _clock


def boot_usf(path: str, argv: list[str], image: ImageArchive | None = None,
         config: UsfConfig | None = None, files: dict[str, bytes] | None = None) -> Usf:
    """A new VM with the program at `path` loaded and no guest code run yet.

    `files` are put in the tmpfs first (keys are paths under /tmp).
    """
    cfg = config or UsfConfig()
    image = image or ImageArchive.open(default_image())
    try:
        policy = UrlPolicy(cfg.allow, cfg.allow_private)
    except EtlError as e:
        raise UsfError(f"bad allow-list entry {e.url!r}: {e.reason}") from e
    vm = Vm(cfg.mem_mib, cfg.regions())
    try:
        usf = _assemble(vm, image, cfg, policy, files or {})
        _load(usf, path, argv)
    except BaseException:
        vm.close()
        raise
    return usf


def _assemble(vm: Vm, image: ImageArchive, cfg: UsfConfig, policy: UrlPolicy,
              files: dict[str, bytes]) -> Usf:
    """The monitor's side of a USF: ETL device, devices, namespace, kernel, standard fds."""
    etl = EtlDevice(vm.regions["host"], vm.regions["guest"], policy, cfg.etl_timeout)
    channel = AgentChannel()
    devices = standard_devices(channel)
    devices[ETL_DEVICE] = etl.node(15, makedev(10, ETL_MINOR))
    modules = ModuleRegion(vm.regions["modules"])
    devices[MODULES_DEVICE.removeprefix("/dev/")] = modules.node(16, makedev(10, MODULES_MINOR))
    ns = Namespace(image, cfg.tmpfs_mib << 20, devices, image.meta["executable"])
    k = Kernel(vm, ns, HANDLERS, cfg.output_limit)
    # One policy for both paths: etl.get/post and the guest's own sockets.
    k.allow_sockets(policy if cfg.allow else None)
    if cfg.ca_certs:
        try:
            k.add_trust_roots(cfg.ca_certs, image.meta.get("ca_file"))
        except LibosError as e:
            raise UsfError(str(e)) from e
    if cfg.trace:
        k.start_trace()
    else:
        k.answer_getpid()
    k.fds.install_at(0, NullFile(ns.dev.entries["null"], O_RDONLY, "/dev/null"))
    for fd, name in ((1, "stdout"), (2, "stderr")):
        k.console[fd] = OutputFile(console_node(19 + fd), name, cfg.output_limit)
        k.fds.install_at(fd, k.console[fd])
    for name, data in files.items():
        ns.tmp.add_file(name, data)
    return Usf(cfg, image, vm, k, etl, modules, channel)


def _load(usf: Usf, path: str, argv: list[str]) -> None:
    k = usf.kernel
    clock = shared_clock() if usf.config.vdso else None
    vdso = None
    if clock is not None:  # None: clock_gettime exits (no invariant TSC, or vdso off)
        clock.install(usf.vm.ram)
        k.clock = GuestClock(k, clock)
        vdso = VDSO_ADDR
    try:
        prog = load_program(k.mm, usf.vm.ram.view, read_program(k.ns, path), argv, GUEST_ENV,
                            (k.identity.uid, k.identity.gid), vdso)
    except LibosError as e:
        raise UsfError(f"cannot load {path}: {e}") from e
    usf.vm.enter_user(prog.entry, prog.stack_pointer)


# No user site, no site, and not the agent's directory first on sys.path (its modules would
# shadow the function's): -I without its -E, since multiprocessing and joblib start child
# interpreters with the parent's flags, and those must read the PYTHONPATH the entry module
# sets. The environment the interpreter starts with is the monitor's anyway.
AGENT_FLAGS = ("-s", "-S", "-P")


def start_usf(image: ImageArchive | None = None, config: UsfConfig | None = None) -> Usf:
    """Load the image's CPython and run it until its agent waits for work."""
    t0 = time.perf_counter()
    image = image or ImageArchive.open(default_image())
    exe = image.meta["executable"]
    usf = boot_usf(exe, [exe, *AGENT_FLAGS, image.meta["agent"]], image, config)
    try:
        _run_to_agent(usf)
    except BaseException:
        usf.close()
        raise
    k = usf.kernel
    usf.startup = Startup((time.perf_counter() - t0) * 1e3, k.stats.count, k.stats.seconds * 1e3)
    return usf


def _run_to_agent(usf: Usf) -> None:
    try:
        stop = usf.vm.run(usf.kernel, timeout=usf.config.start_timeout)
    except VmError as e:
        raise UsfError(f"the guest crashed while starting Python: {e}{usf.stderr_tail()}") from e
    if stop.reason != "pause":
        raise UsfError(f"the guest's Python exited with status {stop.status} while starting"
                       f"{usf.stderr_tail()}")
    check_ready(usf.channel)
    usf.alive = True
    usf.take_output()


def check_ready(channel: AgentChannel) -> None:
    """The agent's first message must be ready, in this monitor's protocol version."""
    try:
        raw = channel.take_reply()
        ready = abi.decode(raw) if raw is not None else None
    except abi.ProtocolError as e:
        raise UsfError(f"the guest agent broke the protocol: {e}") from e
    if ready is None or ready.get("kind") != abi.READY:
        raise UsfError(f"the guest agent waited without announcing itself: {ready!r:.200}")
    if ready.get("protocol") != abi.PROTOCOL_VERSION:
        raise UsfError(
            f"the image's agent speaks protocol {json.dumps(ready.get('protocol'))[:20]}, "
            f"this monitor {abi.PROTOCOL_VERSION}: rebuild the image (usetl image build)"
        )
