"""Files outside the web root: uploads, hidden test sets, generated archives.

Everything lives under ``<data dir>/storage/<area>/...`` and is only ever read through a route
that checks who may see it; nothing here is mounted as static files. Uploads stream to a
temporary file with a byte cap, are named by their SHA-256 (content-addressed: the same bytes
are kept once) and are renamed into place only when complete. Archives are unpacked member by
member after checks: no absolute paths, no ``..``, no links or devices, a member count and a
total size cap, so an archive never writes outside its folder.
"""
from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from ..exceptions import PayloadTooLargeError, UnsafeArchiveError
from ..filenames import is_safe_name

CHUNK = 1 << 20


def _part(name: str) -> str:
    """``name`` when it is one safe path component as it stands (:func:`deepsift.filenames.is_safe_name`),
    else ValueError: storage paths are built from ids and slugs, never renamed into safety."""
    if not is_safe_name(name):
        raise ValueError(f"unsafe storage name {name!r}")
    return name


def write_capped(stream: BinaryIO, dest: Path, max_bytes: int) -> tuple[int, str]:
    """Copy ``stream`` to ``dest`` (created 0600); returns (size, sha256). Over ``max_bytes``: the
    partial file is removed and PayloadTooLargeError raised."""
    digest = hashlib.sha256()
    size = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLargeError(f"upload larger than the {max_bytes / (1 << 20):g} MiB limit")
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredFile:
    """A file kept by :class:`Storage`: its path, size and SHA-256."""

    path: Path
    size: int
    sha256: str


class Storage:
    """Private files of the server under one root folder."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def folder(self, *parts: str) -> Path:
        """A folder ``root/part/part...`` (each part a safe name), created when missing."""
        p = self.root.joinpath(*(_part(x) for x in parts))
        p.mkdir(parents=True, exist_ok=True)
        return p

    def path(self, *parts: str) -> Path:
        """The path of ``root/part/.../name`` (no creation; each part a safe name)."""
        return self.root.joinpath(*(_part(x) for x in parts))

    def save_stream(self, stream: BinaryIO, area: str, max_bytes: int, suffix: str = "") -> StoredFile:
        """Copy ``stream`` into ``area``, content-addressed; PayloadTooLargeError past ``max_bytes``."""
        folder = self.folder(area)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
        os.close(fd)
        try:
            size, digest = write_capped(stream, Path(tmp), max_bytes)
            name = digest + (suffix if re.fullmatch(r"(\.[a-z0-9]{1,8}){0,2}", suffix) else "")
            final = folder / name
            os.replace(tmp, final)
            return StoredFile(final, size, digest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def save_bytes(self, data: bytes, area: str, suffix: str = "") -> StoredFile:
        """Store ``data`` in ``area`` content-addressed (no cap: the caller's own bytes)."""
        import io

        return self.save_stream(io.BytesIO(data), area, max_bytes=len(data) + 1, suffix=suffix)

    def remove_tree(self, *parts: str) -> None:
        """Delete ``root/parts...`` recursively (missing is fine)."""
        shutil.rmtree(self.path(*parts), ignore_errors=True)


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on an archive before any member is written."""

    max_files: int = 100_000
    max_total_bytes: int = 8 << 30
    max_member_bytes: int = 2 << 30


def _check_member(name: str) -> str:
    """The normalised relative posix path of an archive member, or UnsafeArchiveError."""
    if not name or "\x00" in name:
        raise UnsafeArchiveError("archive member with an empty or NUL name")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(f"archive member with an absolute path: {name!r}")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        raise UnsafeArchiveError(f"archive member escapes its folder: {name!r}")
    clean = "/".join(p for p in parts if p not in ("", "."))
    if not clean:
        raise UnsafeArchiveError(f"archive member with an empty path: {name!r}")
    return clean


def archive_members(path: str | os.PathLike, limits: ArchiveLimits = ArchiveLimits()) -> list[tuple[str, int]]:
    """Check a .zip/.tar(.gz) archive and list its regular files ``(name, size)``; refuses hostile ones."""
    p = Path(path)
    out: list[tuple[str, int]] = []
    total = 0

    def add(name: str, size: int, kind_ok: bool, kind: str) -> None:
        nonlocal total
        clean = _check_member(name)
        if not kind_ok:
            raise UnsafeArchiveError(f"archive member {name!r} is a {kind}; only regular files and folders are accepted")
        if kind == "folder":
            return
        if len(out) >= limits.max_files:
            raise UnsafeArchiveError(f"archive holds more than {limits.max_files} files")
        if size > limits.max_member_bytes:
            raise UnsafeArchiveError(f"archive member {name!r} is larger than {limits.max_member_bytes} bytes")
        total += size
        if total > limits.max_total_bytes:
            raise UnsafeArchiveError(f"archive expands to more than {limits.max_total_bytes} bytes")
        out.append((clean, size))

    if zipfile.is_zipfile(p):
        try:
            zf = zipfile.ZipFile(p)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise UnsafeArchiveError(f"not a readable .zip archive ({exc})") from None
        with zf:
            for info in zf.infolist():
                mode = info.external_attr >> 16
                is_link = stat.S_ISLNK(mode)
                is_dir = info.is_dir()
                kind = "symbolic link" if is_link else ("folder" if is_dir else "file")
                ok = not is_link and (is_dir or stat.S_IFMT(mode) in (0, stat.S_IFREG, stat.S_IFDIR))
                add(info.filename, info.file_size, ok, kind if ok or is_link else "special file")
    else:
        try:
            with tarfile.open(p, "r:*") as tf:
                for m in tf:
                    kind = ("folder" if m.isdir() else "file" if m.isreg() else
                            "symbolic link" if m.issym() else "hard link" if m.islnk() else "special file")
                    add(m.name, m.size, m.isreg() or m.isdir(), kind)
        except DAMAGED as exc:
            raise UnsafeArchiveError(f"not a readable .zip or .tar archive ({exc})") from None
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UnsafeArchiveError(f"archive holds {dup!r} twice")
    return out


def iter_archive(path: str | os.PathLike, limits: ArchiveLimits = ArchiveLimits()) -> Iterator[tuple[str, BinaryIO]]:
    """Yield ``(member name, readable stream)`` of each regular file, after :func:`archive_members` checks."""
    members = dict(archive_members(path, limits))
    p = Path(path)
    name = "(the archive)"
    try:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                for info in zf.infolist():
                    if not info.is_dir():
                        name = _check_member(info.filename)
                        with zf.open(info) as fh:
                            yield name, _Capped(fh, members[name], name)  # type: ignore[misc]
        else:
            with tarfile.open(p, "r:*") as tf:
                for m in tf:
                    if m.isreg():
                        fh = tf.extractfile(m)
                        if fh is not None:
                            name = _check_member(m.name)
                            yield name, _Capped(fh, members[name], name)  # type: ignore[misc]
    except DAMAGED as exc:
        raise UnsafeArchiveError(f"the archive is damaged at member {name!r} "
                                 f"({exc.__class__.__name__}: {exc})") from None


DAMAGED = (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, EOFError, NotImplementedError,
           RuntimeError, OSError)
"""What reading a damaged, truncated, encrypted or oddly compressed archive raises (a bad CRC included)."""


class _Capped:
    """A stream that refuses to yield more than the size its archive header declared (zip bombs lie),
    and says which member is damaged when reading it fails."""

    def __init__(self, fh: BinaryIO, size: int, name: str = "") -> None:
        self.fh, self.left, self.name = fh, size, name

    def read(self, n: int = -1) -> bytes:
        try:
            data = self.fh.read(self.left + 1 if n < 0 else min(n, self.left + 1))
        except DAMAGED as exc:
            raise UnsafeArchiveError(f"the archive is damaged at member {self.name!r} "
                                     f"({exc.__class__.__name__}: {exc})") from None
        self.left -= len(data)
        if self.left < 0:
            raise UnsafeArchiveError("archive member is larger than its header says")
        return data


def extract_archive(path: str | os.PathLike, dest: str | os.PathLike,
                    limits: ArchiveLimits = ArchiveLimits()) -> list[Path]:
    """Unpack a checked archive into ``dest`` (which must be empty or absent); returns the files written."""
    out_root = Path(dest)
    out_root.mkdir(parents=True, exist_ok=True)
    root = out_root.resolve()
    written = []
    for name, fh in iter_archive(path, limits):
        target = (root / name).resolve()
        if root not in target.parents:
            raise UnsafeArchiveError(f"archive member escapes its folder: {name!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as out:
            shutil.copyfileobj(fh, out, CHUNK)
        written.append(target)
    return written
