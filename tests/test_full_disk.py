"""A full disk: `detect --out` and `embed --out` fail with one clear line and leave nothing half-written.

The disk is real: a 64 KiB tmpfs mounted for the test (needs root, as in CI), then filled.
"""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from deepsift.cli import main
from deepsift.model.detector import Detector
from deepsift.model.headset import save_headset
from deepsift.model.heads import make_head


@pytest.fixture
def full_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        with open(mnt / "filler", "wb") as fh:  # leave one page free
            fh.write(b"\0" * (60 * 1024))
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_embed_on_a_full_disk(full_disk, code_model_dir, labelled_folders, capsys):
    out = full_disk / "emb.parquet"
    rc = main(["embed", str(labelled_folders["real"]), "--model", str(code_model_dir), "--out", str(out),
               "--batch-size", "4"])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and "emb.parquet" in err[0]
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # no partial or temporary file


def test_detect_on_a_full_disk(full_disk, code_model_dir, labelled_folders, tmp_path, capsys):
    det = Detector.load_backbone_only(str(code_model_dir))
    X = det.embed(sorted(map(str, labelled_folders["real"].iterdir()))[:4] +
                  sorted(map(str, labelled_folders["gen_a"].iterdir()))[:4])
    save_headset({"linear": make_head("linear").fit(X, np.r_[np.zeros(4), np.ones(4)])}, tmp_path / "h")
    out = full_disk / "verdicts.jsonl"
    rc = main(["detect", str(labelled_folders["real"]), str(labelled_folders["gen_a"]), "--model",
               str(code_model_dir), "--heads", str(tmp_path / "h"), "--format", "jsonl", "--out", str(out)])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and "No space left on device" in err[0]
    # what was flushed before the disk filled is complete JSON lines, nothing torn
    lines = out.read_text().splitlines() if out.exists() else []
    for line in lines[:-1]:
        json.loads(line)
