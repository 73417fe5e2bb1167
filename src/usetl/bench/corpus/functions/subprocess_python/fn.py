"""Child programs as handlers start them: the interpreter itself (sys.executable) with its
own environment and working directory, stderr folded into stdout, shell redirections to
files in /tmp, a new session, and a child terminated and killed."""

import os
import signal
import subprocess
import sys


def handler(event, context):
    child = subprocess.run(
        [sys.executable, "-c", "import os, sys; print(os.getcwd(), os.environ['STAGE']); "
         "print('to stderr', file=sys.stderr); sys.exit(3)"],
        cwd="/tmp", env={"STAGE": event["stage"], "PATH": os.environ.get("PATH", "")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    script = "/tmp/corpus-script.sh"
    with open(script, "w") as f:
        f.write("#!/bin/sh\necho \"$1\" > /tmp/corpus-out.txt\nwc -c < /tmp/corpus-out.txt\n")
    os.chmod(script, 0o755)
    counted = subprocess.check_output([script, "some words"], text=True).strip()
    with open("/tmp/corpus-out.txt") as f:
        written = f.read().strip()
    session = subprocess.run([sys.executable, "-c", "import os; print(os.getsid(0) == "
                              "os.getpid())"], start_new_session=True, capture_output=True,
                             text=True).stdout.strip()
    sleeper = subprocess.Popen(["sleep", "60"])
    sleeper.terminate()
    terminated = sleeper.wait(30)
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; "
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print('ready', flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE, text=True)
    stubborn.stdout.readline()
    stubborn.terminate()
    try:
        stubborn.wait(0.5)
        ignored = False
    except subprocess.TimeoutExpired:
        ignored = True
    stubborn.kill()
    killed = stubborn.wait(30)
    stubborn.stdout.close()
    return {"child": child.stdout.splitlines(), "code": child.returncode, "counted": counted,
            "written": written, "session": session, "terminated": terminated,
            "ignored_term": ignored, "killed": killed == -signal.SIGKILL}
