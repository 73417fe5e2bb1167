"""asyncio's child processes: exec and shell with pipes, communicate, lines read as they
come, and a child that overruns wait_for killed."""

import asyncio


async def main(lines):
    cat = await asyncio.create_subprocess_exec(
        "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    out, _ = await cat.communicate("".join(f"{i}\n" for i in range(lines)).encode())
    shell = await asyncio.create_subprocess_shell(
        "for i in 1 2 3; do echo line $i; done; echo err >&2", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    seen = [line.decode().strip() async for line in shell.stdout]
    err = await shell.stderr.read()
    await shell.wait()
    slow = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        await asyncio.wait_for(slow.wait(), timeout=0.3)
        overran = False
    except TimeoutError:
        overran = True
        slow.kill()
    code = await slow.wait()
    echoes = [await asyncio.create_subprocess_exec("echo", str(i), stdout=asyncio.subprocess.PIPE)
              for i in range(4)]
    together = await asyncio.gather(*(e.communicate() for e in echoes))
    return {"cat_lines": len(out.splitlines()), "cat_code": cat.returncode, "shell": seen,
            "stderr": err.decode().strip(), "overran": overran, "killed_code": code,
            "together": [o.decode().strip() for o, _ in together]}


def handler(event, context):
    return asyncio.run(main(event["lines"]))
