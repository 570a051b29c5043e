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
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from .decoding import Item

Forward = Callable[[np.ndarray], np.ndarray]


TEAM_SCALING = 0.84
"""How much of N cores one N-thread team's forward gets (``detect`` / bound on an idle 2-core AVX2
machine before streams, ``benchmarks/README.md``, issue 23): the streams' rule for a known count
and for the input's last batch."""


def stream_count(forward: object, count: int | None, batch_size: int, cpus: int) -> int:
    """How many streams run ``forward``: one per CPU, or 0 (the one-team path).

    0 for a forward that does not take part (a GPU, a baseline's), on one CPU (nothing to share),
    and for a known ``count`` whose batches the team finishes sooner (:func:`streams_time`): one
    batch (a demo's one-image call) stays on the team. An unknown count (a generator, a pipe) runs
    as streams.
    """
    if not getattr(forward, "streamable", False) or cpus < 2:
        return 0
    if count is not None:
        batches = -(-count // batch_size)
        if streams_time(batches, cpus) >= batches / (cpus * TEAM_SCALING):
            return 0
    return cpus


def streams_time(batches: int, streams: int) -> float:
    """Batch-times that ``batches`` full batches take on ``streams`` streams, started together.

    Whole waves of one batch per stream, then the rest: a last batch that would run alone (one
    left over) runs on the whole team once the others are done (:func:`last_on_team`).
    """
    waves, rest = divmod(batches, streams)
    return waves + (1 / (streams * TEAM_SCALING) if rest == 1 else 1.0 if rest else 0.0)


def stream_batches(runs: Iterable[list[Item]], forward: Forward, streams: int,
                   batch_size: int) -> Iterator[tuple[list[Item], np.ndarray]]:
    """Run each batch of ``runs`` in one of ``streams`` threads; yield ``(items, outputs)`` in input order.

    A feeder thread takes the batches (the inputs are read, decoded and batched there) and hands
    them to the streams, never more than ``streams + 1`` ahead of what was yielded; the caller's
    thread yields each batch once it and every batch before it are done, so rows come out while
    the input stalls (a pipe) as they do from the one-team path. The input's last batch runs on
    the whole team in the caller's thread, after the batches before it, when it would otherwise
    run alone on one core: a short last batch with no stream busy, or any last batch that a stream
    is about to start while the other streams are nearly done (:func:`last_on_team`).
    Errors come out in input order (a failing forward, or the input's own error after the rows
    before it); on any exit (an error, Ctrl-C, the consumer stopping) the batches not started are
    dropped and the running ones are waited for.
    """
    feed = _Feeder(runs, forward, streams, batch_size)
    try:
        while True:
            entry = feed.next_entry()
            if entry is None:
                return
            if entry.fut is None and entry.batch is None:
                outputs = np.empty((0, 0), np.float32)  # no decodable image in this run
            elif entry.fut is None or entry.fut.result() is _ON_TEAM:
                outputs = forward(entry.batch)  # type: ignore[arg-type]
            else:
                outputs = entry.fut.result()
            feed.taken()
            for k, it in enumerate(entry.good):
                it.row, it.pixels = k, None
            yield entry.items, outputs
    finally:
        feed.stop()


def last_on_team(seconds: list[float], running: list[float], share: float, streams: int) -> bool:
    """Whether the input's last batch, about to start on a stream, ends sooner on the whole team.

    ``seconds``: how long the full batches took on a stream so far (their median is one batch-time
    ``t``); ``running``: how long each batch still on a stream has run; ``share``: the last batch's
    size over a full one's. On its stream it takes ``share * t``; on the team it waits for the
    running batches (each due ``t`` after its start) and then takes ``share * t / (streams *
    TEAM_SCALING)``. No batch done yet (``t`` unknown): the stream.
    """
    if not seconds:
        return False
    t = float(np.median(seconds))
    wait = max((max(t - ran, 0.0) for ran in running), default=0.0)
    return wait + share * t / (streams * TEAM_SCALING) < share * t


_clock = time.monotonic  # the streams' clock (a test sets its own)
_ON_TEAM = np.empty(0)  # a stream's answer for a last batch that the caller runs on the whole team


@dataclass(eq=False)
class _Entry:
    """One batch handed out: its run of items, the decodable ones stacked, and where it runs."""

    items: list[Item]
    good: list[Item]
    batch: np.ndarray | None
    fut: Future[np.ndarray] | None = None  # None: the team runs it in the caller's thread
    started: float | None = None  # when a stream started it (monotonic seconds)
    last: bool = False  # the input's last batch (known once the input ended)


class _Feeder:
    """The feeder thread of :func:`stream_batches` and the ordered queue of batches it hands out."""

    def __init__(self, runs: Iterable[list[Item]], forward: Forward, streams: int, batch_size: int) -> None:
        self.forward, self.streams, self.batch_size = forward, streams, batch_size
        self.pool = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="deepsift-stream")
        self.cond = threading.Condition()
        self.pending: deque[_Entry] = deque()
        self.ended, self.stopping = False, False
        self.error: BaseException | None = None
        self.seconds: list[float] = []  # how long each full batch took on a stream
        self.local = threading.local()
        self.context = forward.streams()  # type: ignore[attr-defined]
        self.make = self.context.__enter__()
        self.thread = threading.Thread(target=self._feed, args=(runs,), daemon=True, name="deepsift-feed")
        self.thread.start()

    def _run(self, entry: _Entry) -> np.ndarray:
        """One batch in a stream thread, through that thread's own one-thread forward."""
        with self.cond:
            now = _clock()
            if entry.last:
                running = [now - e.started for e in self.pending
                           if e is not entry and e.started is not None and e.fut is not None and not e.fut.done()]
                if last_on_team(self.seconds, running, len(entry.good) / self.batch_size, self.streams):
                    return _ON_TEAM
            entry.started = now
        fwd = getattr(self.local, "forward", None)
        if fwd is None:
            fwd = self.local.forward = self.make()
        out = fwd(entry.batch)
        if len(entry.good) == self.batch_size:
            with self.cond:
                self.seconds.append(_clock() - entry.started)
        return out

    def _feed(self, runs: Iterable[list[Item]]) -> None:
        iterator = iter(runs)
        try:
            for items in iterator:
                good = [it for it in items if it.pixels is not None]
                entry = _Entry(items, good, np.stack([it.pixels for it in good]) if good else None)
                for it in good:
                    it.pixels = None  # the stacked batch holds them now
                with self.cond:
                    while len(self.pending) > self.streams and not self.stopping:
                        self.cond.wait()
                    if self.stopping:
                        return
                    idle = all(e.fut is None or e.fut.done() for e in self.pending)
                    if entry.batch is not None and not (len(good) < self.batch_size and idle):
                        entry.fut = self.pool.submit(self._run, entry)
                    # else the last, short batch with no stream busy: the team, in the caller's thread
                    self.pending.append(entry)
                    self.cond.notify_all()
        except BaseException as exc:  # the input's own error: raised in the caller's thread, in order
            with self.cond:
                self.error = exc
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            with self.cond:
                if self.error is None and self.pending:
                    self.pending[-1].last = True  # a stream that has not started it yet may leave it to the team
                self.ended = True
                self.cond.notify_all()

    def next_entry(self) -> _Entry | None:
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
