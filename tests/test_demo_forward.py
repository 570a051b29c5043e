"""The demo's forward thread: one pass at a time, queued embedding jobs share a pass, every caller gets its rows."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from deepsift.demo.engine import ForwardThread
from deepsift.exceptions import ServiceError


class Recorder:
    """An embedding function that records the rows of each pass and who ran it."""

    def __init__(self) -> None:
        self.passes: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.passes.append(len(batch))
        self.threads.add(threading.current_thread().name)
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True) * 2.0


def blocked(fwd: ForwardThread) -> tuple[threading.Event, threading.Event]:
    """Occupy the forward thread until the returned ``release`` is set (``started`` says it is busy)."""
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(30)

    threading.Thread(target=fwd.call, args=(hold,), daemon=True).start()
    assert started.wait(30)
    return started, release


def batch(value: int, rows: int) -> np.ndarray:
    return np.full((rows, 2, 2, 3), value, dtype=np.uint8)


def test_queued_embedding_jobs_share_one_pass_and_get_their_own_rows():
    fwd, fn = ForwardThread(max_rows=8), Recorder()
    try:
        _, release = blocked(fwd)
        futures = [fwd.embed(fn, batch(v, rows)) for v, rows in ((1, 1), (2, 3), (3, 2))]
        release.set()
        outs = [f.result(30) for f in futures]
    finally:
        fwd.close()
    assert fn.passes == [6]  # three requests, one pass
    assert [o.ravel().tolist() for o in outs] == [[24.0], [48.0] * 3, [72.0] * 2]  # 2x the sum of 12 values
    assert fn.threads == {"demo-forward"}


def test_a_lone_job_runs_alone_and_passes_stay_within_max_rows():
    fwd, fn = ForwardThread(max_rows=4), Recorder()
    try:
        assert fwd.embed(fn, batch(1, 1)).result(30).shape == (1, 1)  # nothing queued: a batch of one
        _, release = blocked(fwd)
        futures = [fwd.embed(fn, batch(1, 3)), fwd.embed(fn, batch(1, 2)), fwd.embed(fn, batch(1, 2)),
                   fwd.embed(fn, batch(1, 9))]
        release.set()
        assert [len(f.result(30)) for f in futures] == [3, 2, 2, 9]
    finally:
        fwd.close()
    assert fn.passes == [1, 3, 4, 9]  # 3+2 > 4: apart; 2+2 together; a job over the cap runs alone


def test_other_functions_and_plain_calls_are_never_joined():
    fwd, a, b = ForwardThread(max_rows=32), Recorder(), Recorder()
    try:
        _, release = blocked(fwd)
        futures = [fwd.embed(a, batch(1, 1)), fwd.call_async(lambda: "plain"), fwd.embed(a, batch(1, 1)),
                   fwd.embed(a, batch(1, 1)), fwd.embed(b, batch(1, 1)), fwd.embed(a, batch(1, 1))]
        release.set()
        results = [f.result(30) for f in futures]
    finally:
        fwd.close()
    assert results[1] == "plain"
    assert a.passes == [1, 2, 1] and b.passes == [1]  # joined only with the same function, queued back to back


def test_a_failing_pass_fails_each_of_its_callers_and_the_thread_goes_on():
    fwd = ForwardThread(max_rows=8)

    def broken(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("out of memory")

    try:
        _, release = blocked(fwd)
        futures = [fwd.embed(broken, batch(1, 1)), fwd.embed(broken, batch(2, 2))]
        release.set()
        for f in futures:
            with pytest.raises(RuntimeError, match="out of memory"):
                f.result(30)
        assert fwd.call(lambda: 42) == 42
    finally:
        fwd.close()


def test_close_finishes_queued_jobs_then_refuses_new_ones():
    fwd, fn = ForwardThread(), Recorder()
    _, release = blocked(fwd)
    pending = fwd.embed(fn, batch(1, 1))
    closer = threading.Thread(target=fwd.close)
    closer.start()
    release.set()
    closer.join(30)
    assert pending.result(0).shape == (1, 1)
    with pytest.raises(ServiceError, match="shutting down"):
        fwd.embed(fn, batch(1, 1))


def test_wait_queued_returns_once_the_jobs_are_queued():
    fwd, fn = ForwardThread(), Recorder()
    try:
        _, release = blocked(fwd)
        assert not fwd.wait_queued(1, timeout=0)  # the held job runs; nothing waits
        threading.Thread(target=lambda: [fwd.embed(fn, batch(1, 1)) for _ in range(2)]).start()
        assert fwd.wait_queued(2, timeout=30)
        release.set()
    finally:
        fwd.close()
    assert fn.passes == [2]
