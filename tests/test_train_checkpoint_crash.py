"""A checkpoint write killed at any point leaves a folder that resumes (a real process killed with os._exit)."""
from __future__ import annotations

import multiprocessing
import os
import shutil

import pytest
import torch

import deepsift.train.checkpoint as ck
from deepsift.exceptions import DataError, UsageError
from deepsift.train.checkpoint import load_checkpoint, save_checkpoint

KILLED = 17


def _weights(step: int) -> dict[str, torch.Tensor]:
    return {"w": torch.full((3, 2), float(step)), "b": torch.arange(4.0) + step}


def _opt() -> dict:
    return {"state": {0: {"step": torch.tensor(1.0), "exp_avg": torch.ones(3)}},
            "param_groups": [{"lr": 0.1, "params": [0]}]}


def _killed_write(out: str, kill_at: int, mid_rmtree: bool) -> None:
    """Write checkpoint step 2, the process dying before file-system operation number ``kill_at``."""
    done = [0]

    def hook(fn):
        def wrapped(*a, **k):
            if done[0] == kill_at:
                if mid_rmtree and fn is shutil.rmtree:  # die halfway through deleting checkpoint.prev
                    os.remove(os.path.join(a[0], "model.safetensors"))
                os._exit(KILLED)
            done[0] += 1
            return fn(*a, **k)
        return wrapped

    ck.os.replace = hook(os.replace)
    ck.shutil.rmtree = hook(shutil.rmtree)
    ck._fsync_dir = hook(ck._fsync_dir)
    save_checkpoint(ck.Path(out), _weights(2), _opt(), {"step": 2})
    os._exit(0)


def _run(out, kill_at: int, mid_rmtree: bool = False) -> int:
    proc = multiprocessing.get_context("fork").Process(target=_killed_write, args=(str(out), kill_at, mid_rmtree))
    proc.start()
    proc.join(60)
    return proc.exitcode


@pytest.mark.parametrize("mid_rmtree", [False, True])
def test_a_write_killed_at_any_point_leaves_a_checkpoint_that_resumes(tmp_path, mid_rmtree):
    points = 0
    for kill_at in range(20):
        out = tmp_path / f"k{kill_at}"
        out.mkdir()
        save_checkpoint(out, _weights(0), _opt(), {"step": 0})
        save_checkpoint(out, _weights(1), _opt(), {"step": 1})  # checkpoint/ (step 1) and checkpoint.prev/ (step 0)
        code = _run(out, kill_at, mid_rmtree)
        if code == 0:
            break  # the write finished: every operation before it was a crash point
        assert code == KILLED
        points += 1
        model, _, _, state = load_checkpoint(out)  # resumes, from the newest complete checkpoint
        assert state["step"] in (1, 2), (kill_at, state)
        assert torch.equal(model["w"], _weights(state["step"])["w"])
        save_checkpoint(out, _weights(3), _opt(), {"step": 3})  # and the run goes on writing
        assert load_checkpoint(out)[3]["step"] == 3
        assert not list(out.glob(".checkpoint.*.tmp"))  # the killed write's leftovers are gone
        assert load_checkpoint(out / "checkpoint.prev")[3]["step"] in (1, 2)
    assert points >= 5, points  # fsyncs, rmtree of prev, both renames, the final fsync


def test_between_the_renames_the_folder_resumes_from_prev_and_is_not_taken_for_a_new_run(tmp_path):
    from deepsift.train.config import make_config
    from deepsift.train.loop import train

    out = tmp_path / "run"
    out.mkdir()
    save_checkpoint(out, _weights(0), _opt(), {"step": 0})
    save_checkpoint(out, _weights(1), _opt(), {"step": 1})
    shutil.rmtree(out / "checkpoint.prev")
    os.replace(out / "checkpoint", out / "checkpoint.prev")  # the state a kill between the renames leaves
    assert load_checkpoint(out)[3]["step"] == 1
    with pytest.raises(UsageError, match="holds a training run: resume it"):
        train(["unused"], out, make_config(steps=1))
    shutil.rmtree(out / "checkpoint.prev")
    with pytest.raises(DataError, match="no checkpoint to resume from"):
        load_checkpoint(out)
