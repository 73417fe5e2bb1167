"""subprocess as batch handlers drive tools: run with a timeout that kills the child and
keeps what it printed, input fed to stdin, check=True raising CalledProcessError with
stderr, two Popen joined by a pipe, pass_fds, communicate(timeout) then kill, encoding
errors replaced, and a watchdog Timer killing a hung child."""

import os
import signal
import subprocess
import sys
import threading

PRINT_THEN_HANG = "import sys, time; print('partial', flush=True); time.sleep(60)"


def handler(event, context):
    out = {}
    try:
        subprocess.run([sys.executable, "-c", PRINT_THEN_HANG], capture_output=True,
                       timeout=1.0)
    except subprocess.TimeoutExpired as e:
        out["timeout_output"] = (e.output or b"").decode().strip()
    text = "\n".join(f"row {i}" for i in range(event["rows"]))
    out["sorted_tail"] = subprocess.run(["sort", "-r"], input=text, capture_output=True,
                                        text=True, check=True).stdout.splitlines()[:2]
    try:
        subprocess.run(["ls", "/no/such/dir"], capture_output=True, text=True, check=True)
    except subprocess.CalledProcessError as e:
        out["called_error"] = [e.returncode != 0, "No such file" in e.stderr]
    producer = subprocess.Popen(["seq", "1", str(event["rows"])], stdout=subprocess.PIPE)
    consumer = subprocess.Popen(["awk", "{s += $1} END {print s}"], stdin=producer.stdout,
                                stdout=subprocess.PIPE, text=True)
    producer.stdout.close()
    out["piped_sum"] = int(consumer.communicate(timeout=30)[0])
    out["producer_code"] = producer.wait(30)
    r, w = os.pipe()
    subprocess.run([sys.executable, "-c", f"import os; os.write({w}, b'via fd')"],
                   pass_fds=(w,), check=True)
    os.close(w)
    out["pass_fds"] = os.read(r, 100).decode()
    os.close(r)
    hung = subprocess.Popen(["sleep", "60"], stdout=subprocess.PIPE)
    try:
        hung.communicate(timeout=0.2)
    except subprocess.TimeoutExpired:
        hung.kill()
        hung.communicate()
    out["killed"] = hung.returncode == -signal.SIGKILL
    out["replaced"] = subprocess.run(["printf", "caf\\351"], capture_output=True, text=True,
                                     encoding="utf-8", errors="replace").stdout
    watched = subprocess.Popen(["sleep", "60"])
    watchdog = threading.Timer(0.2, watched.kill)
    watchdog.start()
    out["watchdog"] = watched.wait(30)
    watchdog.cancel()
    out["shell_code"] = subprocess.call("exit 7", shell=True)
    return out
