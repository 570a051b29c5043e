"""Generator names travel with the records: data build stores them, and every reader matches them exactly.

Two generators built from the same model source (``a`` and ``b``) must stay two generators in
``data info``, ``data split --leave-out``, ``eval logo`` and the reports; for published D3 shards
(no ``generator_gen{k}`` column) the name is the ``model_gen{k}`` value.
"""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from data_factory import make_record
from deepsift.data.writer import write_shard
from evalkit import tiny_heads, tiny_model, write_class
from deepsift.cli import main
from deepsift.data.reader import read_d3
from deepsift.evaluate.datasets import load_eval_set


def spec(models, name: str) -> str:
    return f"{name}=t2i:{models.sd},steps=2,width=32,height=32"


@pytest.fixture(scope="module")
def built(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("names")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"thing {i}"}) + "\n" for i in range(8)))
    out = root / "d3"
    assert main(["data", "build", "--prompts", str(prompts), "--out", str(out), "-g", spec(models, "a"),
                 "-g", spec(models, "b"), "--threads", "1"]) == 0
    return root, out


def test_the_name_is_stored_beside_the_model_source(models, built):
    _, out = built
    recs = list(read_d3(out))
    assert [[g.generator for g in r.generations] for r in recs] == [["a", "b"]] * 8
    assert {g.model for r in recs for g in r.generations} == {str(models.sd)}  # one source, two generators
    shard = pq.read_table(next(out.glob("*.parquet")))
    assert shard.column("generator_gen0").to_pylist()[0] == "a" and shard.column("model_gen1").to_pylist()[0] == str(models.sd)


def test_data_info_lists_two_generators_of_one_model(models, built, capsys):
    _, out = built
    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"a: 8 images (model {models.sd}; sizes 32x32 8" in text and f"b: 8 images (model {models.sd};" in text


def test_split_leave_out_takes_the_name(built, tmp_path):
    _, out = built
    assert main(["data", "split", str(out), "--out", str(tmp_path / "s"), "--test-fraction", "0.5",
                 "--val-fraction", "0", "--leave-out", "a"]) == 0
    train, test = list(read_d3(tmp_path / "s" / "train")), list(read_d3(tmp_path / "s" / "test"))
    assert train and test
    assert {g.generator for r in train for g in r.generations} == {"b"}
    assert {g.generator for r in test for g in r.generations} == {"a"}


def test_eval_logo_and_its_report_use_the_names(built, tmp_path):
    root, out = built
    real = tmp_path / "real"
    write_class(real, 8, False, seed=3)
    assert load_eval_set(out, real=real).generators == ["a", "b"]
    model = tiny_model(tmp_path / "model")
    train = tmp_path / "train"
    write_class(train / "real", 6, False, seed=1)
    write_class(train / "fake", 6, True, seed=2)
    heads = tiny_heads(model, train, tmp_path / "heads")
    rep = tmp_path / "rep"
    assert main(["eval", "logo", str(out), "--real", str(real), "--model", str(model), "--heads", str(heads),
                 "--report", str(rep)]) == 0
    res = json.loads((rep / "metrics.json").read_text())["leave_one_out"]["linear"]
    assert set(res) == {"a", "b"}
    assert "| a | linear |" in (rep / "report.md").read_text()


def test_add_to_names_the_new_generator(models, built, tmp_path):
    _, out = built
    grown = tmp_path / "grown"
    assert main(["data", "build", "--add-to", str(out), "--out", str(grown), "-g", spec(models, "c")]) == 0
    recs = list(read_d3(grown))
    assert [g.generator for g in recs[0].generations] == ["a", "b", "c"]


def test_published_shards_name_generators_by_model(tmp_path):
    """A shard without generator_gen{k} (the published layout): the name is the model_gen{k} value."""
    recs = [make_record(i, 2) for i in range(3)]
    path = tmp_path / "d3-00000.parquet"
    write_shard(recs, path, n_generators=2, with_seed=False)
    assert "generator_gen0" not in pq.read_schema(path).names
    got = list(read_d3(path))
    assert [[g.generator for g in r.generations] for r in got] == [[g.model for g in r.generations] for r in recs]
