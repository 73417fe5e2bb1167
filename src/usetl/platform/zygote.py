"""The zygote of the process backend: a process that has imported one function.

Run as ``python -s -S -P -B zygote.py FD LIB`` (an empty environment) by
`process_backend.py`, with FD one end of a Unix socket pair and LIB the guest
runtime's directory (the `usetl` package a USF's image has: usetl.agent,
usetl.etl, usetl.abi). Only the standard library and that runtime are
imported here (the function sees the same sys.path a USF gives it: the
stdlib, its code and its module-store directories).

The first process (Z) enters new mount, PID, IPC, UTS and network
namespaces (the network one is empty: usetl.etl asks the host) and forks Z', PID 1 of
the new PID namespace. Z' mounts its own /proc, binds the function's code
and modules read-only under /run/usetl, puts a tmpfs on /tmp, remounts
everything else read-only, becomes the uid/gid the host gave it (one per zygote)
with no capabilities, imports the function, and then forks one child per instance on request,
passing the host the child's end of a new socket pair. Each child first
mounts a /tmp of its own (private_tmp). A child runs the guest runtime's
agent loop on that socket (usetl.sandbox), as a USF runs it on /dev/usetl.
Messages are usetl.abi's.
"""

import ctypes
import importlib.util
import os
import resource
import signal
import socket
import sys
import traceback

HIDDEN = ["/root", "/home"]

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
CLONE_NEWUSER = 0x10000000
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


def load_contract(lib_dir):
    """usetl.abi from the runtime's directory, for the zygote's own messages.

    Loaded by file under another name: the function's sys.path (where the
    runtime is imported as `usetl`) exists only once the zygote is isolated.
    """
    path = os.path.join(lib_dir, "usetl", "abi", "__init__.py")
    spec = importlib.util.spec_from_file_location("usetl_contract", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def failure(exc):
    """Why the zygote could not serve, in the contract's error form."""
    text = "".join(traceback.format_exception(exc))
    return abi.error(type(exc).__name__, str(exc), abi.PLATFORM, text)


def _check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags, data=None):
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _mount_points():
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            points.append(fields[4].replace("\\040", " "))
    return points


# The writable places of a function's file system, each a tmpfs: /tmp, and /dev/shm for POSIX
# shared memory and named semaphores (multiprocessing's locks, queues and pools).
WRITABLE = ("/tmp", "/dev/shm")


def isolate_filesystem(spec):
    """In Z': private mounts, own /proc, code and modules under /run/usetl, tmpfs /tmp, rest RO."""
    prefix = os.path.realpath(sys.base_prefix)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs("/run", exist_ok=True)
    _mount("usetl", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    sources = [spec["code_dir"]] + spec["module_dirs"] + [spec["lib_dir"], prefix]
    targets = (["/run/usetl/code"] + [f"/run/usetl/modules/{i}" for i in range(len(sources) - 3)]
               + ["/run/usetl/lib", "/run/usetl/python"])
    for source, target in zip(sources, targets, strict=True):
        os.makedirs(target)
        _mount(source, target, None, MS_BIND | MS_REC)
    # Hide the homes (the server's state, other functions' code) but keep the interpreter.
    hidden = []
    for d in sorted(HIDDEN + spec["hide"], key=len):
        if os.path.isdir(d) and not any(d == h or d.startswith(h + "/") for h in hidden):
            hidden.append(d)  # one covering a parent directory hides it already
    for directory in hidden:
        _mount("hidden", directory, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
    if any(prefix.startswith(d + "/") for d in hidden):
        os.makedirs(prefix, exist_ok=True)
        _mount("/run/usetl/python", prefix, None, MS_BIND | MS_REC)
    tmp_size = spec.get("tmp_mib", 64)
    for target in WRITABLE:
        os.makedirs(target, exist_ok=True)
        _mount("tmp", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_size}m,mode=1777")
    for point in _mount_points():
        if point in (*WRITABLE, "/proc") or point.startswith("/proc/"):
            continue
        try:
            _mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID)
        except OSError:
            # Mounts that refuse a read-only remount (e.g. some of /sys) are left alone.
            pass
    return targets[0], targets[1:-2], targets[-2]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def private_tmp(tmp_mib):
    """An instance's own /tmp and /dev/shm: a user namespace (same uid) owning a mount
    namespace with a fresh tmpfs on each, then no capabilities, so the mounts cannot be
    undone."""
    uid, gid = os.getuid(), os.getgid()  # before the new namespace, where they are unmapped
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for target in WRITABLE:
        _mount("tmp", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_mib}m,mode=1777")
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def _private_tmp_works(tmp_mib):
    """Whether this host lets an instance have its own /tmp (unprivileged user namespaces)."""
    pid = os.fork()
    if pid == 0:
        try:
            private_tmp(tmp_mib)
        except OSError:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def drop_privileges(uid):
    """Become the function's own uid and gid (the host gives each zygote one of its own)."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)  # from root to another uid: all capabilities go
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    # The uid change made the process non-dumpable, which leaves /proc/self owned by root and
    # an instance unable to write its user namespace's maps. No core files either way.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)


def serve_instance(sock):
    """One instance: the guest runtime's agent loop on its socket, until the host closes it."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    from usetl import agent, runtime, sandbox

    try:
        runtime.run_after_clone()
        refused = None
    except BaseException as e:  # noqa: B036 - every request of this instance reports it
        refused = agent.describe(e)
        refused["message"] = f"an after-clone hook failed: {refused['message']}"
    sandbox.serve(sock, refused)
    os._exit(0)


def load_function(handler, imports):
    """Import the guest runtime, the function and a learned template's imports; the load
    reply's error, or None."""
    try:
        from usetl import agent, sandbox  # noqa: F401 - imported here, before any fork

        module, function = abi.split_handler(handler)
    except BaseException as e:  # noqa: B036 - reported to the host as a failed deploy
        return failure(e)
    return agent.answer({"kind": abi.LOAD, "module": module, "handler": function,
                         "imports": imports})["error"]


def warm_up(control):
    """Serve one instance in the zygote itself, before any fork: the deployer's warm-up run,
    whose lazy imports and caches every instance forked afterwards inherits."""
    from usetl import sandbox

    parent_end, child_end = socket.socketpair()
    socket.send_fds(control, [b"\0"], [parent_end.fileno()])
    parent_end.close()
    sandbox.serve(child_end)  # until the host closes its end
    child_end.close()


def _function_process(spec, isolated):
    """Z' as the function's process: its file system (isolated: its own, and its uid), memory
    limit, environment and working directory; the code, module and runtime directories."""
    code_dir, module_dirs, lib_dir = spec["code_dir"], spec["module_dirs"], spec["lib_dir"]
    if isolated:
        code_dir, module_dirs, lib_dir = isolate_filesystem(spec)
        drop_privileges(spec["uid"])
        # The interpreter's install is mounted in (a virtual environment may not be: one in
        # /tmp or a hidden home), and a child `sys.executable` must be found. This script
        # may not be either, and multiprocessing's spawn would run it again in each child.
        sys.executable = os.path.realpath(sys._base_executable)
        del sys.modules["__main__"].__file__
    mem = spec["memory_mib"] << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    os.environ.clear()
    # One thread per instance, as in a USF (BLAS libraries would start one per core).
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp",
                       "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    os.environ.update(spec["env"])
    # Child interpreters (a subprocess of sys.executable, multiprocessing's spawn, which passes
    # on this one's flags) find the code and its requirements too, as the function does.
    os.environ["PYTHONPATH"] = ":".join([code_dir] + module_dirs)
    os.chdir(code_dir)
    return code_dir, module_dirs, lib_dir


def zygote(control, spec, isolated):
    """Z': load the function, then fork an instance per request."""
    code_dir, module_dirs, lib_dir = _function_process(spec, isolated)
    sys.path[:0] = [code_dir] + module_dirs
    sys.path.append(lib_dir)
    error = load_function(spec["handler"], spec["imports"])
    if error is not None:
        abi.send(control, {"error": error})
        return
    private = isolated and _private_tmp_works(spec.get("tmp_mib", 64))
    abi.send(control, {"ready": True, "private_tmp": private,
                       "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    while True:
        try:
            request, _ = abi.recv(control)
        except EOFError:
            return
        if request["kind"] == "fork":
            parent_end, child_end = socket.socketpair()
            pid = os.fork()
            if pid == 0:
                control.close()
                parent_end.close()
                _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                if private:
                    private_tmp(spec.get("tmp_mib", 64))
                serve_instance(child_end)
            child_end.close()
            socket.send_fds(control, [b"\0"], [parent_end.fileno()])
            abi.send(control, {"pid": pid})
            parent_end.close()
        elif request["kind"] == "warmup":
            warm_up(control)
        elif request["kind"] == abi.FREEZE:
            from usetl import agent

            abi.send(control, {"error": agent.answer({"kind": abi.FREEZE})["error"]})
        elif request["kind"] == "kill":
            try:
                os.kill(request["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


def main():
    control = socket.socket(fileno=int(sys.argv[1]))
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    spec, _ = abi.recv(control)
    # No network at all: the function's I/O goes through the host (usetl.etl) and its policy.
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET
    isolated = spec["isolate"] and _libc.unshare(flags) == 0
    if not isolated:
        zygote(control, spec, isolated=False)
        return
    pid = os.fork()
    if pid == 0:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        try:
            zygote(control, spec, isolated=True)
        except BaseException as e:  # noqa: B036 - the host must hear why the zygote died
            try:
                abi.send(control, {"error": failure(e)})
            except OSError:
                pass
        os._exit(0)
    control.close()
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    abi = load_contract(sys.argv[2])
    main()
