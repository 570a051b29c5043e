"""Every baseline given the wrong model ends in one clear line (exit 1 for a bad model, 2 for bad usage)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from evalkit import tiny_model, write_class  # noqa: E402

from deepsift.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wrongmodel")
    write_class(root / "data" / "real", 3, False, 0)
    write_class(root / "data" / "fake", 3, True, 1)
    tiny_model(root / "code-vit")  # a ViT in the CoDE layout: a model, but not CLIP
    bert = root / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    for name in ("preprocessor_config.json", "model.safetensors"):
        (bert / name).write_bytes((root / "code-vit" / name).read_bytes())
    broken = root / "broken-clip"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "clip_vision_model", "hidden_size": 32}))
    (broken / "preprocessor_config.json").write_text("{}")
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    (root / "empty").mkdir()
    return root


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("model, says", [
    ("code-vit", "a vit model, not a CLIP model"),
    ("bert", "a bert model, not a CLIP model"),
    ("broken-clip", "cannot load the CLIP vision model"),
    ("empty", "not a model directory"),
])
def test_univfd_with_a_model_that_is_not_clip(folders: Path, tmp_path: Path, capsys, model: str, says: str) -> None:
    rc = main(["baseline", "train", "univfd", "--real", str(folders / "data" / "real"), "--fake", str(folders / "data" / "fake"),
               "--out", str(tmp_path / "run"), "--model", str(folders / model), "-q"])
    assert rc == 1
    assert says in _one_line(capsys)
    assert not (tmp_path / "run" / "baseline.json").exists()


def test_univfd_with_an_uncached_hub_id_offline(folders: Path, tmp_path: Path, capsys) -> None:
    rc = main(["baseline", "train", "univfd", "--real", str(folders / "data" / "real"), "--fake", str(folders / "data" / "fake"),
               "--out", str(tmp_path / "run"), "--model", "nobody/no-such-clip", "-q"])
    assert rc == 1 and "nobody/no-such-clip" in _one_line(capsys)


@pytest.mark.parametrize("name", ["frequency", "npr"])
def test_baselines_without_a_model_refuse_one(folders: Path, tmp_path: Path, capsys, name: str) -> None:
    rc = main(["baseline", "train", name, "--real", str(folders / "data" / "real"), "--fake", str(folders / "data" / "fake"),
               "--out", str(tmp_path / "run"), "--model", str(folders / "code-vit")])
    assert rc == 2 and f"--model does not apply to the {name} baseline" in _one_line(capsys)


@pytest.mark.parametrize("kind", ["frequency", "npr", "univfd"])
def test_a_model_folder_is_not_a_trained_baseline(folders: Path, capsys, kind: str) -> None:
    assert main(["baseline", "predict", str(folders / "code-vit"), str(folders / "data" / "real")]) == 1
    assert "not a saved baseline" in _one_line(capsys)
    assert main(["eval", "generators", str(folders / "data"), "--detector", f"{kind}:{folders / 'code-vit'}"]) == 1
    assert "not a saved baseline" in _one_line(capsys)
