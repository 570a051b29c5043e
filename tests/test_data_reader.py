"""Reading D3 and ELSA1M shards: files, folders, the datasets path, and every bad-input case."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_factory import encoded_image, make_record, make_shards

from deepsift.data.reader import read_d3
from deepsift.data.schema import d3_arrow_schema, record_to_row
from deepsift.data.writer import write_shard
from deepsift.exceptions import DataError, SchemaError


def test_folder_of_shards_in_order_with_lazy_images(tmp_path):
    records = make_shards(tmp_path / "d3", 7, per_shard=3)
    got = list(read_d3(tmp_path / "d3", batch_rows=2))
    assert got == records
    # image bytes are kept as stored (not decoded); decode on demand
    assert got[4].generations[3].image == records[4].generations[3].image
    assert got[4].generations[3].decode().size == (27, 16)
    slim = list(read_d3(tmp_path / "d3", images=False))
    assert [r.id for r in slim] == [r.id for r in records]
    assert all(g.image is None and g.model for r in slim for g in r.generations)
    assert list(read_d3(tmp_path / "d3" / "d3-00002.parquet")) == records[6:]


def test_datasets_backend_reads_a_local_dataset_repo_like_the_hub(tmp_path):
    repo = tmp_path / "repo"
    records = make_shards(repo / "data", 5, per_shard=2)
    got = list(read_d3(repo, backend="datasets", streaming=True))
    assert got == records
    slim = list(read_d3(repo, backend="datasets", images=False))
    assert [r.generations[0].model for r in slim] == [r.generations[0].model for r in records]
    assert all(g.image is None for r in slim for g in r.generations)


def test_missing_hub_dataset_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="no-such-owner/no-such-dataset"):
        next(read_d3("no-such-owner/no-such-dataset"))


def test_elsa1m_rows_are_read_as_one_generation_records(tmp_path):
    table = pa.table({
        "image": pa.array([{"bytes": encoded_image(i), "path": f"{i}.jpg"} for i in range(3)],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "id": ["a1", "a2", "a3"],
        "original_prompt": ["cat", "", "dog"],
        "positive_prompt": ["cat, 4k", "", "dog, 4k"],
        "negative_prompt": [None, None, "ugly"],
        "model": ["CompVis/stable-diffusion-v1-4", "stabilityai/stable-diffusion-2-1", "DeepFloyd/IF-I-XL-v1.0"],
        "nsfw": ["UNLIKELY", "UNLIKELY", "POSSIBLE"],
        "url_real_image": ["http://x/1.jpg", None, "http://x/3.jpg"],
        "filepath": ["f/1.jpg", "f/2.jpg", "f/3.jpg"],
        "aspect_ratio": [1.0, 1.0, 1.5],
    })
    pq.write_table(table, tmp_path / "elsa1m.parquet")
    got = list(read_d3(tmp_path / "elsa1m.parquet"))
    assert [r.id for r in got] == ["a1", "a2", "a3"]
    assert got[2].url == "http://x/3.jpg" and got[1].url is None
    assert [len(r.generations) for r in got] == [1, 1, 1]
    assert got[2].generations[0].model == "DeepFloyd/IF-I-XL-v1.0"
    assert got[0].generations[0].decode().size == (24, 16)


def test_corrupt_parquet_is_a_data_error_naming_the_file(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError, match="broken.parquet: not a readable parquet file"):
        list(read_d3(bad))
    good = write_shard([make_record(i) for i in range(50)], tmp_path / "good.parquet", n_generators=4)
    data = good.read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2] + data[-8:])  # footer magic kept, body cut
    with pytest.raises(DataError, match="cut.parquet"):
        list(read_d3(cut))


def test_missing_columns_are_one_schema_error_naming_them(tmp_path):
    rows = [record_to_row(make_record(i, 2), 2) for i in range(3)]
    table = pa.Table.from_pylist(rows, schema=d3_arrow_schema(2)).drop_columns(["url", "height_gen1"])
    pq.write_table(table, tmp_path / "shard.parquet")
    with pytest.raises(SchemaError) as err:
        list(read_d3(tmp_path))
    msg = str(err.value)
    assert "shard.parquet" in msg and "missing column 'url'" in msg and "missing column 'height_gen1'" in msg


def test_mistyped_column_is_a_schema_error_naming_it(tmp_path):
    rows = [record_to_row(make_record(i, 1), 1) for i in range(3)]
    table = pa.Table.from_pylist(rows, schema=d3_arrow_schema(1))
    idx = table.schema.get_field_index("width_gen0")
    table = table.set_column(idx, "width_gen0", pa.array(["24", "24", "24"]))
    pq.write_table(table, tmp_path / "typed.parquet")
    with pytest.raises(SchemaError, match=r"typed.parquet.*'width_gen0' has type string, expected int64"):
        list(read_d3(tmp_path / "typed.parquet"))


def test_not_a_d3_table_and_missing_paths(tmp_path):
    pq.write_table(pa.table({"foo": [1, 2]}), tmp_path / "other.parquet")
    with pytest.raises(SchemaError, match="other.parquet.*missing column 'id'"):
        list(read_d3(tmp_path / "other.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .parquet shards"):
        list(read_d3(tmp_path / "empty", backend="pyarrow"))
    with pytest.raises(DataError, match="no such file or folder"):
        list(read_d3(tmp_path / "nope.parquet", backend="pyarrow"))


def test_blank_and_over_long_prompts_are_read_unchanged(tmp_path):
    long_prompt = "a very long prompt " * 20000  # ~380 kB, far beyond any tokenizer limit
    recs = [make_record(0, 1), make_record(1, 1), make_record(2, 1)]
    recs[0].original_prompt = recs[0].positive_prompt = ""
    recs[1].original_prompt, recs[1].positive_prompt = "   \n", None
    recs[2].positive_prompt = long_prompt
    write_shard(recs, tmp_path / "p.parquet", n_generators=1)
    got = list(read_d3(tmp_path / "p.parquet"))
    assert got[0].positive_prompt == "" and got[0].prompt == ""
    assert got[1].original_prompt == "   \n" and got[1].positive_prompt is None
    assert got[2].positive_prompt == long_prompt and got[2].prompt == long_prompt


def _elsa1m_table(ids):
    n = len(ids)
    return pa.table({
        "image": pa.array([{"bytes": encoded_image(i), "path": f"{i}.jpg"} for i in range(n)],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "id": pa.array(ids, pa.string()),
        "model": ["CompVis/stable-diffusion-v1-4"] * n,
        "url_real_image": [f"http://x/{i}.jpg" for i in range(n)],
    })


@pytest.mark.parametrize("bad_id", [None, ""])
def test_elsa1m_null_or_empty_id_is_a_schema_error_naming_file_and_row(tmp_path, bad_id):
    pq.write_table(_elsa1m_table(["a1", "a2", bad_id, "a4"]), tmp_path / "elsa1m.parquet")
    with pytest.raises(SchemaError, match=r"elsa1m.parquet: row 2: .*'id'"):
        list(read_d3(tmp_path / "elsa1m.parquet", batch_rows=3))
    with pytest.raises(SchemaError, match=r"elsa1m.parquet: row 2: "):
        list(read_d3(tmp_path / "elsa1m.parquet", images=False))


@pytest.mark.parametrize("bad_id", [None, ""])
def test_d3_null_or_empty_id_is_a_schema_error_naming_file_and_row(tmp_path, bad_id):
    rows = [record_to_row(make_record(i, 1), 1) for i in range(5)]
    rows[3]["id"] = bad_id
    pq.write_table(pa.Table.from_pylist(rows, schema=d3_arrow_schema(1)), tmp_path / "d3.parquet")
    with pytest.raises(SchemaError, match=r"d3.parquet: row 3: .*'id'"):
        list(read_d3(tmp_path / "d3.parquet", batch_rows=2))


def test_null_id_through_the_datasets_backend_is_a_schema_error(tmp_path):
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    pq.write_table(_elsa1m_table(["a1", None]), repo / "data" / "train-00000.parquet")
    with pytest.raises(SchemaError, match=r"row 1: .*'id'"):
        list(read_d3(repo, backend="datasets"))
