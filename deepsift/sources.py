"""Turn what a user names (files, folders, globs, ``-`` for stdin, URLs) into image sources.

Expansion is lazy, so a folder of 100k images streams in constant memory; folders are walked
recursively in sorted order. A name that cannot be expanded (missing path, unreadable folder)
becomes a :class:`SourceError` item, so one bad input never stops a batch.
"""
from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

import httpx

from .exceptions import ImageFetchError, ImageTooLargeError
from .images import MAX_BYTES

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jfif", ".pgm", ".ppm", ".avif", ".heic"}
)
URL_TIMEOUT_S = 20.0
"""Default timeout (connect, read, and between bytes) for an image URL."""


@dataclass(frozen=True)
class SourceError:
    """A named input that could not be expanded into an image source."""

    source: str
    error: str


def is_url(text: object) -> bool:
    """True for an http(s) URL string."""
    return isinstance(text, str) and text.lower().startswith(("http://", "https://"))


def expand_inputs(names: Iterable[str], stdin: IO[str] | None = None) -> Iterator[str | SourceError]:
    """Yield image paths/URLs for each name: file, folder (recursive), glob, URL or ``-``."""
    for name in names:
        if name == "-":
            stream = stdin if stdin is not None else sys.stdin
            for line in stream:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield from expand_inputs([line])
            continue
        if is_url(name):
            yield name
            continue
        path = Path(name).expanduser()
        try:
            path.stat()
        except FileNotFoundError:
            pass
        except OSError as exc:
            if not glob.has_magic(name):
                yield SourceError(name, f"cannot access ({exc.strerror or exc})")
                continue
        if path.is_dir():
            yield from walk_images(path)
        elif path.exists() or os.path.lexists(path):
            yield str(path)
        elif glob.has_magic(name):
            matches = sorted(glob.iglob(os.path.expanduser(name), recursive=True))
            if not matches:
                yield SourceError(name, "glob matched no files")
            for m in matches:
                yield from walk_images(Path(m)) if os.path.isdir(m) else iter([m])
        else:
            yield SourceError(name, "no such file or directory")


def walk_images(root: Path) -> Iterator[str | SourceError]:
    """Walk ``root`` recursively in sorted order, yielding image files and unreadable folders."""
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield SourceError(str(root), f"cannot read directory ({exc.strerror or exc})")
        return
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            yield from walk_images(Path(entry.path))
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
            yield entry.path


def fetch_url(url: str, *, timeout: float = URL_TIMEOUT_S, max_bytes: int = MAX_BYTES,
              client: httpx.Client | None = None) -> bytes:
    """Download an image URL with a timeout and a byte cap; HTML or an HTTP error is refused."""
    own = client is None
    client = client or httpx.Client(follow_redirects=True, timeout=timeout, headers={"User-Agent": "deepsift"})
    try:
        with client.stream("GET", url, timeout=timeout) as resp:
            if resp.status_code >= 400:
                raise ImageFetchError(f"{url}: HTTP {resp.status_code}")
            ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype in ("text/html", "application/xhtml+xml", "text/plain", "application/json"):
                raise ImageFetchError(f"{url}: returned {ctype}, not an image")
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageTooLargeError(f"{url}: {declared} bytes exceeds the cap of {max_bytes} bytes")
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise ImageTooLargeError(f"{url}: more than the cap of {max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.TimeoutException:
        raise ImageFetchError(f"{url}: timed out after {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise ImageFetchError(f"{url}: {type(exc).__name__}: {exc}") from None
    finally:
        if own:
            client.close()
