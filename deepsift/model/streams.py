"""Per-core streams on the CPU: one batch per core, each forward with one intra-op thread, rows in input order.

One forward run by an N-thread intra-op team scales worse than N times: every op ends on a barrier
where the team waits for its slowest thread, and a decoding thread (or any other process) that
preempts one member stalls all of them. With ``K`` streams, ``K`` batches run at once, each in its
own thread with a team of one (the throughput mode of ONNX Runtime and OpenVINO): nothing waits
for anything else, and a preempted stream only loses the time it was preempted. The measured
figures are in ``benchmarks/README.md`` (issue 23).

A forward takes part when it says so (``streamable``) and gives :meth:`streams`: a context
manager, entered in the consumer's thread, whose value is a factory called once in each stream
thread and returning the forward that thread runs (the torch :class:`~deepsift.model.devices.Runner`
sets that thread's intra-op team to one thread; ONNX Runtime uses a one-thread session).

Outputs are those of the one-team path: the same batches (the engine's ``batched``), the same
network; the reduction order inside one image's row does not depend on the thread count here
(``tests/test_streams.py`` checks bit equality for torch fp32, bf16 and ONNX Runtime).
"""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np

from .decoding import Item

Forward = Callable[[np.ndarray], np.ndarray]


TEAM_SCALING = 0.84
"""How much of N cores one N-thread team's forward gets (``detect`` / bound on an idle 2-core AVX2
machine before streams, ``benchmarks/README.md``, issue 23); the streams' rule for a known count."""


def stream_count(forward: object, count: int | None, batch_size: int, cpus: int) -> int:
    """How many streams run ``forward``: one per CPU, or 0 (the one-team path).

    0 for a forward that does not take part (a GPU, a baseline's), on one CPU (nothing to share),
    and for a known ``count`` whose batches the team finishes sooner: ``m`` batches take
    ``ceil(m / cpus)`` batch-times on the streams and ``m / (cpus * TEAM_SCALING)`` on the team,
    so one batch (a demo's one-image call), or three on two CPUs (the third would run alone on
    one core), stay on the team. An unknown count (a generator, a pipe) runs as streams.
    """
    if not getattr(forward, "streamable", False) or cpus < 2:
        return 0
    if count is not None:
        batches = -(-count // batch_size)
        if -(-batches // cpus) * cpus * TEAM_SCALING > batches:
            return 0
    return cpus


def stream_batches(runs: Iterable[list[Item]], forward: Forward, streams: int,
                   batch_size: int) -> Iterator[tuple[list[Item], np.ndarray]]:
    """Run each batch of ``runs`` in one of ``streams`` threads; yield ``(items, outputs)`` in input order.

    A feeder thread takes the batches (the inputs are read, decoded and batched there) and hands
    them to the streams, never more than ``streams + 1`` ahead of what was yielded; the caller's
    thread yields each batch once it and every batch before it are done, so rows come out while
    the input stalls (a pipe) as they do from the one-team path. The input's last, short batch runs
    on the whole team in the caller's thread when no stream is busy (as the one-team path would
    run it). Errors come out in input order (a failing forward, or the input's own error after the
    rows before it); on any exit (an error, Ctrl-C, the consumer stopping) the batches not started
    are dropped and the running ones are waited for.
    """
    feed = _Feeder(runs, forward, streams, batch_size)
    try:
        while True:
            entry = feed.next_entry()
            if entry is None:
                return
            items, good, fut, team_batch = entry
            if team_batch is not None:
                outputs = forward(team_batch)
            else:
                outputs = fut.result() if fut is not None else np.empty((0, 0), np.float32)
            feed.taken()
            for k, it in enumerate(good):
                it.row, it.pixels = k, None
            yield items, outputs
    finally:
        feed.stop()


class _Feeder:
    """The feeder thread of :func:`stream_batches` and the ordered queue of batches it hands out."""

    def __init__(self, runs: Iterable[list[Item]], forward: Forward, streams: int, batch_size: int) -> None:
        self.forward, self.streams, self.batch_size = forward, streams, batch_size
        self.pool = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="deepsift-stream")
        self.cond = threading.Condition()
        self.pending: deque[tuple[list[Item], list[Item], Future[np.ndarray] | None, np.ndarray | None]] = deque()
        self.ended, self.stopping = False, False
        self.error: BaseException | None = None
        self.local = threading.local()
        self.context = forward.streams()  # type: ignore[attr-defined]
        self.make = self.context.__enter__()
        self.thread = threading.Thread(target=self._feed, args=(runs,), daemon=True, name="deepsift-feed")
        self.thread.start()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One batch in a stream thread, through that thread's own one-thread forward."""
        fwd = getattr(self.local, "forward", None)
        if fwd is None:
            fwd = self.local.forward = self.make()
        return fwd(batch)

    def _feed(self, runs: Iterable[list[Item]]) -> None:
        iterator = iter(runs)
        try:
            for items in iterator:
                good = [it for it in items if it.pixels is not None]
                batch = np.stack([it.pixels for it in good]) if good else None
                for it in good:
                    it.pixels = None  # the stacked batch holds them now
                with self.cond:
                    while len(self.pending) > self.streams and not self.stopping:
                        self.cond.wait()
                    if self.stopping:
                        return
                    idle = all(f is None or f.done() for _, _, f, _ in self.pending)
                    if batch is not None and len(good) < self.batch_size and idle:
                        self.pending.append((items, good, None, batch))  # the last batch: the team, in the caller's thread
                    else:
                        fut = self.pool.submit(self._run, batch) if batch is not None else None
                        self.pending.append((items, good, fut, None))
                    self.cond.notify_all()
        except BaseException as exc:  # the input's own error: raised in the caller's thread, in order
            with self.cond:
                self.error = exc
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            with self.cond:
                self.ended = True
                self.cond.notify_all()

    def next_entry(self) -> tuple[list[Item], list[Item], Future[np.ndarray] | None, np.ndarray | None] | None:
        """The next batch in input order once handed out (None at the end; the input's error is raised here)."""
        with self.cond:
            while not self.pending and not self.ended:
                self.cond.wait()
            if self.pending:
                return self.pending[0]
            if self.error is not None:
                raise self.error
            return None

    def taken(self) -> None:
        """The head batch is done: room for one more."""
        with self.cond:
            self.pending.popleft()
            self.cond.notify_all()

    def stop(self) -> None:
        """Stop feeding, drop the batches not started, wait for the running ones, restore the threads setting."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        try:
            self.pool.shutdown(wait=True, cancel_futures=True)
        finally:
            self.context.__exit__(None, None, None)
