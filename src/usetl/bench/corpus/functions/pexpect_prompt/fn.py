"""pexpect driving an interactive program as CLI-automation handlers do: a child on a
pseudo-terminal made by pty.fork, prompts answered with sendline, expect with a list of
patterns and a timeout, the terminal's echo, and the child's exit status."""

import sys

import pexpect

PROGRAM = ("import getpass\nuser = input('user: ')\npw = getpass.getpass('password: ')\n"
           "print('ok' if pw == 'secret' else 'denied', user)\n"
           "while True:\n    cmd = input('> ')\n    if cmd == 'quit': break\n"
           "    print(cmd.upper())\n")


def handler(event, context):
    child = pexpect.spawn(sys.executable, ["-c", PROGRAM], encoding="utf-8", timeout=30)
    child.expect("user: ")
    child.sendline(event["user"])
    child.expect("password: ")
    child.sendline("secret")
    verdict = child.expect(["ok", "denied"])
    child.expect("> ")
    shouted = []
    for cmd in event["commands"]:
        child.sendline(cmd)
        child.expect(r"\r\n([A-Z ]+)\r\n> ")
        shouted.append(child.match.group(1))
    try:
        child.expect("never printed", timeout=0.2)
        timed_out = False
    except pexpect.TIMEOUT:
        timed_out = True
    child.sendline("quit")
    child.expect(pexpect.EOF)
    child.close()
    echoed = pexpect.run("echo hello pty", encoding="utf-8")
    return {"verdict": ["ok", "denied"][verdict], "shouted": shouted, "timed_out": timed_out,
            "exit": child.exitstatus, "run": echoed.strip(), "signal": child.signalstatus}
