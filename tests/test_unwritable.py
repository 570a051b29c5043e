"""Unwritable outputs: one line, exit 1, checked before the expensive work, nothing half-written."""
from __future__ import annotations

import numpy as np
import pytest
from data_factory import make_shards
from fskit import read_only_folder

from deepsift.cli import main


@pytest.fixture
def readonly(tmp_path):
    """A folder nothing can be written in, holding one file that must survive."""
    with read_only_folder(tmp_path / "ro", {"keep.txt": "was here before"}) as folder:
        yield folder


def _one_line(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepsift: error: "), err
    for w in words:
        assert w in err[0], err[0]
    return err[0]


def _untouched(folder):
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


def test_heads_fit_checks_its_output_before_embedding(readonly, labelled_folders, code_model_dir, tmp_path, capsys,
                                                     monkeypatch):
    base = ["heads", "fit", "--real", str(labelled_folders["real"]), "--fake", str(labelled_folders["gen_a"])]
    # with a hub model that cannot be had (not cached, hub offline), the output is still what is reported:
    # it was checked first (a model folder that does not exist is bad usage, caught when the options are read)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main([*base, "--model", "nobody/no-such-model", "--out", str(readonly / "heads")]) == 1
    _one_line(capsys, f"cannot write to {readonly}")
    assert main([*base, "--model", "nobody/no-such-model", "--out", str(tmp_path / "heads")]) == 1
    _one_line(capsys, "nobody/no-such-model")  # the writable output passes; the model is what fails
    assert main([*base, "--model", str(code_model_dir), "--out", str(readonly / "heads")]) == 1
    _one_line(capsys, "cannot write")
    _untouched(readonly)
    # a folder holding other files is never replaced by heads
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"x")
    assert main([*base, "--model", str(code_model_dir), "--out", str(other)]) == 1
    _one_line(capsys, "not a heads folder")
    assert [p.name for p in other.iterdir()] == ["holiday.jpg"]


def test_fetch_real_into_a_read_only_folder(readonly, tmp_path, capsys):
    make_shards(tmp_path / "d3", 3, per_shard=3, n_gen=1)
    for out in (readonly, readonly / "real"):
        assert main(["data", "fetch-real", str(tmp_path / "d3"), "--out", str(out)]) == 1
        _one_line(capsys, "cannot write to", str(readonly))
    _untouched(readonly)


def test_split_into_a_read_only_folder(readonly, tmp_path, capsys):
    make_shards(tmp_path / "d3", 10, per_shard=5, n_gen=2)
    assert main(["data", "split", str(tmp_path / "d3"), "--out", str(readonly / "split")]) == 1
    _one_line(capsys, "cannot write to", str(readonly))
    _untouched(readonly)


@pytest.fixture
def score_files(tmp_path):
    rng = np.random.default_rng(0)
    labels, scores = tmp_path / "labels.csv", tmp_path / "scores.csv"
    y = rng.integers(0, 2, 40)
    labels.write_text("id,label\n" + "".join(f"i{i},{v}\n" for i, v in enumerate(y)))
    scores.write_text("id,score\n" + "".join(f"i{i},{v + rng.normal() * 0.5:.4f}\n" for i, v in enumerate(y)))
    return labels, scores


def test_eval_report_and_calibration_to_unwritable_places(readonly, score_files, capsys):
    labels, scores = score_files
    assert main(["eval", "scores", "--labels", str(labels), "--scores", str(scores),
                 "--report", str(readonly / "report")]) == 1
    _one_line(capsys, "cannot write to", str(readonly))
    assert main(["eval", "calibrate", "--labels", str(labels), "--scores", str(scores),
                 "--out", str(readonly / "cal.json")]) == 1
    _one_line(capsys, "cannot write to", str(readonly))
    _untouched(readonly)
    assert main(["eval", "calibrate", "--labels", str(labels), "--scores", str(scores),
                 "--out", str(readonly)]) == 1  # a folder where a file should be
    _one_line(capsys, "is a directory")


def test_detect_and_embed_to_unwritable_places(readonly, code_model_dir, labelled_folders, tmp_path, capsys):
    from deepsift.model.headset import save_headset
    from deepsift.model.heads import make_head

    rng = np.random.default_rng(0)
    save_headset({"linear": make_head("linear").fit(rng.normal(size=(20, 192)), np.r_[np.zeros(10), np.ones(10)])},
                 tmp_path / "heads")
    image = str(labelled_folders["real"] / "000.jpg")
    assert main(["embed", image, "--model", str(code_model_dir), "--out", str(readonly / "e.parquet")]) == 1
    _one_line(capsys, "cannot write", "e.parquet")
    assert main(["detect", image, "--model", str(code_model_dir), "--heads", str(tmp_path / "heads"),
                 "--out", str(readonly / "d.csv")]) == 1
    _one_line(capsys, "cannot write", "d.csv")
    _untouched(readonly)
