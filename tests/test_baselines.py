"""Baselines: registry, persistence, per-file errors, and the frequency baseline learning."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepsift.evaluate.baselines import BASELINES, get_baseline, load_baseline
from deepsift.evaluate.baselines.frequency import dct_block_statistics, frequency_features, radial_log_spectrum
from deepsift.evaluate.baselines.probe import LogisticProbe
from deepsift.evaluate.baselines.synthetic import natural_texture, synthetic_image, write_synthetic_folders
from deepsift.exceptions import DataError, ModelError, ModelNotFoundError, NotFittedError, UsageError
from deepsift.model.detector import Prediction


def _files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.png"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Train and held-out test folders, fakes up-sampled 2x nearest (sizes 64-80 px)."""
    root = tmp_path_factory.mktemp("freq")
    train = write_synthetic_folders(root / "train", 50, 50, seed=0)
    test = write_synthetic_folders(root / "test", 25, 25, seed=1)
    return train, test


@pytest.fixture(scope="module")
def fitted(data):
    (real, fake), _ = data
    return get_baseline("frequency", crop_size=64).fit(_files(real), _files(fake))


def _accuracy(preds: list[Prediction], n_real: int) -> float:
    y = np.array([0] * n_real + [1] * (len(preds) - n_real))
    return float(np.mean(np.array([p.label for p in preds]) == y))


def test_registry_lists_the_three_baselines():
    assert set(BASELINES) == {"frequency", "npr", "univfd"}
    assert isinstance(get_baseline("npr", epochs=2), BASELINES["npr"])
    with pytest.raises(UsageError, match="unknown baseline 'nope'.*frequency"):
        get_baseline("nope")
    with pytest.raises(UsageError, match="epochs"):
        get_baseline("frequency", epochs=3)


def test_frequency_features_see_upsampling():
    rng = np.random.default_rng(3)
    real = synthetic_image(rng, 64, fake=False)
    fake = synthetic_image(rng, 64, fake=True)
    assert frequency_features(real, 64).shape == (64 + 128,)
    # nearest 2x up-sampling removes energy near Nyquist: the outer rings of the spectrum drop
    assert radial_log_spectrum(fake.mean(-1))[-8:].mean() < radial_log_spectrum(real.mean(-1))[-8:].mean() - 1.0
    # 2x2 constant blocks leave the highest DCT frequency of each 8x8 block nearly empty
    assert dct_block_statistics(fake.mean(-1))[63] < dct_block_statistics(real.mean(-1))[63]
    # a crop larger than the image uses the whole image (no padding artefacts)
    assert np.allclose(frequency_features(real, 224), frequency_features(real, 64))


def test_frequency_baseline_learns_and_generalises(data, fitted):
    _, (real, fake) = data
    preds = fitted.predict(_files(real) + _files(fake))
    assert all(isinstance(p, Prediction) and p.error is None and p.head == "frequency" for p in preds)
    assert _accuracy(preds, 25) >= 0.9
    assert all(0.0 <= p.probability <= 1.0 for p in preds)
    assert all((p.probability >= 0.5) == (p.label == 1) for p in preds)
    assert fitted.train_info_["n_real"] == 50 and fitted.train_info_["n_skipped"] == 0


def test_frequency_stays_near_chance_without_an_artefact(tmp_path):
    """Control: with labels that carry no artefact the held-out accuracy stays near chance."""
    rng = np.random.default_rng(5)
    from PIL import Image

    for split, n in (("train", 40), ("test", 40)):
        for cls in ("a", "b"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(n // 2):
                Image.fromarray(natural_texture(rng, 64, 64)).save(d / f"{i}.png")
    det = get_baseline("frequency", crop_size=64).fit(_files(tmp_path / "train/a"), _files(tmp_path / "train/b"))
    acc = _accuracy(det.predict(_files(tmp_path / "test/a") + _files(tmp_path / "test/b")), 20)
    assert 0.2 <= acc <= 0.8


def test_save_load_round_trip_gives_identical_scores(data, fitted, tmp_path):
    _, (real, fake) = data
    sources = _files(real)[:5] + _files(fake)[:5]
    before = fitted.predict(sources)
    out = fitted.save(tmp_path / "freq")
    meta = json.loads((out / "baseline.json").read_text())
    assert meta["baseline"] == "frequency" and meta["params"]["crop_size"] == 64
    assert not list(out.glob("*.pkl")) and (out / "weights.safetensors").is_file()
    after = load_baseline(out).predict(sources)
    assert [p.score for p in before] == [p.score for p in after]
    assert [p.label for p in before] == [p.label for p in after]


def test_bad_file_gets_an_error_prediction_and_the_rest_are_scored(data, fitted, tmp_path):
    _, (real, fake) = data
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    tiny = tmp_path / "tiny.png"
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tiny)
    sources = [_files(real)[0], str(broken), str(tmp_path / "missing.png"), _files(fake)[0], str(empty), str(tiny)]
    preds = fitted.predict(sources)
    assert [p.source for p in preds] == sources
    errors = {p.source: p.error for p in preds if p.error}
    assert set(errors) == {str(broken), str(tmp_path / "missing.png"), str(empty), str(tiny)}
    assert all(src in msg for src, msg in errors.items())  # each message names its file
    assert "4x4" in errors[str(tiny)]
    good = [p for p in preds if p.error is None]
    assert [p.source for p in good] == [sources[0], sources[3]]
    assert all(p.label in (0, 1) and p.score is not None for p in good)
    assert all(p.label is None and p.score is None and p.probability is None for p in preds if p.error)


def test_baselines_read_through_the_detector_engine_with_its_error_wording(data, fitted, code_model_dir, tmp_path,
                                                                           monkeypatch):
    """The same bad inputs get the same error text from a baseline as from the CoDE detector."""
    import deepsift.model.engine as engine
    from deepsift.model.detector import Detector

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    sources = [str(broken), str(empty), str(tmp_path / "missing.png"), b"", b"\x00 not an image"]
    base_errors = [p.error for p in fitted.predict(sources)]
    code_errors = [e for _, _, e in Detector.load_backbone_only(str(code_model_dir)).embed_iter(sources)]
    assert base_errors == code_errors and all(base_errors)
    assert base_errors[3].startswith("<bytes 3>: ")  # every per-input error names its input
    calls = []  # and the baseline's decoding runs in the engine (with its preprocessor), not a copy of it
    real_load = engine.load_pixels
    monkeypatch.setattr(engine, "load_pixels", lambda *a, **k: calls.append(a[1]) or real_load(*a, **k))
    _, (real, _) = data
    fitted.predict(_files(real)[:3])
    assert len(calls) == 3 and all(callable(mode) for mode in calls)


def test_training_skips_unreadable_images_and_lists_them(data, tmp_path, capsys):
    (real, fake), _ = data
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    det = get_baseline("frequency", crop_size=64).fit(_files(real)[:10] + [str(bad)], _files(fake)[:10])
    assert det.train_info_["n_skipped"] == 1 and str(bad) in det.train_info_["skipped"][0]
    assert det.train_info_["n_real"] == 10
    assert "skipped 1 unreadable" in capsys.readouterr().err


def test_training_needs_both_classes(data, tmp_path):
    (real, _), _ = data
    with pytest.raises(DataError, match="0 fake"):
        get_baseline("frequency").fit(_files(real), [])
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    with pytest.raises(DataError, match="one class is empty"):
        get_baseline("frequency").fit(_files(real)[:3], [str(bad)])


def test_unfitted_and_bad_saved_folders(tmp_path, fitted):
    with pytest.raises(NotFittedError):
        get_baseline("frequency").predict(["x.png"])
    with pytest.raises(ModelNotFoundError, match="no baseline.json"):
        load_baseline(tmp_path)
    out = fitted.save(tmp_path / "saved")
    meta = json.loads((out / "baseline.json").read_text())
    (out / "baseline.json").write_text(json.dumps({**meta, "baseline": "mystery"}))
    with pytest.raises(ModelError, match="unknown baseline 'mystery'"):
        load_baseline(out)
    (out / "baseline.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ModelError, match="format_version 99"):
        load_baseline(out)
    (out / "baseline.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        load_baseline(out)
    (out / "baseline.json").write_text(json.dumps(meta))
    (out / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="weights.safetensors"):
        load_baseline(out)
    (out / "weights.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="no weights.safetensors"):
        load_baseline(out)


def test_logistic_probe_state_round_trip_and_shape_check():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 5)) * [1, 10, 100, 0.1, 1]
    y = (X[:, 0] + X[:, 2] / 100 > 0).astype(int)
    probe = LogisticProbe().fit(X, y)
    assert ((probe.decision_function(X) > 0) == y).mean() > 0.9
    again = LogisticProbe.from_state(probe.state())
    assert np.array_equal(again.decision_function(X), probe.decision_function(X))
    with pytest.raises(ModelError, match=r"\(N, 5\)"):
        probe.decision_function(X[:, :4])
    with pytest.raises(ModelError, match="lack"):
        LogisticProbe.from_state({})
