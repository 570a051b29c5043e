"""Decoding in worker processes: every core decodes, pixels come back through shared memory.

:func:`process_items` yields the engine's :class:`~deepsift.model.engine.Item` in input order, like
the thread path, with the same bounded look-ahead (at most ``max_in_flight`` inputs taken and not
yet yielded) and the same per-input errors. Each worker process decodes and crops one input at a
time into a slot of one shared-memory block (224x224x3 uint8 for the CoDE modes): no image is
pickled; the parent copies the slot out once and frees it. A preprocessor output that does not
fit a slot comes back through the worker's pipe instead (a baseline's own shape).

A worker that dies (a decoder segfault, the out-of-memory killer) is replaced: the input it was
decoding gets an error row naming the signal, the inputs queued behind it go to the new worker,
and the run goes on. Each worker is a fresh interpreter (``python -m deepsift.model.decodepool``):
never a fork of a process running torch threads, and never a re-run of the caller's ``__main__``
(which ``multiprocessing`` does). Workers ignore Ctrl-C: the parent cleans up and stops them, and
a worker whose parent is gone ends at once (its pipe closes).
"""
from __future__ import annotations

import atexit
import os
import pickle
import signal
import subprocess
import sys
import threading
import weakref
from collections import deque
from multiprocessing.connection import Connection, wait
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Iterable, Iterator

import numpy as np

from .decoding import Item, Preprocessing, error_text, load_pixels, prepare_item, source_name

SLOT_SHAPE = (224, 224, 3)
PER_WORKER = 2  # inputs queued per worker: one decoding, one waiting, so no worker idles on a round trip


def picklable(*objects: object) -> bool:
    """Whether ``objects`` can travel to a worker process (a lambda resolver or preprocessor cannot)."""
    try:
        pickle.dumps(objects)
        return True
    except Exception:
        return False


def in_process(source: object) -> bool:
    """Inputs decoded in the parent: already-decoded images and arrays (nothing to gain from a worker)."""
    from PIL import Image

    return isinstance(source, (Image.Image, np.ndarray)) or not isinstance(
        source, (str, os.PathLike, bytes, bytearray, memoryview))


def _worker_main(recv: Connection, send: Connection) -> None:
    """A worker: receive ``(index, slot, source)``, decode into the slot, answer ``(index, slot, error, array)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    shm_name, slots, mode, url_timeout, url_policy = recv.recv()
    shm = SharedMemory(name=shm_name, track=False) if sys.version_info >= (3, 13) else _attach(shm_name)
    block = np.ndarray((slots, *SLOT_SHAPE), np.uint8, buffer=shm.buf)
    try:
        while True:
            try:
                task = recv.recv()
            except (EOFError, OSError):
                return
            if task is None:
                return
            index, slot, source = task
            try:
                pixels = load_pixels(source, mode, url_timeout, url_policy)
            except Exception as exc:
                send.send((index, slot, error_text(source_name(source, index), exc), None))
                continue
            if pixels.shape == SLOT_SHAPE and pixels.dtype == np.uint8:
                block[slot] = pixels
                send.send((index, slot, None, None))
            else:
                send.send((index, slot, None, np.ascontiguousarray(pixels)))
            del pixels
    finally:
        del block
        shm.close()


def _attach(name: str) -> SharedMemory:
    """Attach to the parent's block without the resource tracker adopting it (it is the parent's to free)."""
    from multiprocessing import resource_tracker

    register = resource_tracker.register
    resource_tracker.register = lambda *a, **k: None  # type: ignore[assignment]
    try:
        return SharedMemory(name=name)
    finally:
        resource_tracker.register = register  # type: ignore[assignment]


class _Worker:
    """One worker process, its two pipe ends, and the ``(index, slot, source)`` tasks it holds, oldest first."""

    def __init__(self, init: tuple) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.proc = subprocess.Popen([sys.executable, "-m", "deepsift.model.decodepool"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, close_fds=True)
        self.send = Connection(os.dup(self.proc.stdin.fileno()), readable=False)  # type: ignore[union-attr]
        self.conn = Connection(os.dup(self.proc.stdout.fileno()), writable=False)  # type: ignore[union-attr]
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.send.send(init)
        self.tasks: deque[tuple[int, int, object]] = deque()
        self.answered = 0

    def exitcode(self) -> int | None:
        """The worker's exit status once its pipe has closed (negative: the signal that killed it)."""
        try:
            return self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def stop(self) -> None:
        """Ask the worker to finish, then make sure it has."""
        try:
            self.send.send(None)
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.send.close()
        self.conn.close()


class ProcessDecoder:
    """A pool of decoding processes feeding one ordered stream of :class:`Item` (see the module)."""

    def __init__(self, workers: int, mode: Preprocessing, url_timeout: float, url_policy: Any,
                 max_in_flight: int) -> None:
        self.slots = max_in_flight + workers * PER_WORKER
        self.shm = SharedMemory(create=True, size=self.slots * int(np.prod(SLOT_SHAPE)))
        self.block = np.ndarray((self.slots, *SLOT_SHAPE), np.uint8, buffer=self.shm.buf)
        self.free = deque(range(self.slots))
        self.init = (self.shm.name, self.slots, mode, url_timeout, url_policy)
        self.mode, self.url_timeout, self.url_policy = mode, url_timeout, url_policy
        self.workers = [_Worker(self.init) for _ in range(workers)]
        self.max_in_flight = max_in_flight
        self.lock = threading.Condition()
        self.queue: deque[tuple[int, object]] = deque()  # taken inputs waiting for a worker
        self.done: dict[int, Item] = {}
        self.stopping = False
        self.failure: BaseException | None = None
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)  # a full pipe already means "wake up"
        self.wake_open = True
        self.replaced = 0  # workers that died and were replaced (for tests and logs)
        self.closed = False
        self.collector: threading.Thread | None = None

    def _submit(self, index: int, source: object) -> None:
        """Take one input: decoded here at once (images, arrays, errors), else queued for a worker."""
        if in_process(source):
            item = prepare_item(index, source, self.mode, self.url_timeout, self.url_policy)
            with self.lock:
                self.done[index] = item
            return
        with self.lock:
            self.queue.append((index, source))
        self._wake()

    def _wait_for(self, index: int) -> Item:
        """The item of input ``index``, once decoded."""
        with self.lock:
            while index not in self.done and self.failure is None:
                self.lock.wait()
            if index in self.done:
                return self.done.pop(index)
            raise self.failure  # type: ignore[misc]

    def _wake(self) -> None:
        with self.lock:
            if self.wake_open:
                try:
                    os.write(self.wake_w, b"x")
                except OSError:
                    pass

    # -- the collector: dispatches to workers, gathers answers, replaces dead workers ---------------
    def _collect(self) -> None:
        try:
            while True:
                with self.lock:
                    if self.stopping:
                        return
                    self._dispatch()
                by_conn = {w.conn: w for w in self.workers}
                ready = wait([*by_conn, self.wake_r])
                if self.wake_r in ready:
                    os.read(self.wake_r, 4096)
                for obj in ready:
                    if obj in by_conn and not self._drain(by_conn[obj]):
                        self._replace(by_conn[obj])
        except BaseException as exc:  # a bug here must not hang the consumer
            with self.lock:
                self.failure, self.stopping = exc, True
                self.lock.notify_all()

    def _dispatch(self) -> None:
        """Hand queued inputs to workers with room (called under the lock)."""
        for w in self.workers:
            while self.queue and self.free and len(w.tasks) < PER_WORKER:
                index, source = self.queue.popleft()
                slot = self.free.popleft()
                try:
                    w.send.send((index, slot, source))
                except (OSError, ValueError):  # dying: the sentinel says so next; the task is re-queued then
                    self.queue.appendleft((index, source))
                    self.free.appendleft(slot)
                    break
                w.tasks.append((index, slot, source))

    def _drain(self, worker: _Worker) -> bool:
        """Receive every answer waiting in ``worker``'s pipe; False once the pipe has closed (the worker is gone)."""
        while True:
            try:
                if not worker.conn.poll():
                    return True
                index, slot, error, array = worker.conn.recv()
            except (EOFError, OSError):
                return False
            item = Item(index, source_name(worker.tasks[0][2], index))
            if error is not None:
                item.error = error
            else:
                item.pixels = np.array(self.block[slot]) if array is None else array
            worker.answered += 1
            with self.lock:
                worker.tasks.popleft()
                self.free.append(slot)
                self.done[index] = item
                self.lock.notify_all()

    def _replace(self, worker: _Worker) -> None:
        """A worker died: its current input gets an error row, the rest go to a new worker."""
        code = worker.exitcode()
        how = f"signal {-code} ({signal.Signals(-code).name})" if code < 0 else f"exit code {code}"
        worker.send.close()
        worker.conn.close()
        if code > 0 and worker.answered == 0:  # it never ran: replacing it would fail the same way, forever
            from ..exceptions import DeepsiftError

            raise DeepsiftError(f"the image decoding worker processes cannot start ({sys.executable} -m "
                                f"deepsift.model.decodepool exited with code {code}; its error is printed above)")
        with self.lock:
            if worker.tasks:
                index, slot, source = worker.tasks.popleft()
                name = source_name(source, index)
                self.done[index] = Item(index, name, error=f"{name}: the decoding worker died on this input "
                                                            f"({how}); the run went on without it")
                self.free.append(slot)
            for index, slot, source in reversed(worker.tasks):
                self.queue.appendleft((index, source))
                self.free.append(slot)
            worker.tasks.clear()
            self.replaced += 1
            self.workers[self.workers.index(worker)] = _Worker(self.init)
            self.lock.notify_all()

    # -- the consumer ---------------------------------------------------------------------------------
    def items(self, sources: Iterable[object]) -> Iterator[Item]:
        """Yield an :class:`Item` per input, in input order.

        Inputs are taken here, in the caller's thread (a blocking source such as stdin blocks only
        the caller, as with threads), and never more than ``max_in_flight`` ahead of what was yielded.
        """
        collector = self.collector = threading.Thread(target=self._collect, daemon=True, name="deepsift-collect")
        _LIVE.add(self)
        collector.start()
        try:
            taken = yielded = 0
            for index, source in enumerate(sources):
                self._submit(index, source)
                taken += 1
                if taken - yielded >= self.max_in_flight:
                    yield self._wait_for(yielded)
                    yielded += 1
            while yielded < taken:
                yield self._wait_for(yielded)
                yielded += 1
        finally:
            self.close(collector)

    def close(self, collector: threading.Thread | None = None) -> None:
        """Stop the threads and the workers and free the shared memory (once; also at interpreter exit)."""
        with self.lock:
            if self.closed:
                return
            self.closed = self.stopping = True
            self.lock.notify_all()
        _LIVE.discard(self)
        self._wake()
        collector = collector or self.collector
        if collector is not None and collector is not threading.current_thread():
            collector.join(10)  # bounded: a run interrupted mid-way must still end
        for w in self.workers:
            try:
                w.send.send(None)
            except (OSError, ValueError):
                pass
        for w in self.workers:
            w.stop()
        with self.lock:
            self.wake_open = False
            os.close(self.wake_r)
            os.close(self.wake_w)
        del self.block
        self.shm.close()
        self.shm.unlink()


_LIVE: "weakref.WeakSet[ProcessDecoder]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At exit (a run stopped by Ctrl-C or SIGTERM leaves its generator unclosed): stop every pool while
    its threads still run; later, during interpreter finalisation, joining them would hang."""
    for pool in list(_LIVE):
        pool.close()


def process_items(sources: Iterable[object], mode: Preprocessing, workers: int, max_in_flight: int,
                  url_timeout: float, url_policy: Any) -> Iterator[Item]:
    """Decode ``sources`` in ``workers`` processes; yield :class:`Item` in input order (bounded look-ahead)."""
    yield from ProcessDecoder(workers, mode, url_timeout, url_policy, max_in_flight).items(sources)


def main() -> None:
    """The worker process: its protocol runs on the original stdin/stdout; anything printed goes to stderr."""
    recv = Connection(os.dup(0), writable=False)
    send = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    _worker_main(recv, send)


if __name__ == "__main__":
    main()
