"""Pseudo-terminals as CLI-driving handlers use them: a child on a pty's slave sees a
terminal (isatty, its window size set with TIOCSWINSZ, stty), output read through the
master with CRLF translation, echo turned off with termios, and a line read by the child."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import tty

CHILD = ("import os, sys, shutil; print(sys.stdin.isatty(), sys.stdout.isatty(), "
         "os.get_terminal_size()); line = input('name? '); print('hello', line)")


def read_until(fd, marker):
    data = b""
    while marker not in data:
        chunk = os.read(fd, 1024)
        if not chunk:
            break
        data += chunk
    return data


def handler(event, context):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 132, 0, 0))
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=slave, stdout=slave,
                             stderr=slave, start_new_session=True, close_fds=True)
    first = read_until(master, b"name? ")
    os.write(master, event["name"].encode() + b"\n")
    rest = read_until(master, b"hello " + event["name"].encode() + b"\r\n")
    child.wait(30)
    size = struct.unpack("HHHH", fcntl.ioctl(master, termios.TIOCGWINSZ, b"\0" * 8))[:2]
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    echo_off = not termios.tcgetattr(slave)[3] & termios.ECHO
    stty = subprocess.run(["stty", "size"], stdin=slave, capture_output=True, text=True)
    tty.setraw(slave)
    raw = not termios.tcgetattr(slave)[3] & termios.ICANON
    os.close(slave)
    os.close(master)
    lines = (first + rest).decode().split("\r\n")
    return {"lines": lines, "echoed_name": event["name"] in lines[1], "size": list(size),
            "echo_off": echo_off, "stty": stty.stdout.strip(), "raw": raw,
            "code": child.returncode}
