"""``deepsift train`` on bad input: one clear line, before any work, and nothing good is lost."""
from __future__ import annotations

import json
import os

import pytest
import torch

from deepsift.cli import main
from deepsift.data.writer import write_shard
from deepsift.exceptions import DataError
from deepsift.train.checkpoint import save_checkpoint
from trainkit import make_dataset, tiny_config, write_yaml


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("bad"), 24)


def _run(argv, capsys):
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


@pytest.mark.parametrize("content,key", [
    ({"batch_sizee": 4}, "batch_sizee"),
    ({"lr": "fast"}, "lr"),
    ({"steps": 2.5}, "steps"),
    ({"global_negatives": "yes"}, "global_negatives"),
])
def test_bad_config_names_the_key_before_any_work(tiny_data, tmp_path, capsys, content, key):
    shards, reals = tiny_data
    out = tmp_path / "out"
    rc, err = _run(["train", "--data", str(shards), "--real", str(reals), "--out", str(out),
                    "--config", str(write_yaml(tmp_path / "c.yaml", content))], capsys)
    assert rc == 2 and len(err) == 1 and repr(key) in err[0], err
    assert not out.exists()  # refused before any work


def test_empty_dataset(tmp_path, capsys):
    write_shard([], tmp_path / "empty.parquet", n_generators=2)
    rc, err = _run(["train", "--data", str(tmp_path / "empty.parquet"), "--out", str(tmp_path / "o")], capsys)
    assert rc == 1 and len(err) == 1 and "empty" in err[0], err


def test_one_class_only(tiny_data, tmp_path, capsys):
    shards, _ = tiny_data
    rc, err = _run(["train", "--data", str(shards), "--out", str(tmp_path / "o")], capsys)  # no real images
    assert rc == 1 and len(err) == 1 and "only one class" in err[0] and "24 record" in err[0], err


def test_unknown_leave_out_generator(tiny_data, tmp_path, capsys):
    shards, reals = tiny_data
    rc, err = _run(["train", "--data", str(shards), "--real", str(reals), "--out", str(tmp_path / "o"),
                    "--leave-out", "dalle9"], capsys)
    assert rc == 2 and len(err) == 1 and "up-nearest" in err[0], err
    assert "leave-out generator 'dalle9': no generator of that name here" in err[0]  # the same words as data split


@pytest.mark.parametrize("damage", ["truncate-model", "garbage-optimizer", "cut-state"])
def test_corrupt_checkpoint_on_resume_is_one_line_and_keeps_it(tiny_data, tmp_path, capsys, damage):
    shards, reals = tiny_data
    out = tmp_path / "run"
    assert main(["train", "--data", str(shards), "--real", str(reals), "--out", str(out), "--config",
                 str(write_yaml(tmp_path / "t.yaml", tiny_config(steps=2, holdout=4)))]) == 0
    ck = out / "checkpoint"
    target = {"truncate-model": ck / "model.safetensors", "garbage-optimizer": ck / "optimizer.safetensors",
              "cut-state": ck / "state.json"}[damage]
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2] if damage != "garbage-optimizer" else b"\x00garbage" * 50)
    before = {p.name: p.read_bytes() for p in ck.iterdir()}
    rc, err = _run(["train", "--resume", str(out), "--steps", "4"], capsys)
    assert rc == 1 and len(err) == 1 and target.name in err[0] and "corrupt" in err[0], err
    assert {p.name: p.read_bytes() for p in ck.iterdir()} == before  # nothing changed


def test_nan_loss_stops_with_the_step_and_the_batch(tiny_data, tmp_path, capsys):
    shards, reals = tiny_data
    out = tmp_path / "run"
    rc, err = _run(["train", "--data", str(shards), "--real", str(reals), "--out", str(out), "--config",
                    str(write_yaml(tmp_path / "t.yaml", tiny_config(steps=4, holdout=4, warmup_steps=0))),
                    "--lr", "1e30"], capsys)  # the first step throws the weights to infinity
    assert rc == 1 and len(err) == 1 and "loss is nan at step 1" in err[0], err
    saved = json.loads((out / "nan_batch.json").read_text())
    assert saved["step"] == 1 and len(saved["ids"]) == 4 and saved["ids"][0].split(":")[0] in err[0]


@pytest.fixture
def full_disk(small_disk):
    return small_disk("512k")


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(full_disk):
    weights = {"w": torch.arange(10_000, dtype=torch.float32)}  # 40 KB
    opt = {"state": {0: {"step": torch.tensor(1.0), "exp_avg": torch.ones(10_000)}}, "param_groups": [{"lr": 1.0, "params": [0]}]}
    save_checkpoint(full_disk, weights, opt, {"step": 1})
    before = {p.name: p.read_bytes() for p in (full_disk / "checkpoint").iterdir()}
    free = os.statvfs(full_disk).f_bavail * os.statvfs(full_disk).f_frsize
    with open(full_disk / "filler", "wb") as fh:  # leave less room than one checkpoint needs
        fh.write(b"\0" * max(0, free - 30_000))
    with pytest.raises(DataError, match="cannot write the checkpoint.*previous checkpoint is kept"):
        save_checkpoint(full_disk, {"w": weights["w"] + 1}, opt, {"step": 2})
    assert {p.name: p.read_bytes() for p in (full_disk / "checkpoint").iterdir()} == before
    assert sorted(p.name for p in full_disk.iterdir()) == ["checkpoint", "filler"]  # no temporary left


def test_disk_full_while_saving_a_new_best_keeps_the_previous_best(full_disk):
    from deepsift.train.checkpoint import load_best, save_best

    save_best(full_disk, {"w": torch.arange(10_000, dtype=torch.float32)}, 2, 0.75)
    before = (full_disk / "best.safetensors").read_bytes()
    free = os.statvfs(full_disk).f_bavail * os.statvfs(full_disk).f_frsize
    with open(full_disk / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - 20_000))
    with pytest.raises(DataError, match="cannot write the best epoch's weights.*previous best is kept"):
        save_best(full_disk, {"w": torch.ones(10_000)}, 4, 0.875)
    assert (full_disk / "best.safetensors").read_bytes() == before
    assert sorted(p.name for p in full_disk.iterdir()) == ["best.safetensors", "filler"]  # no temporary left
    weights, step, acc = load_best(full_disk)
    assert (step, acc) == (2, 0.75) and bool((weights["w"] == torch.arange(10_000)).all())


def test_a_corrupt_best_file_is_one_line_and_the_checkpoint_is_kept(tiny_data, tmp_path, capsys):
    shards, reals = tiny_data
    out = tmp_path / "run"
    assert main(["train", "--data", str(shards), "--real", str(reals), "--out", str(out), "--config",
                 str(write_yaml(tmp_path / "t.yaml", tiny_config(steps=2, holdout=4)))]) == 0
    best = out / "best.safetensors"
    best.write_bytes(best.read_bytes()[:100])
    rc, err = _run(["train", "--resume", str(out), "--steps", "3"], capsys)
    assert rc == 1 and len(err) == 1 and "best.safetensors: corrupt or truncated" in err[0] and "(keep: last)" in err[0]
    assert json.loads((out / "checkpoint/state.json").read_text())["step"] == 3  # the training done is kept
    assert _run(["train", "--resume", str(out), "--steps", "3", "--keep", "last"], capsys)[0] == 0
