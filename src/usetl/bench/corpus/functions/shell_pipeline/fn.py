"""Log processing with the image's tools in a sandbox directory, as batch functions shell
out: tar and gzip an input tree, a sort | awk | sed pipeline over the unpacked logs, a
shell with set -o pipefail, find with -exec, and a pipeline's stderr and exit codes."""

import subprocess
import tempfile
from pathlib import Path


def write_logs(root, files, lines):
    for f in range(files):
        rows = [f"2024-05-0{1 + (i + f) % 9} host{(i * 7 + f) % 5} {('GET', 'POST')[i % 2]} "
                f"/api/{i % 6} {(200, 404, 500)[i % 3]} {i * 13 % 997}" for i in range(lines)]
        (root / f"app-{f}.log").write_text("\n".join(rows) + "\n")


def sh(script, cwd):
    return subprocess.run(["sh", "-c", script], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def handler(event, context):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "logs").mkdir()
        write_logs(root / "logs", event["files"], event["lines"])
        subprocess.run(["tar", "czf", "logs.tar.gz", "logs"], cwd=d, check=True)
        subprocess.run(["rm", "-r", "logs"], cwd=d, check=True)
        listing = subprocess.run(["tar", "tzf", "logs.tar.gz"], cwd=d, capture_output=True,
                                 text=True, check=True).stdout.split()
        subprocess.run(["tar", "xzf", "logs.tar.gz"], cwd=d, check=True)
        per_host = sh("cat logs/*.log | awk '$5 >= 500 {n[$2]++} END {for (h in n) "
                      "print h, n[h]}' | sort", d).stdout.splitlines()
        slowest = sh("sort -k6,6nr -k1,1 logs/app-0.log | head -3 | sed -E "
                     "'s/host([0-9])/node-\\1/; s/ +/,/g'", d).stdout.splitlines()
        gz = sh("gzip -9 -c logs/app-0.log | gzip -dc | md5sum | cut -d' ' -f1", d).stdout
        plain = sh("md5sum logs/app-0.log | cut -d' ' -f1", d).stdout
        counted = sh("find logs -name '*.log' -exec wc -l {} + | tail -1", d).stdout.split()[0]
        failed = sh("set -o pipefail 2>/dev/null || exit 9; false | cat; echo $?", d).stdout
        missing = sh("ls /no/such 2>&1 >/dev/null | wc -l; exit 3", d)
        uniq = sh("cut -d' ' -f3 logs/*.log | sort | uniq -c | awk '{print $2\"=\"$1}'",
                  d).stdout.split()
    return {"listing": sorted(listing), "per_host": per_host, "slowest": slowest,
            "gzip_same": gz == plain, "counted": int(counted), "pipefail": failed.strip(),
            "stderr_lines": missing.stdout.strip(), "exit": missing.returncode, "methods": uniq}
