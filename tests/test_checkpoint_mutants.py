"""Checkpoint behaviour the crash tests leave open (found by mutation testing, scripts/mutation.sh checkpoint):
the best epoch's file read back, and a damaged state.json (cut, without a step, of another version) refused
in one line by both loaders."""
from __future__ import annotations

import pytest
import torch

from deepsift.exceptions import DataError
from deepsift.train.checkpoint import load_best, load_checkpoint, load_state, save_best, save_checkpoint


def _opt() -> dict:
    return {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
            "param_groups": [{"lr": 0.1, "params": [0]}]}


def test_the_best_file_gives_back_its_weights_step_and_accuracy_and_there_is_none_before_the_first_best(tmp_path):
    assert load_best(tmp_path) is None  # no epoch scored yet: keep best falls back to the last step's weights
    weights = {"w": torch.arange(6.0).view(2, 3), "b": torch.tensor([0.5, -1.5])}
    save_best(tmp_path, weights, 6, 0.8125)
    got, step, acc = load_best(tmp_path)
    assert (step, acc) == (6, 0.8125)
    assert set(got) == {"w", "b"} and all(torch.equal(got[k], weights[k]) for k in weights)
    save_best(tmp_path, {k: v + 1 for k, v in weights.items()}, 8, 0.875)  # a new best replaces it
    got, step, acc = load_best(tmp_path)
    assert (step, acc) == (8, 0.875) and torch.equal(got["w"], weights["w"] + 1)


@pytest.mark.parametrize("loader", [load_state, lambda p: load_checkpoint(p)[3]], ids=["load_state", "load_checkpoint"])
@pytest.mark.parametrize("damage", [b'{"version": 1, "ste', b'{"version": 1}', b'{"version": 2, "step": 4}', b"[1, 2]"],
                         ids=["cut", "no-step", "other-version", "not-an-object"])
def test_a_damaged_state_file_is_one_line_naming_the_previous_checkpoint(tmp_path, loader, damage):
    save_checkpoint(tmp_path, {"w": torch.ones(2)}, _opt(), {"step": 4})
    state = tmp_path / "checkpoint" / "state.json"
    assert loader(tmp_path)["step"] == 4
    state.write_bytes(damage)
    with pytest.raises(DataError) as err:
        loader(tmp_path)
    text = str(err.value)
    assert len(text.splitlines()) == 1 and f"{state}: corrupt or truncated checkpoint" in text
    assert f"is in {tmp_path / 'checkpoint.prev'})" in text
    assert state.read_bytes() == damage  # nothing changed on disk
