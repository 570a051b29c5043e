"""NPR baseline: the residual, learning from scratch, seeding, persistence, per-file errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deepsift.evaluate.baselines import get_baseline, load_baseline
from deepsift.evaluate.baselines.npr import NPRNet, npr_residual
from deepsift.evaluate.baselines.synthetic import synthetic_image, write_synthetic_folders
from deepsift.exceptions import ModelError, UsageError

PARAMS = dict(crop_size=64, width=8, epochs=4, lr=3e-3, seed=0, batch_size=16)


def _files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.png"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("npr")
    return (write_synthetic_folders(root / "train", 40, 40, sizes=(64,), seed=0),
            write_synthetic_folders(root / "test", 20, 20, sizes=(64, 72), seed=1))


@pytest.fixture(scope="module")
def fitted(data):
    (real, fake), _ = data
    return get_baseline("npr", **PARAMS).fit(_files(real), _files(fake))


def test_npr_residual_vanishes_on_nearest_upsampled_images():
    rng = np.random.default_rng(0)
    fake = torch.from_numpy(synthetic_image(rng, 32, fake=True)).permute(2, 0, 1)[None].float()
    real = torch.from_numpy(synthetic_image(rng, 32, fake=False)).permute(2, 0, 1)[None].float()
    assert npr_residual(fake).abs().max() == 0
    assert npr_residual(real).abs().mean() > 1.0
    assert NPRNet(width=8)(torch.zeros(3, 3, 32, 32)).shape == (3,)


def test_npr_loss_decreases_and_held_out_accuracy_is_high(data, fitted):
    _, (real, fake) = data
    losses = fitted.train_info_["loss_per_epoch"]
    assert len(losses) == PARAMS["epochs"] and losses[-1] < 0.7 * losses[0]
    preds = fitted.predict(_files(real) + _files(fake))
    y = np.array([0] * 20 + [1] * 20)
    assert np.mean(np.array([p.label for p in preds]) == y) >= 0.85
    scores = np.array([p.score for p in preds])
    assert scores[y == 1].mean() > scores[y == 0].mean()
    assert all(p.head == "npr" and p.error is None for p in preds)


def test_npr_training_is_seeded(data):
    (real, fake), (test_real, _) = data
    small = {**PARAMS, "epochs": 1}
    runs = [get_baseline("npr", **small).fit(_files(real)[:16], _files(fake)[:16]) for _ in range(2)]
    other = get_baseline("npr", **{**small, "seed": 1}).fit(_files(real)[:16], _files(fake)[:16])
    probe = _files(test_real)[:4]
    assert runs[0].train_info_["loss_per_epoch"] == runs[1].train_info_["loss_per_epoch"]
    assert [p.score for p in runs[0].predict(probe)] == [p.score for p in runs[1].predict(probe)]
    assert [p.score for p in other.predict(probe)] != [p.score for p in runs[0].predict(probe)]


def test_npr_save_load_round_trip_gives_identical_scores(data, fitted, tmp_path):
    _, (real, fake) = data
    sources = _files(real)[:6] + _files(fake)[:6]
    out = fitted.save(tmp_path / "npr")
    loaded = load_baseline(out, batch_size=PARAMS["batch_size"])
    assert loaded.width == PARAMS["width"] and loaded.train_info_["loss_per_epoch"]
    assert [p.score for p in loaded.predict(sources)] == [p.score for p in fitted.predict(sources)]
    assert load_baseline(out, batch_size=5).batch_size == 5  # runtime options are not saved


def test_npr_scores_do_not_depend_on_batch_composition(data, fitted):
    _, (real, fake) = data
    sources = _files(real)[:3] + _files(fake)[:3]
    together = [p.score for p in fitted.predict(sources)]
    alone = [fitted.predict([s])[0].score for s in sources]
    assert np.allclose(together, alone, atol=1e-5)


def test_npr_bad_file_in_batch(data, fitted, tmp_path):
    _, (real, fake) = data
    bad = tmp_path / "truncated.png"
    bad.write_bytes(Path(_files(real)[0]).read_bytes()[:60])
    sources = [_files(real)[0], str(bad), _files(fake)[0]]
    preds = fitted.predict(sources)
    assert [p.source for p in preds] == sources
    assert preds[1].error and str(bad) in preds[1].error and preds[1].label is None
    assert preds[0].error is None and preds[2].error is None


def test_npr_bad_parameters_and_mismatched_weights(fitted, tmp_path):
    with pytest.raises(UsageError, match="crop_size"):
        get_baseline("npr", crop_size=63)
    with pytest.raises(UsageError, match="epochs"):
        get_baseline("npr", epochs=0)
    out = fitted.save(tmp_path / "npr")
    import json

    meta = json.loads((out / "baseline.json").read_text())
    meta["params"]["width"] = 16
    (out / "baseline.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="do not match"):
        load_baseline(out)


def test_npr_saved_form_records_everything_needed_to_retrain(data, tmp_path):
    # the training batch size shapes the weights (steps, schedule, shuffling) but is a runtime
    # option of predict: baseline.json must record the one training used, or a rerun differs
    import json

    (real, fake), (test_real, _) = data
    small = {**PARAMS, "epochs": 1, "batch_size": 4}
    first = get_baseline("npr", **small).fit(_files(real)[:12], _files(fake)[:12])
    meta = json.loads((first.save(tmp_path / "npr") / "baseline.json").read_text())
    assert meta["train"]["batch_size"] == 4
    again = get_baseline("npr", **meta["params"], batch_size=meta["train"]["batch_size"])
    again.fit(_files(real)[:12], _files(fake)[:12])
    probe = _files(test_real)[:4]
    assert [p.score for p in again.predict(probe)] == [p.score for p in first.predict(probe)]
    other = get_baseline("npr", **meta["params"]).fit(_files(real)[:12], _files(fake)[:12])  # default batch
    assert [p.score for p in other.predict(probe)] != [p.score for p in first.predict(probe)]
