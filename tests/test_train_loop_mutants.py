"""The training loop's bookkeeping, pinned down where mutation testing (scripts/mutation.sh train-loop) found it
loose: the start event, the per-epoch plot, the kept weights' summary line, which checkpoint stays as
checkpoint.prev, an interrupt before the first step, undecodable records and the NaN stop's message."""
from __future__ import annotations

import json

import pytest

import deepsift.train.loop as loop
import deepsift.train.probe as probe
from deepsift.exceptions import DataError
from deepsift.train.config import make_config
from deepsift.train.data import build_index
from deepsift.train.holdout import held_out
from deepsift.train.metrics import MetricsLog, read_log
from trainkit import make_dataset, tiny_config


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("mdata"), 24)


def _step(folder) -> int:
    return json.loads((folder / "state.json").read_text())["step"]


def test_an_epoch_logs_plots_and_checkpoints_as_it_ends_and_the_previous_epoch_stays_as_prev(tiny_data, tmp_path,
                                                                                              monkeypatch):
    shards, reals = tiny_data
    out = tmp_path / "run"
    plotted = []

    def accuracy(*a, **k):  # called at each epoch's end: was the plot of the epochs before already drawn?
        plotted.append((out / "train_plot.png").is_file())
        return 0.875 - 0.125 * len(plotted)  # epoch 1 is the best

    monkeypatch.setattr(probe, "probe_accuracy", accuracy)
    cfg = make_config(**tiny_config(steps=4, holdout=8))
    result = loop.train([str(shards)], out, cfg, real=str(reals), progress=False)
    assert plotted == [False, True]  # drawn at the end of epoch 1, while the run goes on
    assert result.head_accuracy == [(2, 0.75), (4, 0.625)] and result.kept_step == 2
    assert result.summary[0] == ("weights: the best epoch's (step 2, held-out head accuracy 0.750; the last step 4: "
                                 "held-out head accuracy 0.625; keep: last keeps those)")
    assert _step(out / "checkpoint") == 4 and _step(out / "checkpoint.prev") == 2  # the end adds no third write
    log = read_log(out / "train_log.jsonl")
    starts = [e for e in log if e.get("event") == "start"]
    assert len(starts) == 1 and log[0] is starts[0]
    recs, roles = held_out(build_index([str(shards)], real=str(reals)), cfg)
    assert starts[0]["held_out"] == {"fit": len(roles.fit), "select": len(roles.select), "report": len(roles.report)}
    assert starts[0]["records"] == len(recs) and starts[0]["config"]["steps"] == 4 and len(roles.fit) > 0


def test_an_interrupt_before_the_first_step_leaves_no_run_behind_and_one_after_it_keeps_that_step(tiny_data, tmp_path,
                                                                                                  monkeypatch):
    shards, reals = tiny_data
    cfg = make_config(**tiny_config(steps=4, holdout=8))
    real_loss = loop.micro_loss
    for calls_before_ctrl_c, kept in ((0, None), (1, 1)):
        calls = []

        def ctrl_c(*a, **k):
            if len(calls) == calls_before_ctrl_c:
                raise KeyboardInterrupt
            calls.append(1)
            return real_loss(*a, **k)

        monkeypatch.setattr(loop, "micro_loss", ctrl_c)
        out = tmp_path / f"run{calls_before_ctrl_c}"
        with pytest.raises(KeyboardInterrupt):
            loop.train([str(shards)], out, cfg, real=str(reals), progress=False)
        if kept is None:  # nothing done, nothing to resume: the same command starts afresh
            assert not (out / "checkpoint").exists() and not (out / "checkpoint.prev").exists()
        else:
            assert _step(out / "checkpoint") == kept
    monkeypatch.setattr(loop, "micro_loss", real_loss)
    assert loop.train([str(shards)], tmp_path / "run0", cfg, real=str(reals), progress=False).step == 4


@pytest.mark.parametrize("n, shown, more", [(8, 8, ""), (9, 8, " and 1 more"), (12, 8, " and 4 more")])
def test_the_nan_stop_names_at_most_eight_ids_and_counts_the_rest(tmp_path, n, shown, more):
    ids = [f"rec{i:05d}:g" for i in range(n)]
    err = loop._nan_stop(tmp_path, 3, ids, float("nan"), main=True)
    assert isinstance(err, DataError)
    assert f"the batch held {', '.join(ids[:shown])}{more} (all ids in" in str(err)
    assert json.loads((tmp_path / "nan_batch.json").read_text())["ids"] == ids


def test_undecodable_records_are_logged_once_each_and_past_the_share_stop_naming_the_first(tmp_path):
    log = MetricsLog(tmp_path)
    bad: dict[str, str] = {}
    loop._skip_bad({"step": 1, "skipped": ["r03: torn PNG", "r07: empty file"]}, bad, 40, 0.1, log)
    loop._skip_bad({"step": 2, "skipped": []}, bad, 40, 0.1, log)  # a batch without bad records logs nothing
    loop._skip_bad({"step": 3, "skipped": ["r07: empty file", "r11: not an image"]}, bad, 40, 0.1, log)
    loop._skip_bad({"step": 4, "skipped": ["r11: not an image"]}, bad, 40, 0.1, None)  # another rank: no log
    log.close()
    events = [e for e in read_log(tmp_path / "train_log.jsonl") if e.get("event") == "skipped"]
    assert [(e["step"], e["ids"], e["reasons"]) for e in events] == [
        (1, ["r03", "r07"], ["torn PNG", "empty file"]), (3, ["r11"], ["not an image"])]
    assert bad == {"r03": "torn PNG", "r07": "empty file", "r11": "not an image"}  # 3 of 40: within 0.1
    with pytest.raises(DataError) as err:
        loop._skip_bad({"step": 5, "skipped": ["r19: truncated"]}, bad, 30, 0.1, None)  # 4 of 30: past 0.1
    assert str(err.value).startswith("4 of 30 training records cannot be decoded (more than the max_bad_share 0.1), "
                                     "e.g. r03: torn PNG; their ids are in the metrics log")
