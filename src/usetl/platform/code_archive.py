"""A function's code uploaded as one archive (tar, optionally gzipped, or zip).

The archive is read member by member into a new code directory; only plain
files and directories with relative paths that stay inside it are accepted
(no links, devices or absolute or `..` paths), and the bytes written are
counted as they are written, not taken from the archive's headers, so a
compressed bomb stops at the limit. Any refusal is a `CodeArchiveError` with
the HTTP status that fits, and the caller removes the half-written directory.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from usetl.errors import UsetlError

COPY_CHUNK = 1 << 20
MAX_FILES = 100_000
# Content types of an archive body (anything else is JSON).
TAR_TYPES = ("application/x-tar", "application/gzip", "application/x-gzip",
             "application/x-gtar")
ZIP_TYPES = ("application/zip", "application/x-zip-compressed")


class CodeArchiveError(UsetlError):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code


def is_archive(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() in TAR_TYPES + ZIP_TYPES


def unpack(archive: Path, content_type: str, target: Path, limit: int) -> int:
    """Write the archive's files under `target` (made here); returns the bytes unpacked."""
    kind = content_type.split(";", 1)[0].strip().lower()
    target.mkdir(parents=True)
    writer = _Writer(target, limit)
    try:
        if kind in ZIP_TYPES:
            _unzip(archive, writer)
        else:
            _untar(archive, writer)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise CodeArchiveError(400, "invalid_archive",
                               f"the code archive cannot be read: {e}") from None
    if not writer.files:
        raise CodeArchiveError(400, "invalid_files", "the code archive holds no files")
    return writer.total


class _Writer:
    """Plain files under one directory, counted against a limit."""

    def __init__(self, root: Path, limit: int):
        self.root = root
        self.limit = limit
        self.total = 0
        self.files = 0

    def path(self, name: str) -> Path:
        pure = PurePosixPath(name.removeprefix("./"))
        if pure.is_absolute() or ".." in pure.parts or not pure.parts or "\0" in name:
            raise CodeArchiveError(400, "invalid_archive",
                                   f"the archive's member {name!r} is not a plain relative path")
        return self.root.joinpath(*pure.parts)

    def directory(self, name: str) -> None:
        self.path(name).mkdir(parents=True, exist_ok=True)

    def file(self, name: str, source: BinaryIO, executable: bool = False) -> None:
        """Write a member; an executable one (a program the function runs) keeps x bits."""
        self.files += 1
        if self.files > MAX_FILES:
            raise CodeArchiveError(413, "code_too_large",
                                   f"the code archive holds more than {MAX_FILES} files")
        target = self.path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as out:
            while chunk := source.read(COPY_CHUNK):
                self.total += len(chunk)
                if self.total > self.limit:
                    raise CodeArchiveError(413, "code_too_large",
                                           f"the code is over {self.limit} bytes unpacked")
                out.write(chunk)
        if executable:
            target.chmod(0o755)


def _untar(archive: Path, writer: _Writer) -> None:
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.isdir():
                writer.directory(member.name)
            elif member.isreg():
                source = tar.extractfile(member)
                assert source is not None
                writer.file(member.name, source, bool(member.mode & 0o111))
            else:
                raise CodeArchiveError(400, "invalid_archive",
                                       f"the archive's member {member.name!r} is not a file "
                                       "or a directory (links and devices are refused)")


def _unzip(archive: Path, writer: _Writer) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            kind = (info.external_attr >> 16) & 0o170000
            if info.is_dir():
                writer.directory(info.filename)
            elif kind in (0, 0o100000):
                with zf.open(info) as source:
                    writer.file(info.filename, source, bool((info.external_attr >> 16) & 0o111))
            else:
                raise CodeArchiveError(400, "invalid_archive",
                                       f"the archive's member {info.filename!r} is not a file "
                                       "or a directory (links and devices are refused)")
