"""The tiny function every cold-start and memory experiment runs, in every environment.

The same work runs everywhere: as `python3 -I -S -c WORK` on the host, in
a container and in a forked zygote child (it prints the JSON line), and as
the handler of HANDLER_SOURCE in a USF and a HyperFork clone (it returns the
JSON value through the agent). Each pays for importing json, some bytecode
and handing back one small JSON result.
"""

from __future__ import annotations

WORK = 'import json\nprint(json.dumps({"sum": sum(range(100))}))'
EXPECTED = '{"sum": 4950}'

# The same work as a handler, for the function-loading APIs (USF, HyperFork).
HANDLER_SOURCE = '''import json


def handler(event, context):
    return json.loads(json.dumps({"sum": sum(range(100))}))
'''
HANDLER_RESULT = {"sum": 4950}

# A process that does WORK once and then stays idle until its stdin closes.
IDLE_AFTER_WORK = WORK + "\nimport sys\nsys.stdout.flush()\nsys.stdin.read()"

# A pre-started container or process: says "ready" once started, then runs one
# request per line.
SERVE_LINES = """import sys
print("ready", flush=True)
for line in sys.stdin:
    exec(compile(line.encode().decode("unicode_escape"), "<request>", "exec"), {})
    sys.stdout.flush()
"""

# SOCK's zygote: json is imported once; each request is served by a forked
# child ("call": prints the result and exits; "hold": also prints its pid and
# stays alive until killed). Children are reaped by the kernel (SIGCHLD ignored).
ZYGOTE = """import json, os, signal, sys
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
WORK = sys.argv[1]
for line in sys.stdin:
    if os.fork() == 0:
        exec(compile(WORK, "<request>", "exec"), {})
        if line.strip() == "hold":
            print(os.getpid(), flush=True)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            while True:
                signal.pause()
        sys.stdout.flush()
        os._exit(0)
"""


def escape_request(code: str) -> bytes:
    """One line carrying `code` for SERVE_LINES."""
    return code.encode("unicode_escape") + b"\n"
