"""Heads know the backbone they were fitted on (a content hash of its weights): used on another, they are refused."""
from __future__ import annotations

import json

import pytest

from deepsift.cli import main
from deepsift.exceptions import ModelError
from deepsift.model.backbone import create_backbone, load_backbone, save_backbone, weights_fingerprint
from deepsift.model.detector import Detector


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory):
    """A second CoDE-layout model: same architecture, other weights."""
    out = tmp_path_factory.mktemp("other-model")
    save_backbone(create_backbone(seed=1), out)
    return out


@pytest.fixture(scope="module")
def heads_of_first(code_model_dir, labelled_folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("heads") / "h"
    rc = main(["heads", "fit", "--real", str(labelled_folders["real"]), "--fake", str(labelled_folders["gen_a"]),
               "--model", str(code_model_dir), "--out", str(out), "--classifier", "linear"])
    assert rc == 0
    return out


def test_the_fingerprint_is_the_weights_not_the_path(code_model_dir, other_model_dir, tmp_path):
    a = weights_fingerprint(load_backbone(code_model_dir))
    assert a == weights_fingerprint(create_backbone(seed=0))  # same weights, built in memory: same hash
    assert a != weights_fingerprint(load_backbone(other_model_dir))
    copy = tmp_path / "copy"
    save_backbone(load_backbone(code_model_dir), copy)  # another path, same weights
    assert weights_fingerprint(load_backbone(copy)) == a


def test_heads_record_their_backbone_and_load_with_it(code_model_dir, heads_of_first):
    meta = json.loads((heads_of_first / "heads.json").read_text())
    assert meta["backbone_sha256"] == weights_fingerprint(load_backbone(code_model_dir))
    det = Detector.load(code_model_dir, heads=heads_of_first)
    assert det.fingerprint == meta["backbone_sha256"]


def test_heads_of_another_backbone_are_refused_in_one_line(other_model_dir, heads_of_first, labelled_folders, capsys):
    with pytest.raises(ModelError, match="fitted on another backbone"):
        Detector.load(other_model_dir, heads=heads_of_first)
    img = str(labelled_folders["real"] / "000.jpg")
    rc = main(["detect", img, "--model", str(other_model_dir), "--heads", str(heads_of_first)])
    err = capsys.readouterr().err
    assert rc == 1 and "fitted on another backbone" in err and "force-heads" in err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1
    rc = main(["detect", img, "--model", str(other_model_dir), "--heads", str(heads_of_first), "--force-heads",
               "--format", "jsonl"])
    assert rc == 0


def test_heads_without_a_fingerprint_still_load(code_model_dir, other_model_dir, heads_of_first, tmp_path):
    import shutil

    old = tmp_path / "old-heads"
    shutil.copytree(heads_of_first, old)
    meta = json.loads((old / "heads.json").read_text())
    meta.pop("backbone_sha256")
    (old / "heads.json").write_text(json.dumps(meta))
    assert Detector.load(other_model_dir, heads=old).heads  # written before fingerprints existed: as before
