"""Turn what a user names (files, folders, globs, ``-`` for stdin, URLs) into image sources.

Expansion is lazy, so a folder of 100k images streams in constant memory; folders are walked
recursively in sorted order. A name that cannot be expanded (missing path, unreadable folder,
a glob into a folder that cannot be listed) becomes a :class:`SourceError` item, so one bad
input never stops a batch; expansion itself never raises ``OSError``.

Folder walks (:func:`walk_images`) visit each real directory once, by device and inode:

* a directory link back to a folder being walked (``sub/up -> ..``) is a link loop, reported
  once as an error row and not followed;
* a second way into a folder already walked (two links to one folder) is skipped;
* a directory link leading out of the named folder is not followed unless ``follow_links``
  (``--follow-links``): it is an error row saying so. Links to files are read as files.

The walk keeps its own stack, so a very deep tree cannot exhaust Python's recursion limit.
URLs are fetched by :mod:`deepsift.urlfetch` (re-exported here: :func:`fetch_url`).
"""
from __future__ import annotations

import glob
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from .choices import IMAGE_EXTENSIONS  # re-exported: the one list of image extensions
from .urlfetch import URL_TIMEOUT_S, fetch_url

__all__ = ["IMAGE_EXTENSIONS", "URL_TIMEOUT_S", "SourceError", "expand_inputs", "fetch_url", "is_url", "walk_images"]


@dataclass(frozen=True)
class SourceError:
    """A named input that could not be expanded into an image source."""

    source: str
    error: str


def is_url(text: object) -> bool:
    """True for an http(s) URL string."""
    return isinstance(text, str) and text.lower().startswith(("http://", "https://"))


def _why(exc: BaseException) -> str:
    """The reason of an OSError (or a bad path) in a few words."""
    return getattr(exc, "strerror", None) or str(exc)


def expand_inputs(names: Iterable[str], stdin: IO[str] | None = None, *,
                  follow_links: bool = False) -> Iterator[str | SourceError]:
    """Yield image paths/URLs for each name: file, folder (recursive), glob, URL or ``-``.

    ``-`` reads one name per line from ``stdin`` (default: the process's standard input, read as
    bytes so that file names that are not UTF-8 come through); blank lines and ``#`` comments
    are skipped.
    """
    for name in names:
        if name == "-":
            for line in _stdin_lines(stdin):
                line = line.strip()
                if line and not line.startswith("#"):
                    yield from expand_inputs([line], follow_links=follow_links)
            continue
        if is_url(name):
            yield name
            continue
        yield from _expand_name(name, follow_links)


def _stdin_lines(stdin: IO[str] | None) -> Iterator[str]:
    """Lines of ``stdin``; the process's own standard input is decoded like file names are."""
    if stdin is not None:
        yield from stdin
        return
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        yield from sys.stdin
        return
    for raw in buffer:
        yield os.fsdecode(raw.rstrip(b"\r\n"))


def _expand_name(name: str, follow_links: bool) -> Iterator[str | SourceError]:
    """The image sources of one named path or glob."""
    path = Path(name).expanduser()
    magic = glob.has_magic(name)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except (OSError, ValueError) as exc:
        if not magic:
            yield SourceError(name, f"cannot access ({_why(exc)})")
            return
        st = None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            yield from walk_images(path, follow_links=follow_links)
        else:
            yield str(path)
        return
    if not magic:
        # a dangling link is handed on: the decoder reports it ("no such file")
        yield str(path) if os.path.lexists(path) else SourceError(name, "no such file or directory")
        return
    try:
        matches = sorted(glob.iglob(os.path.expanduser(name), recursive=True))
    except (OSError, ValueError) as exc:
        yield SourceError(name, f"cannot expand the glob ({_why(exc)})")
        return
    if not matches:
        yield SourceError(name, _why_no_match(os.path.expanduser(name)))
    for m in matches:
        if os.path.isdir(m):
            yield from walk_images(Path(m), follow_links=follow_links)
        else:
            yield m


def _why_no_match(pattern: str) -> str:
    """Why a glob matched nothing: a folder on its fixed part that cannot be listed, or no match."""
    parts = Path(pattern).parts
    fixed = Path(*parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]) if parts else Path(".")
    folder = fixed if str(fixed) else Path(".")
    try:
        with os.scandir(folder):
            pass
    except FileNotFoundError:
        return "glob matched no files"
    except (OSError, ValueError) as exc:
        return f"cannot read directory {folder} ({_why(exc)})"
    return "glob matched no files"


def walk_images(root: str | os.PathLike, *, follow_links: bool = False) -> Iterator[str | SourceError]:
    """Walk ``root`` recursively in sorted order, yielding image files and error rows (see the module policy)."""
    root = Path(root)
    try:
        st = os.stat(root)
        inside = os.path.realpath(root)
    except (OSError, ValueError) as exc:
        yield SourceError(str(root), f"cannot read directory ({_why(exc)})")
        return
    seen = {(st.st_dev, st.st_ino)}
    # a stack of (folder key, its entries in order, next index): depth first, each folder's entries sorted
    stack: list[tuple[tuple[int, int], list[os.DirEntry], int]] = []
    entries = _listing(root)
    if isinstance(entries, SourceError):
        yield entries
        return
    stack.append(((st.st_dev, st.st_ino), entries, 0))
    while stack:
        key, entries, i = stack[-1]
        if i == len(entries):
            stack.pop()
            continue
        stack[-1] = (key, entries, i + 1)
        entry = entries[i]
        try:
            is_link = entry.is_symlink()
            is_dir = entry.is_dir()  # follows a link
        except OSError:
            is_link, is_dir = False, False
        if not is_dir:
            if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                yield entry.path
            continue
        try:
            sub = os.stat(entry.path)
        except (OSError, ValueError) as exc:
            yield SourceError(entry.path, f"cannot read directory ({_why(exc)})")
            continue
        sub_key = (sub.st_dev, sub.st_ino)
        if sub_key in {k for k, _, _ in stack}:
            target = os.path.realpath(entry.path)
            yield SourceError(entry.path, f"directory link loop: leads back to {target}, which is being walked; "
                                          f"not followed")
            continue
        if sub_key in seen:
            continue  # another way into a folder already walked
        if is_link and not follow_links:
            target = os.path.realpath(entry.path)
            if os.path.commonpath([inside, target]) != inside:
                yield SourceError(entry.path, f"directory link to {target}, outside {root}: not followed "
                                              f"(pass --follow-links to walk it)")
                continue
        seen.add(sub_key)
        listing = _listing(Path(entry.path))
        if isinstance(listing, SourceError):
            yield listing
            continue
        stack.append((sub_key, listing, 0))


def _listing(folder: Path) -> list[os.DirEntry] | SourceError:
    """The entries of ``folder`` sorted by name, or the error that stops listing it."""
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except (OSError, ValueError) as exc:
        return SourceError(str(folder), f"cannot read directory ({_why(exc)})")
