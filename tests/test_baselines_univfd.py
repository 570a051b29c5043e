"""UnivFD baseline on a tiny, randomly initialised CLIP saved in the hub layout and loaded by path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepsift.evaluate.baselines import get_baseline, load_baseline
from deepsift.evaluate.baselines.synthetic import write_synthetic_folders
from deepsift.evaluate.baselines.univfd import CLIPPreprocessing, load_clip
from deepsift.exceptions import ModelError, ModelNotFoundError

PREPROCESSOR = {
    "image_processor_type": "CLIPImageProcessor",
    "do_resize": True, "size": {"shortest_edge": 64}, "resample": 3,
    "do_center_crop": True, "crop_size": {"height": 64, "width": 64},
    "do_rescale": True, "rescale_factor": 1 / 255,
    "do_normalize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}


def _files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.png"))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A full CLIPModel checkpoint (text + vision towers, as openai/clip-vit-large-patch14 ships)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                         vocab_size=100, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(image_size=64, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4),
        projection_dim=24,
    )
    CLIPModel(cfg).save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("univfd")
    kw = dict(sizes=(64,), artefact="checkerboard")
    return (write_synthetic_folders(root / "train", 40, 40, seed=0, **kw),
            write_synthetic_folders(root / "test", 20, 20, seed=1, **kw))


@pytest.fixture(scope="module")
def fitted(clip_dir, data):
    (real, fake), _ = data
    return get_baseline("univfd", model=str(clip_dir), batch_size=16).fit(_files(real), _files(fake))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("size", [(64, 64), (90, 70), (50, 120), (40, 30)])
def test_preprocessing_matches_transformers_clip_processor(size):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    cfg = {k: v for k, v in PREPROCESSOR.items() if k != "image_processor_type"}
    ours = CLIPPreprocessing.from_config(cfg)
    theirs = CLIPImageProcessorPil(**cfg)
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
    expected = np.asarray(theirs(images=[image], return_tensors="np")["pixel_values"][0])
    got = ours(image)
    assert got.shape == expected.shape == (3, 64, 64)
    assert np.abs(got - expected).max() < 1e-5


def test_preprocessing_reads_old_style_int_sizes():
    prep = CLIPPreprocessing.from_config({"size": 32, "crop_size": 28, "do_normalize": False})
    out = prep(Image.new("RGB", (64, 48), (255, 0, 0)))
    assert out.shape == (3, 28, 28) and np.allclose(out[0], 1.0) and np.allclose(out[1:], 0.0)


def test_univfd_learns_the_artefact_from_frozen_features(data, fitted):
    _, (real, fake) = data
    preds = fitted.predict(_files(real) + _files(fake))
    y = np.array([0] * 20 + [1] * 20)
    assert np.mean(np.array([p.label for p in preds]) == y) >= 0.8
    assert all(p.head == "univfd" and p.error is None for p in preds)


def test_univfd_round_trip_refers_to_the_clip_folder(clip_dir, data, fitted, tmp_path):
    _, (real, fake) = data
    sources = _files(real)[:5] + _files(fake)[:5]
    out = fitted.save(tmp_path / "probe")
    meta = json.loads((out / "baseline.json").read_text())
    assert meta["params"]["model"] == str(clip_dir.resolve()) and meta["embedding_dim"] == 24
    assert (out / "weights.safetensors").stat().st_size < 10_000  # the probe only, no copy of CLIP
    loaded = load_baseline(out, batch_size=16)
    assert [p.score for p in loaded.predict(sources)] == [p.score for p in fitted.predict(sources)]


def test_univfd_bad_file_in_batch(data, fitted, tmp_path):
    _, (real, _) = data
    bad = tmp_path / "bad.webp"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WEBPjunk")
    preds = fitted.predict([str(bad), _files(real)[0], _files(real)[1]])
    assert preds[0].error and str(bad) in preds[0].error
    assert [p.error for p in preds[1:]] == [None, None]


def test_univfd_model_errors(clip_dir, tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a model directory"):
        load_clip(tmp_path)
    no_prep = tmp_path / "no-prep"
    no_prep.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_prep / name).write_bytes((clip_dir / name).read_bytes())
    with pytest.raises(ModelNotFoundError, match="preprocessor_config.json"):
        load_clip(no_prep)
    (no_prep / "preprocessor_config.json").write_text(json.dumps({**PREPROCESSOR, "size": {"weird": 3}}))
    with pytest.raises(ModelError, match="unsupported size"):
        load_clip(no_prep)
    with pytest.raises(ModelNotFoundError, match="hub could not be reached|not in the local"):
        get_baseline("univfd", model="nobody/no-such-clip").fit(["a.png"], ["b.png"])
