"""``deepsift train``: the model folder it writes, exact resume, the log, the plot."""
from __future__ import annotations

import json

import pytest

from deepsift.cli import main
from deepsift.train.metrics import read_log
from trainkit import make_dataset, tiny_config, write_yaml


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("tdata"), 40)


def _losses(out):
    return {e["step"]: e["loss"] for e in read_log(out / "train_log.jsonl") if "loss" in e}


def test_train_writes_a_model_folder_that_detect_loads(tiny_data, tmp_path, capsys):
    shards, reals = tiny_data
    out = tmp_path / "run"
    cfg = write_yaml(tmp_path / "train.yaml", tiny_config(steps=100))
    assert main(["train", "--data", str(shards), "--real", str(reals), "--out", str(out), "--config", str(cfg),
                 "--steps", "4", "--batch-size", "4", "--workers", "1"]) == 0  # flags win over the file
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "heads/heads.json",
                 "train_log.jsonl", "train_plot.png", "checkpoint/state.json", "checkpoint/model.safetensors"):
        assert (out / name).is_file(), name
    losses = _losses(out)
    assert sorted(losses) == [1, 2, 3, 4]
    accs = [e for e in read_log(out / "train_log.jsonl") if "head_accuracy" in e]
    assert [e["step"] for e in accs] == [2, 4]  # one head refit per epoch (2 steps each)
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 32
    capsys.readouterr()
    img = sorted(reals.iterdir())[0]
    assert main(["detect", str(img), "--model", str(out), "--format", "jsonl"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert row["error"] is None and 0.0 <= row["probability"] <= 1.0 and row["head"] == "linear"
    _assert_tensorboard_matches_the_log(out, losses)


def _assert_tensorboard_matches_the_log(out, losses):
    """TensorBoard (a test dependency) holds the same loss per step as the JSONL log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert {"loss", "head_accuracy", "lr"} <= set(acc.Tags()["scalars"])
    got = {e.step: e.value for e in acc.Scalars("loss")}
    assert sorted(got) == sorted(losses)
    assert all(abs(got[k] - losses[k]) <= 1e-6 * max(1.0, abs(losses[k])) for k in got)


def test_resume_mid_epoch_gives_the_same_losses_step_by_step(tiny_data, tmp_path):
    shards, reals = tiny_data
    common = ["--data", str(shards), "--real", str(reals), "--config",
              str(write_yaml(tmp_path / "t.yaml", tiny_config(steps_per_epoch=4, schedule_steps=7, aug_max_ops=2)))]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", *common, "--out", str(full), "--steps", "7"]) == 0
    assert main(["train", *common, "--out", str(part), "--steps", "3"]) == 0  # stops mid-epoch 1
    assert json.loads((part / "checkpoint/state.json").read_text())["step"] == 3
    assert main(["train", "--resume", str(part), "--steps", "7", "--workers", "2"]) == 0  # other worker count
    a, b = _losses(full), _losses(part)
    assert sorted(a) == sorted(b) == list(range(1, 8))
    for step in a:
        assert a[step] == b[step], (step, a[step], b[step])
    from safetensors.torch import load_file

    wa, wb = load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert all(bool((wa[k] == wb[k]).all()) for k in wa)


def test_a_new_run_into_a_run_folder_is_refused(tiny_data, tmp_path, capsys):
    shards, reals = tiny_data
    out = tmp_path / "run"
    argv = ["train", "--data", str(shards), "--real", str(reals), "--out", str(out), "--config",
            str(write_yaml(tmp_path / "t.yaml", tiny_config(steps=1)))]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    assert "holds a training run" in capsys.readouterr().err


@pytest.mark.parametrize("keep", ["best", "last"])
def test_the_model_folder_holds_the_best_epoch_s_weights_unless_told_to_keep_the_last(tiny_data, tmp_path, capsys,
                                                                                     monkeypatch, keep):
    import deepsift.train.probe as probe
    from safetensors import safe_open
    from safetensors.torch import load_file

    from deepsift.model.backbone import load_backbone

    scores = iter([0.75, 0.625, 0.5])  # the held-out head gets worse after the first epoch
    monkeypatch.setattr(probe, "probe_accuracy", lambda *a, **k: next(scores))
    shards, reals = tiny_data
    out = tmp_path / keep
    capsys.readouterr()
    assert main(["train", "--data", str(shards), "--real", str(reals), "--out", str(out), "--config",
                 str(write_yaml(tmp_path / "t.yaml", tiny_config(steps=6))), "--keep", keep]) == 0
    said = capsys.readouterr().err
    with safe_open(str(out / "best.safetensors"), framework="pt") as fh:
        assert fh.metadata() == {"step": "2", "head_accuracy": "0.75"}
    best, last = load_file(str(out / "best.safetensors")), load_file(str(out / "checkpoint/model.safetensors"))
    model = load_backbone(str(out)).state_dict()  # the published layout names the tensors its own way
    assert any(not bool((best[k] == last[k]).all()) for k in best)  # four more steps changed the weights
    kept = best if keep == "best" else last
    assert set(model) == set(kept) and all(bool((model[k] == kept[k]).all()) for k in model)
    end = [e for e in read_log(out / "train_log.jsonl") if e.get("event") == "end"][0]
    assert end["kept_step"] == (2 if keep == "best" else 6)
    assert ("the best epoch's (step 2, held-out head accuracy 0.750" in said) == (keep == "best")
    assert ("the last step's (6; held-out head accuracy 0.500; keep: last)" in said) == (keep == "last")


def test_keep_takes_best_or_last_only(tiny_data, tmp_path, capsys):
    shards, reals = tiny_data
    assert main(["train", "--data", str(shards), "--out", str(tmp_path / "x"), "--keep", "first"]) == 2
    assert "invalid choice: 'first'" in capsys.readouterr().err
    cfg = write_yaml(tmp_path / "t.yaml", tiny_config(keep="middle"))
    assert main(["train", "--data", str(shards), "--out", str(tmp_path / "y"), "--config", str(cfg)]) == 2
    assert "config key 'keep' must be one of best, last, got 'middle'" in capsys.readouterr().err


def test_leave_out_trains_without_the_generator_and_evaluates_on_it(tiny_data, tmp_path, capsys):
    shards, reals = tiny_data
    out = tmp_path / "logo"
    capsys.readouterr()
    assert main(["train", "--data", str(shards), "--real", str(reals), "--out", str(out), "--config",
                 str(write_yaml(tmp_path / "t.yaml", tiny_config(steps=2))), "--leave-out", "up-bilinear"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("up-bilinear (left out): auroc" in ln for ln in lines), lines
    assert any("up-nearest (seen): auroc" in ln for ln in lines), lines
    assert (out / "leave-out-report" / "report.html").is_file()
    metrics = json.loads((out / "leave-out-report" / "metrics.json").read_text())
    gens = set(metrics["per_generator"]["CoDE/linear"]["all"])
    assert {"up-bilinear", "up-nearest", "all"} <= gens
    from deepsift.train.data import build_index

    index = build_index([str(shards)], real=str(reals), leave_out=["up-bilinear"])
    assert {g for r in index.records for g, _ in r.fakes} == {"up-nearest"}  # training never sees it
    assert len(index.left_out) == 40 and read_log(out / "train_log.jsonl")[0]["config"]["leave_out"] == ["up-bilinear"]
    # the model card: held out vs seen, as the heads and the report say, with the report's figures
    from deepsift.model.card import head_generators, read_card

    meta, body = read_card(out)
    assert meta["generators_held_out"] == ["up-bilinear"] and meta["generators_seen"] == head_generators(out)
    assert "up-bilinear" not in meta["generators_seen"]
    card_auroc = {r["dataset"]["type"]: r["metrics"][0]["value"] for r in meta["model-index"][0]["results"]}
    report = metrics["per_generator"]["CoDE/linear"]["all"]
    assert card_auroc == {g: report[g]["metrics"]["auroc"]["value"] for g in report if g != "all"}
    assert main(["model", "info", str(out)]) == 0
    assert "generators held out: up-bilinear" in capsys.readouterr().out
