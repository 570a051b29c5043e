"""Output places: check, before the work, that a file or folder output can be written (the one check of every
command that writes), and the modes new files get. Tested in ``tests/test_output.py`` and ``tests/test_full_disk.py``.

* :func:`output_file` and :func:`output_dir`: a missing parent is created, a read-only place, a folder
  where a file is due (or the reverse) and a device node or FIFO where a file is renamed into place are
  one :class:`~deepsift.exceptions.DataError` line each, before any work; a symbolic link is written
  through (its target is the output), never replaced.
* Files and folders follow the user's umask (:func:`umask_mode`), as ``open`` and ``mkdir`` do, even
  where a private temporary (0600 / 0700) is renamed into place.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .exceptions import DataError


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create folder ``path`` if needed and prove a file can be written in it; else one DataError line."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".deepsift-probe-"):
            pass
    except OSError as exc:
        raise DataError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    return folder


def umask_mode(folder: bool = False) -> int:
    """The mode a new file (0666) or folder (0777) gets under the process umask."""
    mask = 0o022
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            mask = next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


def through_links(path: str | os.PathLike) -> Path:
    """``path``, or the file or folder a symbolic link there points to (outputs write through links)."""
    target = Path(path)
    return Path(os.path.realpath(target)) if target.is_symlink() else target


def output_file(path: str | os.PathLike, *, special: bool = False) -> Path:
    """Check a file output before the work (the one check of every command writing a file); returns where to write.

    A link is followed; a folder is refused; a device node or FIFO is refused unless ``special``
    (a stream written in place); the parent is created and must take a new file.
    """
    target = through_links(path)
    if target.is_dir():
        raise DataError(f"cannot write {path}: is a directory")
    if is_special_file(target) and not special:
        raise DataError(f"cannot write {path}: not a regular file (a device, FIFO or socket); it is left as it is")
    return ensure_writable_file(target)


def output_dir(path: str | os.PathLike) -> Path:
    """Check a folder output before the work (the one check of every command writing a folder); returns it.

    A link to a folder is followed; an existing file, device or FIFO is refused, not replaced;
    a missing folder (and its parents) is created; it must take a new file.
    """
    target = through_links(path)
    if target.exists() and not target.is_dir():
        raise DataError(f"cannot write to {path}: it exists and is not a folder; it is left as it is")
    return ensure_writable_dir(target)


def is_special_file(path: str | os.PathLike) -> bool:
    """True when ``path`` exists and is neither a regular file nor a folder (``/dev/null``, a FIFO, a tty)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def ensure_writable_file(path: str | os.PathLike) -> Path:
    """Check that file ``path`` can be written: not a folder, in a folder that takes new files.

    Files are written to a temporary name and renamed over ``path``, so the folder is what counts.
    """
    target = Path(path)
    if target.is_dir():
        raise DataError(f"cannot write {target}: is a directory")
    if is_special_file(target):
        if not os.access(target, os.W_OK):
            raise DataError(f"cannot write {target}: permission denied")
        return target
    ensure_writable_dir(target.parent)
    return target
