"""D3 schema and the atomic shard writer: published columns, HF round trip, size bounds, ENOSPC."""
from __future__ import annotations

import errno
import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_factory import make_record

from deepsift.data.reader import read_d3
from deepsift.data.schema import (
    IMAGE_TYPE,
    Generation,
    check_d3_schema,
    d3_arrow_schema,
    record_to_row,
    row_to_record,
)
from deepsift.data.writer import ShardWriter, write_shard
from deepsift.exceptions import DataError, ImageDecodeError, SchemaError


def test_schema_has_published_columns_and_types():
    schema = d3_arrow_schema(4)
    for k in range(4):
        assert schema.field(f"model_gen{k}").type == pa.string()
        for stem in ("width", "height", "num_inference_steps"):
            assert schema.field(f"{stem}_gen{k}").type == pa.int64()
        assert schema.field(f"filepath_gen{k}").type == pa.string()
        assert schema.field(f"image_gen{k}").type == IMAGE_TYPE
        assert schema.field(f"seed_gen{k}").type == pa.int64()
    assert schema.names[:5] == ["id", "original_prompt", "positive_prompt", "negative_prompt", "url"]
    assert "seed_gen0" not in d3_arrow_schema(4, with_seed=False).names
    assert check_d3_schema(schema) == 4


def test_row_round_trip_and_lazy_decode():
    rec = make_record(3, n_gen=2)
    back = row_to_record(record_to_row(rec, 3))
    assert back == rec
    assert back.generations[1].decode().size == (25, 16)
    with pytest.raises(ImageDecodeError, match="no image bytes"):
        Generation("m", 1, 1, None, None).decode()
    broken = Generation("m", 1, 1, None, "x.jpg", image=rec.generations[0].image[:40])
    with pytest.raises(ImageDecodeError):
        broken.decode()


def test_record_with_too_many_generations_is_refused():
    with pytest.raises(SchemaError, match="4 generations but the shard has 2"):
        record_to_row(make_record(0, 4), 2)


def test_written_shards_read_back_with_datasets_and_deepsift(tmp_path):
    import datasets

    records = [make_record(i, 3) for i in range(10)]
    with ShardWriter(tmp_path, n_generators=3, max_records_per_shard=4) as w:
        for r in records:
            w.write(r)
    paths = w.close()
    assert [p.name for p in paths] == ["d3-00000.parquet", "d3-00001.parquet", "d3-00002.parquet"]
    assert [pq.ParquetFile(p).metadata.num_rows for p in paths] == [4, 4, 2]
    ds = datasets.load_dataset("parquet", data_files=[str(p) for p in paths], split="train")
    assert isinstance(ds.features["image_gen2"], datasets.Image)
    assert ds.features["width_gen0"] == datasets.Value("int64")
    assert ds[5]["id"] == records[5].id
    assert ds[5]["image_gen1"].size == (25, 16)  # decoded by datasets as a PIL image
    assert list(read_d3(tmp_path)) == records


def test_shards_are_bounded_by_bytes(tmp_path):
    records = [make_record(i, 2) for i in range(12)]
    one = sum(len(g.image) for g in records[0].generations)
    with ShardWriter(tmp_path, n_generators=2, max_shard_bytes=3 * one + 400) as w:
        w.write_many(records)
    counts = [pq.ParquetFile(p).metadata.num_rows for p in w.paths]
    assert sum(counts) == 12 and max(counts) <= 3 and len(counts) >= 4
    # numbering continues after existing shards: nothing is overwritten
    with ShardWriter(tmp_path, n_generators=2) as w2:
        w2.write(make_record(99, 2))
    assert w2.paths[0].name == f"d3-{len(counts):05d}.parquet"


class FullDisk(io.RawIOBase):
    """A file whose writes fail with ENOSPC after ``budget`` bytes (a full disk)."""

    budget = 0

    def __init__(self, path):
        self.fh = open(path, "wb")
        self.written = 0

    def writable(self):
        return True

    def write(self, b):
        if self.written + len(b) > self.budget:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(b)
        return self.fh.write(b)

    def close(self):
        self.fh.close()
        super().close()


def test_out_of_space_keeps_earlier_shards_and_leaves_no_temp(tmp_path):
    records = [make_record(i, 2) for i in range(9)]
    with ShardWriter(tmp_path, n_generators=2, max_records_per_shard=3) as w:
        w.write_many(records[:6])
    good = {p.name: p.read_bytes() for p in w.paths}
    FullDisk.budget = 2000  # enough to start a shard, not to finish it
    with pytest.raises(DataError, match="out of disk space") as err:
        with ShardWriter(tmp_path, n_generators=2, max_records_per_shard=3, row_group_records=1, opener=FullDisk) as w:
            w.write_many(records[6:])
    assert "d3-00002.parquet" in str(err.value)
    assert sorted(os.listdir(tmp_path)) == sorted(good)  # no temp file, no partial shard
    assert {n: (tmp_path / n).read_bytes() for n in good} == good
    assert [r.id for r in read_d3(tmp_path)] == [r.id for r in records[:6]]


def test_write_shard_out_of_space_is_atomic(tmp_path):
    FullDisk.budget = 500
    with pytest.raises(DataError, match="out of disk space"):
        write_shard([make_record(0, 1)], tmp_path / "one.parquet", n_generators=1, opener=FullDisk)
    assert os.listdir(tmp_path) == []
    path = write_shard([make_record(0, 1)], tmp_path / "one.parquet", n_generators=1)
    assert os.listdir(tmp_path) == ["one.parquet"] and pq.read_table(path).num_rows == 1


def test_hidden_temp_file_is_not_read_as_a_shard(tmp_path):
    write_shard([make_record(0, 1)], tmp_path / "d3-00000.parquet", n_generators=1)
    (tmp_path / ".d3-00001.parquet.tmp-1").write_bytes(b"PAR1 half written")
    assert [r.id for r in read_d3(tmp_path)] == ["100000"]
