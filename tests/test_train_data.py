"""The training data: D3 shards + a fetch-real folder, WebDataset tars, seeded batches independent of workers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from deepsift.cli import main
from deepsift.data.reader import read_d3
from deepsift.data.webdataset import export_webdataset
from deepsift.train.data import build_index
from deepsift.train.loader import StepBatches, make_loader
from trainkit import make_dataset, tiny_config, write_yaml


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """Tiny shards whose real folder is a fetch-real output (status.jsonl), two records never fetched."""
    root = tmp_path_factory.mktemp("fetched")
    shards, reals = make_dataset(root, 16)
    lines = []
    for i, p in enumerate(sorted(reals.iterdir())):
        if i < 2:
            lines.append({"id": p.stem, "status": "http_404"})
            p.unlink()
        else:
            lines.append({"id": p.stem, "status": "ok", "path": p.name})
    (reals / "status.jsonl").write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    return shards, reals


def test_fetch_real_folder_joins_by_id_and_counts_the_missing(fetched):
    shards, reals = fetched
    index = build_index([str(shards)], real=str(reals))
    assert len(index.records) == 14 and index.skipped["no real image"] == 2
    assert all(r.real[0] == "file" for r in index.records)
    assert index.generators == {"up-nearest": 16, "up-bilinear": 16}


def test_webdataset_tars_in_the_authors_layout_train(fetched, tmp_path):
    shards, reals = fetched
    wds = tmp_path / "wds"
    export_webdataset(read_d3(shards), wds, real_dir=reals, samples_per_shard=8, progress=False)
    index = build_index([str(wds)])
    assert len(index.records) == 14 and all(r.real[0] == "tar" for r in index.records)
    assert {g for r in index.records for g, _ in r.fakes} == {"gen_0", "gen_1"}
    assert main(["train", "--data", str(wds), "--out", str(tmp_path / "run"), "--config",
                 str(write_yaml(tmp_path / "t.yaml", tiny_config(steps=2, holdout=4)))]) == 0


def test_batches_depend_on_the_step_only_and_come_as_uint8(fetched):
    shards, reals = fetched
    index = build_index([str(shards)], real=str(reals))
    ds = StepBatches(index.files, index.records, 4, seed=5)
    one = [b for b in make_loader(ds, 0, 3, workers=1, pin_memory=False)]
    two = [b for b in make_loader(ds, 0, 3, workers=2, pin_memory=False)]
    assert [b["step"] for b in one] == [0, 1, 2]
    for a, b in zip(one, two):
        assert a["views"].dtype.is_floating_point is False and tuple(a["views"].shape) == (4, 8, 224, 224, 3)
        assert a["ids"] == b["ids"] and bool((a["views"] == b["views"]).all())
    assert not bool((one[0]["views"] == one[1]["views"]).all())
    # each record's fake is drawn among its generators, seeded: both generators appear over a few steps
    gens = {i.split(":")[1] for s in range(6) for i in ds[s]["ids"]}
    assert gens == {"up-nearest", "up-bilinear"}
    ids = [i.split(":")[0] for s in range(3) for i in ds[s]["ids"]]
    assert len(set(ids)) == len(ids) == 12  # one pass over 14 records: no repeats within it
    assert np.asarray(one[0]["views"]).dtype == np.uint8


def test_builder_output_with_a_prompt_file_of_reals_trains(models, tmp_path):
    """``data build`` from a JSONL whose rows name their real images, a random-weight VAE reconstructing them:
    the build folder alone is a training set (its build.json leads to the reals)."""
    from trainkit import real_image

    src = tmp_path / "src"
    src.mkdir()
    rows = []
    for i in range(12):
        real_image(i, 64).save(src / f"r{i}.png")
        rows.append({"id": f"r{i}", "prompt": "a scene", "image": f"r{i}.png"})
    (src / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    built = tmp_path / "built"
    assert main(["data", "build", "--prompts", str(src / "prompts.jsonl"), "--out", str(built), "--threads", "1",
                 "--chunk-size", "6", "-g", f"rec=vae:{models.vae}"]) == 0
    index = build_index([str(built)])
    assert len(index.records) == 12 and index.generators == {"rec": 12}
    assert all(r.real == ("file", str(src / f"{r.id}.png")) for r in index.records)
    assert main(["train", "--data", str(built), "--out", str(tmp_path / "run"), "--config",
                 str(write_yaml(tmp_path / "t.yaml", tiny_config(steps=2, holdout=4)))]) == 0


def test_init_fine_tunes_from_a_model_folder(fetched, tmp_path):
    shards, reals = fetched
    first = tmp_path / "first"
    common = ["--data", str(shards), "--real", str(reals), "--workers", "1", "--steps", "1", "--holdout", "4",
              "--batch-size", "4", "--precision", "fp32", "--warmup-steps", "0"]
    assert main(["train", *common, "--out", str(first), "--hidden-size", "48", "--num-hidden-layers", "1",
                 "--num-attention-heads", "2", "--intermediate-size", "32", "--patch-size", "32"]) == 0
    second = tmp_path / "second"
    assert main(["train", *common, "--out", str(second), "--init", str(first)]) == 0  # the shape comes from --init
    cfg = json.loads((second / "config.json").read_text())
    assert cfg["hidden_size"] == 48 and cfg["num_hidden_layers"] == 1
    from safetensors.torch import load_file

    a, b = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    assert a.keys() == b.keys() and any(not bool((a[k] == b[k]).all()) for k in a)  # trained further
