"""`usetl image build` and `usetl image ls`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from usetl.image import (
    ImageArchive,
    ImageError,
    ImageInfo,
    StderrProgress,
    build_image,
    cache_root,
    current_digest,
    image_path,
    list_images,
)
from usetl.image.progress import format_size

DIGEST_SHOWN = 12
DEFAULT_LARGEST_FILES = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `image` command group."""
    image = subparsers.add_parser("image", help="bake and list guest images")
    commands = image.add_subparsers(dest="image_command", required=True)

    build = commands.add_parser(
        "build", help="bake the image of the host's Python (cached by its inputs)"
    )
    _add_cache_option(build)
    build.add_argument("--force", action="store_true", help="rebuild even if the image is cached")
    build.set_defaults(func=run_build)

    ls = commands.add_parser("ls", help="list baked images")
    _add_cache_option(ls)
    ls.add_argument(
        "--files",
        type=int,
        nargs="?",
        const=DEFAULT_LARGEST_FILES,
        metavar="N",
        help=f"show the N largest files of the current image (default {DEFAULT_LARGEST_FILES})",
    )
    ls.set_defaults(func=run_ls)


def _add_cache_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="cache directory (default: $USETL_CACHE or ~/.cache/usetl)",
    )


def run_build(args: argparse.Namespace) -> int:
    progress = StderrProgress()
    baked = False

    def show(phase: str, done: int, total: int) -> None:
        nonlocal baked
        baked = True
        progress(phase, done, total)

    started = time.monotonic()
    path = build_image(args.cache, progress=show, force=args.force)
    elapsed = time.monotonic() - started
    with ImageArchive.open(path) as archive:
        print(f"image   {path}")
        print(f"digest  {archive.digest}")
        print(
            f"files   {archive.file_count} ({format_size(archive.total_size)} of file data, "
            f"{format_size(path.stat().st_size)} on disk)"
        )
        print(f"python  {archive.meta['python_version']} ({archive.meta['executable']})")
    how = f"baked in {elapsed:.1f} s" if baked else f"cached, checked in {elapsed:.2f} s"
    print(f"status  {how}")
    return 0


def run_ls(args: argparse.Namespace) -> int:
    images = list_images(args.cache)
    try:
        current = current_digest()
    except ImageError as e:
        print(f"usetl: cannot tell the current image: {e}", file=sys.stderr)
        current = None
    if not images:
        print(f"no images in {cache_root(args.cache)}; run `usetl image build`")
    else:
        _print_images_table(images, current)
    if args.files is not None:
        if current is None:
            raise ImageError("cannot list files: the current image's inputs are incomplete")
        _print_largest_files(image_path(args.cache, current), args.files)
    return 0


def _print_images_table(images: list[ImageInfo], current: str | None) -> None:
    rows = [("DIGEST", "PYTHON", "FILES", "SIZE", "CREATED", "CURRENT")]
    problems = []
    for info in images:
        mark = "*" if info.digest == current else ""
        if info.problem is not None:
            rows.append(
                (
                    info.digest[:DIGEST_SHOWN],
                    "-",
                    "-",
                    format_size(info.archive_size),
                    "damaged",
                    mark,
                )
            )
            problems.append(info.problem)
            continue
        rows.append(
            (
                info.digest[:DIGEST_SHOWN],
                info.python_version,
                str(info.file_count),
                format_size(info.archive_size),
                info.created,
                mark,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    for problem in problems:
        print(f"damaged: {problem}")
    if current is not None and all(info.digest != current for info in images):
        print(f"the current image ({current[:DIGEST_SHOWN]}) is not baked; run `usetl image build`")


def _print_largest_files(path: Path, count: int) -> None:
    with ImageArchive.open(path) as archive:
        files = sorted(
            (e for e in archive.entries() if e.kind == "file"), key=lambda e: e.size, reverse=True
        )
        print(f"\nlargest files of {archive.digest[:DIGEST_SHOWN]} ({archive.file_count} files):")
        for entry in files[:count]:
            print(f"{format_size(entry.size):>10}  {entry.path}")
