"""Per-core streams (issue 23): one batch per core, one intra-op thread each, rows in input order, exact.

The streamed engine must give what the one-team engine gives: the same rows in the same order,
the same per-input error rows, bit-identical embeddings (torch fp32 and bf16, ONNX Runtime), a
bounded look-ahead, and the one-team path itself for inputs that fit one batch.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest
import torch

import deepsift.model.engine as engine
from deepsift.model.backbone import build_code_config, create_backbone
from deepsift.model.detector import Detector
from deepsift.model.devices import Runner
from deepsift.model.engine import run_batches
import deepsift.model.streams as streams
from deepsift.model.streams import TEAM_SCALING, last_on_team, stream_count, streams_time


@pytest.fixture
def two_cpus(monkeypatch):
    """The engine sees two usable CPUs whatever this machine has (streams need at least two)."""
    monkeypatch.setattr(engine, "usable_cpus", lambda: 2)


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory):
    """A 2-layer CoDE ViT in the published layout: the exactness checks need the real network, not its depth."""
    from deepsift.model.backbone import save_backbone

    out = tmp_path_factory.mktemp("code-2-layers")
    save_backbone(create_backbone(build_code_config(num_hidden_layers=2), seed=0), out)
    return out


@pytest.fixture(scope="module")
def runner():
    return Runner(create_backbone(build_code_config(num_hidden_layers=1), seed=0).eval(), torch.device("cpu"))


def arrays(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(n)]


class Recording:
    """A streamable forward around a :class:`Runner`: records where each batch ran and with how many threads.

    ``before(batch)`` and ``after(batch)`` (optional) run around each batch's forward, in its thread.
    """

    streamable = True

    def __init__(self, runner, before=None, after=None):
        self.runner, self.before, self.after = runner, before, after
        self.calls: list[tuple[str, int, int]] = []  # (thread name, intra-op threads, batch length)
        self.lock = threading.Lock()

    def _run(self, fwd, batch):
        with self.lock:
            self.calls.append((threading.current_thread().name, torch.get_num_threads(), len(batch)))
        if self.before is not None:
            self.before(batch)
        out = fwd(batch)
        if self.after is not None:
            self.after(batch)
        return out

    def __call__(self, batch):
        return self._run(self.runner, batch)

    @contextlib.contextmanager
    def streams(self):
        with self.runner.streams() as make:
            def made():
                fwd = make()
                return lambda batch: self._run(fwd, batch)
            yield made


def test_batches_run_in_one_thread_streams_and_come_back_in_input_order_with_error_rows(runner, two_cpus):
    threads_before = torch.get_num_threads()
    sources = arrays(7) + [b"junk"] + arrays(5, seed=1)  # 13 inputs, one unreadable: batches of 3 good
    forward = Recording(runner)
    streamed = list(run_batches(iter(sources), forward, batch_size=3, workers=1))  # a stream of unknown length
    team = list(run_batches(sources, lambda b: runner.collect_now(b), batch_size=3, workers=1))
    stream_calls = [c for c in forward.calls if c[0].startswith("deepsift-stream")]
    assert len(stream_calls) == 4 and len({name for name, _, _ in stream_calls}) == 2  # both streams worked
    assert all(threads == 1 for _, threads, _ in stream_calls)  # each with a team of one
    assert [[it.index for it in items] for items, _ in streamed] == [[it.index for it in items] for items, _ in team]
    assert [it.index for items, _ in streamed for it in items] == list(range(13))
    for (items_a, out_a), (items_b, out_b) in zip(streamed, team):
        assert [it.row for it in items_a] == [it.row for it in items_b]
        assert np.array_equal(out_a, out_b)
    bad = streamed[2][0][1]
    assert bad.index == 7 and bad.row is None and bad.error.startswith("<bytes 7>: ")
    assert torch.get_num_threads() == threads_before  # the caller's own setting
    fresh = []
    t = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert fresh == [threads_before]  # and the default of threads that start torch later


def test_rows_keep_input_order_when_a_later_batch_finishes_first(runner, two_cpus):
    sources = arrays(9)
    second_done, waited = threading.Event(), []

    def before(batch):  # batch 0 starts only once batch 1 has finished: out of order on purpose
        if np.array_equal(batch[0], sources[0]):
            waited.append(second_done.wait(30))

    def after(batch):
        if np.array_equal(batch[0], sources[3]):
            second_done.set()

    got = [([it.index for it in items], out)
           for items, out in run_batches(iter(sources), Recording(runner, before, after), batch_size=3, workers=1)]
    assert waited == [True]  # batch 1 did finish first
    assert [idx for idx, _ in got] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    team = list(run_batches(sources, lambda b: runner.collect_now(b), batch_size=3, workers=1))
    for (_, out_a), (_, out_b) in zip(got, team):
        assert np.array_equal(out_a, out_b)


def test_inputs_that_fit_one_batch_take_the_one_team_path_in_the_callers_thread(runner, two_cpus):
    forward = Recording(runner)
    list(run_batches(arrays(3), forward, batch_size=4, workers=1))  # a known count of one batch or less
    assert forward.calls == [(threading.current_thread().name, torch.get_num_threads(), 3)]
    forward = Recording(runner)
    list(run_batches(iter(arrays(3)), forward, batch_size=4, workers=1))  # unknown count: a last, short batch
    assert forward.calls == [(threading.current_thread().name, torch.get_num_threads(), 3)]
    assert stream_count(forward, None, 4, cpus=1) == 0  # one CPU: nothing to share
    assert stream_count(lambda b: b, None, 4, cpus=8) == 0  # a forward that does not take part (a baseline's)
    assert stream_count(forward, None, 4, cpus=2) == 2  # an unknown count: streams
    # a known count: streams where the team would take longer (batches of 4); on two CPUs a last
    # batch left alone runs on the team, so only one batch stays there
    assert [stream_count(forward, n, 4, cpus=2) for n in (4, 5, 8, 9, 12, 13, 16, 20, 24, 28)] == \
        [0, 2, 2, 2, 2, 2, 2, 2, 2, 2]  # 1, 2, 2, 3, 3, 4, 4, 5, 6, 7 batches
    # 16 CPUs: 20 batches = a wave of 16 and 4 more (team sooner), 17 = a wave and one left for the team
    assert [stream_count(forward, 4 * m, 4, cpus=16) for m in (16, 17, 18, 20, 32)] == [16, 16, 0, 0, 16]
    assert streams_time(3, 2) == pytest.approx(1 + 1 / (2 * TEAM_SCALING)) and streams_time(4, 2) == 2


def test_the_last_batch_runs_on_the_team_when_it_would_otherwise_run_alone():
    assert not last_on_team([], [], 1.0, 2)  # no batch done yet: no batch-time to compare
    assert last_on_team([10.0], [9.5], 1.0, 2)  # the other stream is nearly done: wait 0.5, then 10 / 1.68
    assert last_on_team([10.0], [], 1.0, 2)  # nothing else running
    assert not last_on_team([10.0], [1.0], 1.0, 2)  # the other stream just started: run beside it
    assert not last_on_team([10.0, 10.0, 30.0], [5.0], 1.0, 2)  # the median batch-time: 10; 5 + 5.95 > 10
    assert last_on_team([10.0, 10.0, 30.0], [7.0], 1.0, 2)  # 3 + 5.95 < 10
    assert not last_on_team([10.0], [8.0], 0.25, 2)  # a short batch: 2 + 1.49 > 2.5
    assert last_on_team([10.0], [9.5], 0.25, 2)
    assert not last_on_team([10.0], [9.5, 1.0], 1.0, 3)  # one of the others just started


def test_a_last_full_batch_left_alone_on_a_stream_runs_on_the_team_in_the_callers_thread(runner, two_cpus,
                                                                                        monkeypatch):
    """Three full batches of unknown count on two streams: the third would run alone on one core."""
    now = [0.0]
    monkeypatch.setattr(streams, "_clock", lambda: now[0])

    def finish():  # batches 0 and 1 end together at t=10, once the input has ended (the feeder is done)
        for t in threading.enumerate():
            if t.name == "deepsift-feed":
                t.join(30)
        now[0] = 10.0

    started, done = threading.Barrier(2), threading.Barrier(2, action=finish)

    def on_stream(barrier):
        return lambda batch: barrier.wait(30) if threading.current_thread().name.startswith("deepsift-stream") else None

    sources = arrays(9)
    forward = Recording(runner, on_stream(started), on_stream(done))
    got = list(run_batches(iter(sources), forward, batch_size=3, workers=1))
    assert [len(c) and c[0].startswith("deepsift-stream") for c in forward.calls] == [True, True, False]
    assert forward.calls[2] == (threading.current_thread().name, torch.get_num_threads(), 3)
    team = list(run_batches(sources, lambda b: runner.collect_now(b), batch_size=3, workers=1))
    assert [[it.index for it in items] for items, _ in got] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    for (_, out_a), (_, out_b) in zip(got, team):
        assert np.array_equal(out_a, out_b)
    assert_engine_threads_end()


def test_a_failing_forward_raises_in_order_and_leaves_no_stream_running(runner, two_cpus):
    class Boom(Exception):
        pass

    sources = arrays(12)

    def before(batch):
        if np.array_equal(batch[0], sources[3]):
            raise Boom("batch 1")

    forward = Recording(runner, before)
    seen = []
    with pytest.raises(Boom):
        for items, _ in run_batches(iter(sources), forward, batch_size=3, workers=1):
            seen.append([it.index for it in items])
    assert seen == [[0, 1, 2]]  # batch 0's rows first, then batch 1's error
    assert_engine_threads_end()


def assert_engine_threads_end():
    """The streams are gone once the engine returns; the feeder ends once it sees the stop (bounded wait)."""
    assert not [t for t in threading.enumerate() if t.name.startswith("deepsift-stream")]
    for t in [t for t in threading.enumerate() if t.name == "deepsift-feed"]:
        t.join(30)
        assert not t.is_alive()


def test_rows_come_out_while_the_input_stalls(runner, two_cpus):
    """A pipe that stops sending (``find ... | deepsift detect -``): the rows of what came are not held back."""
    sources, more, stalled = arrays(16 + 6), threading.Event(), []

    def stalling():
        yield from sources  # the engine looks 16 inputs ahead: these give 6 rows
        stalled.append(more.wait(30))
        yield from arrays(2, seed=3)

    got = []
    for items, _ in run_batches(stalling(), Recording(runner), batch_size=1, workers=1):
        got.append(items[0].index)
        if len(got) == 6:
            more.set()
    assert stalled == [True]  # the 6 rows came while the input was stalled
    assert got == list(range(24))
    assert_engine_threads_end()


def test_an_error_of_the_input_itself_comes_after_the_rows_before_it(runner, two_cpus):
    def failing():
        yield from arrays(30)
        raise OSError("the folder went away")

    seen = {}
    for name, forward in (("streams", Recording(runner)), ("team", lambda b: runner.collect_now(b))):
        seen[name] = []
        with pytest.raises(OSError, match="the folder went away"):
            for items, _ in run_batches(failing(), forward, batch_size=3, workers=1):
                seen[name].extend(it.index for it in items)
    # every whole batch the look-ahead let through, in order, then the error: one team decodes 16
    # inputs ahead, streams one batch (the batches handed out to the streams are their look-ahead)
    assert seen["team"] == list(range(15))
    assert seen["streams"] == list(range(27))
    assert_engine_threads_end()


def test_a_consumer_that_stops_early_stops_the_streams_and_the_look_ahead_is_bounded(runner, two_cpus):
    forward = Recording(runner)
    batches = run_batches(arrays(30), forward, batch_size=3, workers=1)
    next(batches)
    assert len(forward.calls) <= 2 + 1 + 1  # two streams busy, one batch waiting, the one yielded
    batches.close()
    started = len(forward.calls)
    assert_engine_threads_end()
    assert len(forward.calls) == started <= 2 + 1 + 1  # nothing was started after the consumer stopped


@pytest.mark.parametrize("backend, precision", [("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32")])
def test_streams_give_bit_identical_embeddings_to_the_one_team_engine(small_model_dir, labelled_folders, two_cpus,
                                                                      backend, precision):
    paths = sorted(str(p) for d in labelled_folders.values() for p in d.iterdir())[::3]  # 12, JPEG and PNG
    det = Detector.load_backbone_only(str(small_model_dir), backend=backend, precision=precision, batch_size=4)
    forward = det.onnx if det.onnx is not None else det.runner
    assert forward.streamable is (backend == "torch")  # ONNX Runtime keeps its own team unless asked
    forward.streamable = True
    assert stream_count(forward, None, 4, cpus=2) == 2
    streamed = det.embed(iter(paths))  # an unknown count: streams
    forward.streamable = False
    team = det.embed(iter(paths))
    assert streamed.shape == (12, 192)
    np.testing.assert_array_equal(streamed, team)  # same batches, same numbers: not merely close
    if det.onnx is not None:
        single = det.onnx.single_threaded()
        assert single.session.get_session_options().intra_op_num_threads == 1
        for session in (det.onnx.session, single.session):  # pool threads stop spinning once a run returns
            assert session.get_session_options().get_session_config_entry("session.force_spinning_stop") == "1"
        assert det.onnx.single_threaded() is single  # built once
