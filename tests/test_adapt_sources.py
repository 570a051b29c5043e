"""deepsift adapt with D3 parquet shards as the known data (plus a real folder, as eval takes them): the
known generators' images live as bytes in the shards, so collect records each by reference (its shard,
row and generation, never its bytes in JSON); embed, the fine-tune's replay and a resume after the
folder moved re-read them from the shards. The new generator's images are always files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from adaptkit import save_images, tiny_world
from deepsift.adapt.plan import STEPS, AdaptPlan
from deepsift.adapt.runner import run_adapt
from deepsift.cli import main
from deepsift.data.reader import read_parquet_file
from test_adapt_finetune import TRAIN, faint
from trainkit import make_dataset

KNOWN = ("up-nearest", "up-bilinear")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny base network; the known data as D3 shards (two generators) + a real folder; a new generator."""
    root = tiny_world(tmp_path_factory.mktemp("adapt-d3"), n_known=4)
    make_dataset(root / "d3", 16, per_shard=6, generators=KNOWN)
    save_images(root / "new", faint, 16, np.random.default_rng(3), groups=8)
    return root


def plan_for(world, out, **kw) -> AdaptPlan:
    kw = {"fine_tune_steps": 4, "fine_tune_epochs": 2, "fine_tune_lr": 1e-3, "train_config": TRAIN,
          "data": str(world / "d3" / "shards"), **kw}
    return AdaptPlan(model=str(world / "base"), generator="faint", images=str(world / "new"),
                     real=str(world / "d3" / "real"), out=str(out), bootstrap=20, workers=1, min_test_images=4, **kw)


def _step(out: Path, name: str) -> dict:
    return json.loads(next((out / "steps").glob(f"[0-9][0-9]-{name}.json")).read_text())


def _shard_bytes(world) -> dict[str, bytes]:
    """Every generated image of the shards by its sample id (``RECORD/genK``), read here independently."""
    out = {}
    for shard in sorted((world / "d3" / "shards").glob("*.parquet")):
        for rec in read_parquet_file(shard):
            out.update({f"{rec.id}/gen{k}": g.image for k, g in enumerate(rec.generations)})
    return out


@pytest.fixture(scope="module")
def by_cli(world):
    """deepsift adapt --data SHARDS --real DIR (heads refit only)."""
    out = world / "cli"
    rc = main(["adapt", "--model", str(world / "base"), "--data", str(world / "d3" / "shards"), "--real",
               str(world / "d3" / "real"), "--new", f"faint={world / 'new'}", "--out", str(out), "--bootstrap", "20",
               "--workers", "1", "--min-test-images", "4", "--fine-tune", "never"])
    assert rc == 0
    return out


def test_known_images_in_d3_shards_are_recorded_by_reference_never_by_their_bytes(world, by_cli):
    rows = _step(by_cli, "collect")["samples"]
    text = (by_cli / "steps" / "02-collect.json").read_text()
    assert "b'" not in text and "\\x" not in text
    fakes = [r for r in rows if r["label"] == 1 and r["generator"] in KNOWN]
    assert len(fakes) == 32 and {r["generator"] for r in fakes} == set(KNOWN)
    shards = {p.resolve() for p in (world / "d3" / "shards").glob("*.parquet")}
    images = _shard_bytes(world)
    for r in fakes:  # each reference names its shard, the row and the generation that hold its image
        recs = list(read_parquet_file(r["source"]))
        assert Path(r["source"]).resolve() in shards
        assert images[r["id"]] == recs[r["row"]].generations[r["gen"]].image
    reals = [r for r in rows if r["label"] == 0]
    new = [r for r in rows if r["generator"] == "faint"]
    assert len(reals) == 16 and len(new) == 16
    assert all(Path(r["source"]).is_file() and "row" not in r for r in reals + new)


def test_the_shard_images_are_embedded_and_measured(world, by_cli):
    embedded = _step(by_cli, "embed")
    assert embedded["errors"] == [] and embedded["n"] == 64
    emb = np.load(by_cli / "steps" / "embeddings.npy")
    assert np.isfinite(emb).all()
    before = _step(by_cli, "before")["figures"]
    assert set(before) == {*KNOWN, "faint"}
    assert all(before[g]["n_fake"] > 0 and before[g]["n_real"] > 0 for g in KNOWN)
    assert (by_cli / "model" / "lineage.json").is_file()


def test_the_embedding_of_a_shard_image_is_the_embedding_of_its_bytes(world, by_cli):
    from deepsift.model.detector import Detector

    rows = _step(by_cli, "collect")["samples"]
    emb = np.load(by_cli / "steps" / "embeddings.npy")
    images = _shard_bytes(world)
    det = Detector.load(str(world / "base"), classifier="linear", device="cpu", workers=1)
    picks = [i for i, r in enumerate(rows) if "row" in r][::7]
    direct = det.embed([images[rows[i]["id"]] for i in picks])
    assert np.allclose(emb[picks], direct, atol=1e-5)


def _run_move_resume(world, tmp_path, stop_after: str):
    """Run an always-fine-tune adaptation up to ``stop_after``, move its folder, resume it there; the new folder."""
    out, moved = tmp_path / "run", tmp_path / "moved"
    run_adapt(plan_for(world, out, fine_tune="always"), say=lambda _: None, stop_after=stop_after)
    shutil.move(str(out), str(moved))
    run_adapt(plan_for(world, moved, fine_tune="always"), resume=True, say=lambda _: None)
    return moved


def test_replay_re_reads_the_known_images_from_the_shards_and_a_moved_folder_resumes(world, tmp_path):
    moved = _run_move_resume(world, tmp_path, stop_after="embed")
    ft = _step(moved, "fine-tune")
    replay = ft["replay"]
    assert set(replay["images"]) == {*KNOWN, "faint"} and all(n > 0 for n in replay["images"].values())
    fit_ids = {r["id"] for r in _step(moved, "collect")["samples"] if r["side"] == "fit" and "row" in r}
    images = _shard_bytes(world)
    fit_bytes = {images[i] for i in fit_ids}
    replayed = {g.image for shard in sorted((moved / "steps" / "replay" / "shards").glob("*.parquet"))
                for rec in read_parquet_file(shard) for g in rec.generations if g.generator in KNOWN}
    assert replayed and replayed <= fit_bytes  # the known fakes replayed are the shards' own fitting images
    assert not (moved / "steps" / "replay" / "known").exists()
    assert _step(moved, "embed-2")["errors"] == []
    assert all(_step(moved, s) for s in STEPS) and (moved / "model" / "lineage.json").is_file()


def test_d3_shards_without_reals_are_a_one_line_error_before_any_work(world, tmp_path, capsys):
    rc = main(["adapt", "--model", str(world / "base"), "--data", str(world / "d3" / "shards"),
               "--new", f"faint={world / 'new'}", "--out", str(tmp_path / "o"), "--workers", "1"])
    err = capsys.readouterr().err
    assert rc != 0 and len(err.strip().splitlines()) == 1 and "real images" in err and "--real" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_one_shard_file_is_data_too_and_a_shard_changed_after_collect_is_a_clear_error(world, tmp_path):
    from deepsift.data.writer import write_shard
    from deepsift.exceptions import DataError

    shard = tmp_path / "known.parquet"
    shutil.copy(sorted((world / "d3" / "shards").glob("*.parquet"))[0], shard)
    plan = plan_for(world, tmp_path / "run", data=str(shard), fine_tune="never")
    run_adapt(plan, say=lambda _: None, stop_after="collect")
    rows = _step(tmp_path / "run", "collect")["samples"]
    assert {r["source"] for r in rows if "row" in r} == {str(shard)} and len([r for r in rows if "row" in r]) == 12
    records = list(read_parquet_file(shard))
    write_shard(records[:2], shard, n_generators=len(KNOWN))  # rows collected earlier are gone
    with pytest.raises(DataError, match="changed since") as err:
        run_adapt(plan, resume=True, say=lambda _: None)
    assert str(shard) in str(err.value)


def test_a_folder_moved_after_its_fine_tune_resumes_from_the_fine_tuned_weights_inside_it(world, tmp_path):
    moved = _run_move_resume(world, tmp_path, stop_after="fine-tune")
    assert _step(moved, "embed-2")["errors"] == []
    assert np.isfinite(np.load(moved / "steps" / "embeddings-2.npy")).all()
    written = _step(moved, "write-model")
    assert Path(written["model"]) == moved / "model" and (moved / "model" / "model.safetensors").is_file()
