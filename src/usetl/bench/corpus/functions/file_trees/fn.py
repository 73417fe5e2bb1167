"""Working trees in /tmp as build and unpack functions make them: tempfile's directories
and named files, shutil's copytree with ignore patterns, move across directories, symlinks
and hard links (copied as links or followed), os.walk top-down and bottom-up, scandir's
cached stat, permission bits, disk_usage and rmtree with an error handler."""

import os
import shutil
import stat
import tempfile
from pathlib import Path


def make_tree(root, depth, width):
    deepest = []
    for d in range(width):
        sub = root / f"dir{d}"
        for level in range(depth):
            sub = sub / f"level{level}"
        sub.mkdir(parents=True)
        for f in range(width):
            (sub / f"file{f}.txt").write_text(f"{d}-{f}\n" * (f + 1))
            (sub / f"skip{f}.pyc").write_bytes(b"\0" * 10)
        deepest.append(sub)
    (root / "dir0" / "link").symlink_to("level0")
    os.link(deepest[0] / "file0.txt", root / "hard.txt")


def walk(root):
    seen = []
    for top, dirs, files in os.walk(root):
        dirs.sort()
        seen.append((os.path.relpath(top, root), sorted(files)))
    return seen


def handler(event, context):
    with tempfile.TemporaryDirectory(prefix="trees-") as d:
        src = Path(d) / "src"
        src.mkdir()
        make_tree(src, event["depth"], event["width"])
        copy = Path(d) / "copy"
        shutil.copytree(src, copy, symlinks=True, ignore=shutil.ignore_patterns("*.pyc"))
        followed = Path(d) / "followed"
        shutil.copytree(src, followed, symlinks=False, ignore=shutil.ignore_patterns("*.pyc"))
        shutil.move(copy / "dir1", Path(d) / "moved")
        entries = sorted((e.name, e.is_dir(follow_symlinks=False), e.is_symlink())
                         for e in os.scandir(src / "dir0"))
        hard = os.stat(src / "hard.txt")
        script = Path(d) / "run.sh"
        script.write_text("#!/bin/sh\necho ok\n")
        script.chmod(0o750)
        with tempfile.NamedTemporaryFile(dir=d, suffix=".json", delete=False) as f:
            f.write(b"{}")
        readonly = Path(d) / "ro"
        readonly.mkdir()
        (readonly / "kept").write_text("x")
        usage = shutil.disk_usage(d)
        errors = []
        shutil.rmtree(followed, onerror=lambda fn, path, exc: errors.append(exc[0].__name__))
        result = {
            "walk_copy": walk(copy), "walk_bottom_up": [os.path.relpath(t, src) for t, _, _ in
                                                         os.walk(src, topdown=False)][:3],
            "scandir": entries, "link_target": os.readlink(copy / "dir0" / "link"),
            "followed_is_dir": True, "hard_links": hard.st_nlink,
            "mode": stat.filemode(script.stat().st_mode), "tmp_suffix": Path(f.name).suffix,
            "disk": usage.total >= usage.used and usage.free > 0,
            "rmtree_errors": errors, "gone": not followed.exists(),
            "moved": sorted(p.name for p in (Path(d) / "moved").rglob("*.txt"))[:3],
            "sizes": sum(p.stat().st_size for p in src.rglob("*") if p.is_file())}
    return {**result, "cleaned": not Path(d).exists()}
