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


def stream_count(forward: object, count: int | None, batch_size: int, cpus: int) -> int:
    """How many streams run ``forward``: one per CPU, or 0 (the one-team path).

    0 for a forward that does not take part (a GPU, a baseline's), on one CPU (nothing to share),
    and for a known ``count`` of inputs that fits one batch (a demo's one-image call: a team of
    all cores on one batch answers sooner than one stream would).
    """
    if not getattr(forward, "streamable", False) or cpus < 2:
        return 0
    if count is not None and count <= batch_size:
        return 0
    return cpus


def stream_batches(runs: Iterable[list[Item]], forward: Forward, streams: int,
                   batch_size: int) -> Iterator[tuple[list[Item], np.ndarray]]:
    """Run each batch of ``runs`` in one of ``streams`` threads; yield ``(items, outputs)`` in input order.

    At most ``streams + 1`` batches are handed out and not yet yielded (one waits for each
    stream to free up), and a finished batch is yielded as soon as every batch before it has
    been. The input's last, short batch runs on the whole team in the caller's thread when no
    stream is busy (as the one-team path would run it). A failing forward raises here, in input
    order; on any exit (an error, Ctrl-C, the consumer stopping) the batches not started are
    dropped and the ones running are waited for.
    """
    local = threading.local()
    pending: deque[tuple[list[Item], list[Item], Future[np.ndarray] | None]] = deque()
    pool = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="deepsift-stream")
    try:
        with forward.streams() as make:  # type: ignore[attr-defined]
            def run(batch: np.ndarray) -> np.ndarray:
                fwd = getattr(local, "forward", None)
                if fwd is None:
                    fwd = local.forward = make()
                return fwd(batch)

            for items in runs:
                good = [it for it in items if it.pixels is not None]
                if good and len(good) < batch_size and all(f is None or f.done() for _, _, f in pending):
                    while pending:  # the last batch, every stream idle: the whole team runs it, here
                        yield _rows(*pending.popleft())
                    yield _rows(items, good, _done(forward(np.stack([it.pixels for it in good]))))
                    continue
                fut = pool.submit(run, np.stack([it.pixels for it in good])) if good else None
                for it in good:
                    it.pixels = None  # the stacked batch holds them now
                pending.append((items, good, fut))
                while pending and (len(pending) > streams or _ready(pending[0][2])):
                    yield _rows(*pending.popleft())
            while pending:
                yield _rows(*pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _done(outputs: np.ndarray) -> Future[np.ndarray]:
    fut: Future[np.ndarray] = Future()
    fut.set_result(outputs)
    return fut


def _ready(fut: Future[np.ndarray] | None) -> bool:
    return fut is None or fut.done()


def _rows(items: list[Item], good: list[Item], fut: Future[np.ndarray] | None) -> tuple[list[Item], np.ndarray]:
    outputs = fut.result() if fut is not None else np.empty((0, 0), np.float32)
    for k, it in enumerate(good):
        it.row, it.pixels = k, None
    return items, outputs
