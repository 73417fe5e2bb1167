"""subprocess as handlers use it: coreutils run with input and captured output, a pipeline
of Popen objects joined by pipes, a shell pipeline, exit codes and a timeout."""

import subprocess


def handler(event, context):
    words = "\n".join(f"word{i % 17}" for i in range(event["lines"])) + "\n"
    sorted_out = subprocess.run(["sort", "-u"], input=words, capture_output=True, text=True,
                                check=True).stdout.split()
    counted = subprocess.check_output(["wc", "-l"], input=words.encode()).split()[0]
    seq = subprocess.Popen(["seq", "1", "5000"], stdout=subprocess.PIPE)
    grep = subprocess.Popen(["grep", "7"], stdin=seq.stdout, stdout=subprocess.PIPE)
    seq.stdout.close()
    wc = subprocess.Popen(["wc", "-l"], stdin=grep.stdout, stdout=subprocess.PIPE)
    grep.stdout.close()
    piped = int(wc.communicate(timeout=30)[0])
    codes = [seq.wait(30), grep.wait(30)]
    shell = subprocess.run("echo hello from a shell | tr a-z A-Z", shell=True,
                           capture_output=True, text=True).stdout.strip()
    failed = subprocess.run(["false"]).returncode
    missing = subprocess.run(["ls", "/no/such/dir"], capture_output=True).returncode
    try:
        subprocess.run(["sleep", "30"], timeout=0.5)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    return {"sorted": sorted_out[:3], "unique": len(sorted_out), "counted": int(counted),
            "piped": piped, "codes": codes, "shell": shell, "false": failed, "ls": missing,
            "timed_out": timed_out}
