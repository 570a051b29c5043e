"""The train checkpoint and the embeddings file follow the user's umask, like every other output."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from deepsift.model.embeddings import EmbeddingWriter
from deepsift.train.checkpoint import save_best, save_checkpoint


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _weights() -> dict[str, torch.Tensor]:
    return {"w": torch.ones(3, 2), "b": torch.arange(4.0)}


def test_checkpoint_folder_and_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    opt = {"state": {0: {"step": torch.tensor(1.0), "exp_avg": torch.ones(3)}},
           "param_groups": [{"lr": 0.1, "params": [0]}]}
    for step in (1, 2):  # the second write moves the first to checkpoint.prev
        final = save_checkpoint(tmp_path, _weights(), opt, {"step": step})
    for folder in (final, tmp_path / "checkpoint.prev"):
        assert _mode(folder) == 0o777 & ~umask, folder
        assert {f.name: _mode(f) for f in folder.iterdir()} == {f.name: 0o666 & ~umask for f in folder.iterdir()}
    best = save_best(tmp_path, _weights(), step=2, accuracy=0.9)
    assert _mode(best) == 0o666 & ~umask


def test_embeddings_file_follows_the_umask_while_written_and_after(tmp_path: Path, umask: int) -> None:
    out = tmp_path / "emb.parquet"
    with EmbeddingWriter(out, dim=4) as w:
        items = [SimpleNamespace(source=s, row=i, error=None) for i, s in enumerate(["a.png", "b.png"])]
        w.write_batch(items, np.ones((2, 4), np.float32))
        assert _mode(w.tmp) == 0o666 & ~umask  # the temporary file, too (another user may watch it grow)
    assert _mode(out) == 0o666 & ~umask


def test_heads_and_backbone_weights_follow_the_umask(tmp_path: Path, umask: int, code_model_dir) -> None:
    """safetensors writes its files 0600; a saved head set and a saved backbone get the user's umask instead."""
    from deepsift.model.backbone import load_backbone, save_backbone
    from deepsift.model.headset import save_headset
    from deepsift.model.heads import make_head

    x = np.random.default_rng(0).normal(size=(8, 4))
    save_headset({"linear": make_head("linear").fit(x, np.r_[np.zeros(4), np.ones(4)])}, tmp_path / "heads")
    files = [p for p in (tmp_path / "heads").rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    assert {p.name: _mode(p) for p in files} == {p.name: 0o666 & ~umask for p in files}
    out = save_backbone(load_backbone(code_model_dir), tmp_path / "model")
    assert {p.name: _mode(p) for p in out.iterdir()} == {p.name: 0o666 & ~umask for p in out.iterdir()}
