"""Waiting on what the kernel announces, not by polling: a folder's changes (inotify).

A process's lines are waited on with :class:`serverkit.LineWaiter`, its end with :func:`serverkit.wait_gone`
(its pidfd). For output that only shows up as files, :class:`FolderWatch` wakes at each change of a folder::

    with FolderWatch(out.parent) as watch:       # before the first check: no change is missed
        start_the_writer()
        watch.wait(lambda: out.exists() and out.stat().st_size > 0, 60, "the file", pid=proc.pid)
"""
from __future__ import annotations

import ctypes
import os
import select
import time
from typing import Any, Callable

_IN_MODIFY, _IN_CLOSE_WRITE, _IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x2, 0x8, 0x40, 0x80, 0x100, 0x200
_MASK = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE


class FolderWatch:
    """Wakes at every change the kernel reports in one folder (a file created, written, moved, deleted in it)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(self.fd, os.fsencode(os.fspath(folder)), _MASK) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, f"cannot watch {folder}")

    def wait(self, done: Callable[[], Any], timeout: float, what: str, pid: int | None = None) -> Any:
        """Check ``done()`` now and at each change of the folder until it is truthy (returned). TimeoutError after
        ``timeout`` s; RuntimeError when process ``pid`` ends first (its pidfd wakes the wait too)."""
        deadline = time.monotonic() + timeout
        pidfd = os.pidfd_open(pid) if pid is not None else None
        try:
            while True:
                value = done()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
                ready, _, _ = select.select([self.fd] + ([pidfd] if pidfd is not None else []), [], [], left)
                if self.fd in ready:
                    while True:  # drain the events: only "something changed" matters
                        try:
                            if not os.read(self.fd, 65536):
                                break
                        except BlockingIOError:
                            break
                elif pidfd is not None and pidfd in ready:
                    value = done()
                    if value:
                        return value
                    raise RuntimeError(f"process {pid} ended before {what}")
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> "FolderWatch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
