"""What one demo process lets visitors cause at once: decoding threads, pixels in flight, URL fetches.

* **Its own threads.** Decoding, cropping, previews and metadata run on the demo's own small pool
  (:attr:`Bounds.pool`), never on AnyIO's shared thread pool that pages and ``/healthz`` use, and
  URL fetching is async on the event loop: a slow or dripping image URL holds no thread at all.
* **A pixel budget.** Before an image is decoded its request takes its pixel count from one
  budget shared by every request of the process (default: twice the largest image allowed), and
  gives it back once the decoded image is dropped. Over the budget a request queues briefly
  (``busy_wait_s``, first come first served), then gets a 503 with ``Retry-After``.
* **URL fetches per visitor.** At most ``url_fetches_per_visitor`` URLs of one address are being
  fetched at any moment (one request alone may fetch all of its own); a request that would pass
  it is a 429 before any fetch starts.
* **Memory goes back.** While a large image (:data:`LARGE_DECODE_PIXELS` or more) is being decoded,
  buffers of 1 MiB and more (decoded images, strips, crops) get mappings of their own that go back
  to the system when freed (:func:`tune_malloc`: glibc would otherwise raise that threshold to
  32 MiB after the first large free and keep such buffers in its per-thread heaps); once no large
  decode is in flight the threshold returns to 32 MiB, so the forward passes of ordinary requests
  reuse their heap buffers (a 1 MiB threshold all the time made every forward map and fault in its
  activations: 1.4x slower heatmaps, measured). At the end of a request after large decodes, once no
  decode is in flight, glibc's ``malloc_trim`` hands what is free in those heaps back too
  (elsewhere all of this is a no-op).
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, Iterator, TypeVar

from ..exceptions import RateLimitedError, ServiceError

T = TypeVar("T")
TRIM_AFTER_PIXELS = 8_000_000
"""Pixels of large decodes released since the last trim that make the next idle moment call ``malloc_trim``
(smaller decodes do not count: their buffers are reused by the next request, and a trim would only make the
next forward pass fault its activations in again)."""
LARGE_DECODE_PIXELS = 4_000_000
"""An input of this many pixels or more is decoded with small buffers mapped on their own (:func:`tune_malloc`)."""
SMALL_MMAP_THRESHOLD, LARGE_MMAP_THRESHOLD = 1 << 20, 32 << 20
"""glibc's mmap threshold while a large decode is in flight, and otherwise (its own dynamic maximum)."""


class BusyError(ServiceError):
    """The server is decoding as much as it allows at once; retry after ``retry_after`` seconds."""

    status_code = 503

    def __init__(self, message: str, retry_after: float = 2.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Waiter:
    __slots__ = ("cost", "loop", "future", "granted")

    def __init__(self, cost: int, loop: asyncio.AbstractEventLoop) -> None:
        self.cost, self.loop, self.future, self.granted = cost, loop, loop.create_future(), False


def _wake(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


class PixelBudget:
    """A weighted, first-come-first-served budget of pixels, usable from any thread and event loop."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, int(capacity))
        self.used = 0
        self._waiters: deque[_Waiter] = deque()
        self._cond = threading.Condition()

    @property
    def waiting(self) -> int:
        """How many acquisitions wait in the queue."""
        with self._cond:
            return len(self._waiters)

    def wait_for_waiting(self, n: int, timeout: float) -> bool:
        """Block until ``n`` acquisitions wait (tests, monitors); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._waiters) >= n, timeout)

    def cost(self, pixels: int) -> int:
        """What an image of ``pixels`` takes (never more than the whole budget: it can always run alone)."""
        return max(1, min(int(pixels), self.capacity))

    def try_acquire(self, cost: int) -> bool:
        """Take ``cost`` at once if it is free and nobody waits; False otherwise."""
        with self._cond:
            if not self._waiters and self.used + cost <= self.capacity:
                self.used += cost
                return True
            return False

    async def acquire(self, cost: int, timeout: float) -> None:
        """Take ``cost``, waiting at most ``timeout`` seconds in line; BusyError after that."""
        if self.try_acquire(cost):
            return
        waiter = _Waiter(cost, asyncio.get_running_loop())
        with self._cond:
            self._waiters.append(waiter)
            self._grant()
            self._cond.notify_all()
        try:
            await asyncio.wait_for(waiter.future, timeout)
        except asyncio.TimeoutError:
            with self._cond:
                if waiter.granted:  # granted in the same instant: it is ours
                    return
                self._waiters.remove(waiter)
                self._grant()
            raise BusyError(f"the server is busy with other images; retry in a few seconds "
                            f"(waited {timeout:g} s)", retry_after=max(1.0, timeout)) from None
        except BaseException:  # cancelled (the client went away): give back what was granted
            with self._cond:
                if waiter.granted:
                    self.used -= cost
                else:
                    self._waiters.remove(waiter)
                self._grant()
            raise

    def release(self, cost: int) -> None:
        """Give ``cost`` back (and let the next in line go)."""
        with self._cond:
            self.used -= cost
            self._grant()

    def _grant(self) -> None:
        while self._waiters and self.used + self._waiters[0].cost <= self.capacity:
            w = self._waiters.popleft()
            self.used += w.cost
            w.granted = True
            w.loop.call_soon_threadsafe(_wake, w.future)


class Bounds:
    """The demo process's limits: its pool, pixel budget and per-visitor URL fetch slots."""

    def __init__(self, workers: int, pixel_budget: int, busy_wait_s: float, url_fetches_per_visitor: int) -> None:
        self.workers = max(1, workers)
        self._pool: ThreadPoolExecutor | None = None
        self.budget = PixelBudget(pixel_budget)
        self.busy_wait_s = busy_wait_s
        self.url_cap = url_fetches_per_visitor
        self._fetching: dict[str, int] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._released = 0
        self._pending = 0
        self._large = 0  # large decodes in flight (the small mmap threshold is on while > 0)

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The demo's own threads (started on first use; again after a shutdown: an app may be restarted)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="demo-work")
            return self._pool

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the demo's pool and await its result."""
        with self._changed:
            self._pending += 1
            self._changed.notify_all()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        finally:
            with self._changed:
                self._pending -= 1

    def wait_for_pending(self, n: int, timeout: float) -> bool:
        """Block until ``n`` calls of :meth:`run` are queued or running (tests, monitors); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._pending >= n, timeout)

    @contextlib.asynccontextmanager
    async def pixels(self, pixels: int) -> AsyncIterator[None]:
        """Hold ``pixels`` of the budget while the block decodes (queue, then BusyError)."""
        cost = self.budget.cost(pixels)
        await self.budget.acquire(cost, self.busy_wait_s)
        with self._holding(pixels, cost):
            yield

    @contextlib.contextmanager
    def pixels_now(self, pixels: int) -> Iterator[bool]:
        """Hold ``pixels`` of the budget for the block if they are free now and nobody waits (from any
        thread: a pool job decodes at once, with no second hop); yields False, holding nothing, otherwise
        (then the caller queues with :meth:`pixels`)."""
        cost = self.budget.cost(pixels)
        if not self.budget.try_acquire(cost):
            yield False
            return
        with self._holding(pixels, cost):
            yield True

    @contextlib.contextmanager
    def _holding(self, pixels: int, cost: int) -> Iterator[None]:
        """While the block runs ``cost`` of the budget is held (acquired by the caller); released after."""
        large = pixels >= LARGE_DECODE_PIXELS
        if large:
            self._large_decode(+1)
        try:
            yield
        finally:
            if large:
                self._large_decode(-1)
            self.budget.release(cost)
            if large:
                with self._lock:
                    self._released += cost

    def _large_decode(self, step: int) -> None:
        """Count large decodes in flight; the first turns the small mmap threshold on, the last turns it off."""
        with self._lock:
            self._large += step
            if (step > 0 and self._large == 1) or (step < 0 and self._large == 0):
                tune_malloc(SMALL_MMAP_THRESHOLD if self._large else LARGE_MMAP_THRESHOLD)

    def settle(self) -> None:
        """At the end of a request: after large decodes, once none is in flight, hand freed memory back."""
        with self._lock:
            trim = self._released >= TRIM_AFTER_PIXELS and self.budget.used == 0
            if trim:
                self._released = 0
        if trim:
            try:
                self.pool.submit(malloc_trim)
            except RuntimeError:  # shutting down
                pass

    @contextlib.contextmanager
    def url_slots(self, visitor: str, n: int) -> Any:
        """Reserve ``n`` concurrent URL fetches for ``visitor``; RateLimitedError past the cap."""
        if n <= 0:
            yield
            return
        with self._lock:
            busy = self._fetching.get(visitor, 0)
            if busy and busy + n > self.url_cap:  # one request alone may always fetch its own URLs
                raise RateLimitedError(f"too many image URLs from your address are being fetched at once "
                                       f"(at most {self.url_cap}); retry when they are done", retry_after=2.0)
            self._fetching[visitor] = busy + n
        try:
            yield
        finally:
            with self._lock:
                left = self._fetching.pop(visitor) - n
                if left:
                    self._fetching[visitor] = left

    def fetching(self, visitor: str) -> int:
        """URL fetches in flight for ``visitor``."""
        with self._lock:
            return self._fetching.get(visitor, 0)

    def close(self) -> None:
        """Stop the pool once its running work is done (at server shutdown)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


_LIBC: Any = None


def _load_libc() -> None:
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
            _LIBC.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):
            _LIBC = False


def malloc_trim() -> bool:
    """Return freed heap memory to the system (glibc's ``malloc_trim(0)``); False where there is none."""
    _load_libc()
    if not _LIBC:
        return False
    return bool(_LIBC.malloc_trim(0))


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def tune_malloc(mmap_threshold: int = LARGE_MMAP_THRESHOLD) -> bool:
    """Have glibc map every allocation of ``mmap_threshold`` bytes or more on its own (unmapped when freed),
    at a fixed threshold; False where there is no glibc."""
    _load_libc()
    if not _LIBC or not hasattr(_LIBC, "mallopt"):
        return False
    return bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)))


def default_workers(cap: int = 4) -> int:
    """The CPUs this process may use, at most ``cap`` (decoding threads: 4)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cap, cpus))
