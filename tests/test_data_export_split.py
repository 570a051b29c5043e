"""WebDataset export (one format per sample), id-hash and leave-generator-out splits, data info."""
from __future__ import annotations

import csv
import io
import json
import tarfile

import pytest
from data_factory import encoded_image, make_record, make_shards
from PIL import Image

from deepsift.cli import main
from deepsift.data.reader import read_d3
from deepsift.data.split import split_of
from deepsift.data.webdataset import export_webdataset
from deepsift.data.writer import write_shard
from deepsift.exceptions import DataError


def _fake_fetch(folder, entries):
    """A fetch-real output folder: images plus status.jsonl lines."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "status.jsonl", "w") as fh:
        for rid, data, ext in entries:
            if data is None:
                fh.write(json.dumps({"id": rid, "status": "http_404"}) + "\n")
            else:
                (folder / f"{rid}.{ext}").write_bytes(data)
                fh.write(json.dumps({"id": rid, "status": "ok", "path": f"{rid}.{ext}"}) + "\n")


def test_export_webdataset_layout_and_one_format_per_sample(tmp_path):
    recs = [make_record(i, 2) for i in range(3)]
    recs[1] = make_record(1, 2, fmt="PNG")  # PNG generations -> the whole sample is PNG
    real = tmp_path / "real"
    _fake_fetch(real, [(recs[0].id, encoded_image(50, (30, 30)), "jpg"),
                       (recs[1].id, encoded_image(51, (30, 30)), "jpg"),
                       (recs[2].id, None, None)])
    summary = export_webdataset(recs, tmp_path / "wds", real_dir=real, samples_per_shard=1, progress=False)
    assert summary.samples == 2 and summary.skipped["no_real_image"] == 1
    assert [p.name for p in summary.shards] == ["elsa_v2-0000.tar", "elsa_v2-0001.tar"]
    with tarfile.open(summary.shards[0]) as tar:
        names = tar.getnames()
        key = f"elsa_v2__train__{recs[0].id}"
        assert sorted(names) == sorted(f"{key}.{m}" for m in ("gen_0.jpg", "gen_1.jpg", "real.jpg", "caption.txt", "url.txt"))
        assert tar.extractfile(f"{key}.caption.txt").read() == b"a photo number 0"
        assert tar.extractfile(f"{key}.url.txt").read() == recs[0].url.encode()
        im = Image.open(io.BytesIO(tar.extractfile(f"{key}.gen_1.jpg").read()))
        assert im.format == "JPEG" and im.size == (25, 16) and im.quantization[0][:4] == [1, 1, 1, 1]  # quality 100
    with tarfile.open(summary.shards[1]) as tar:
        exts = {n.rsplit(".", 1)[1] for n in tar.getnames() if not n.endswith(".txt")}
        assert exts == {"png"}  # the JPEG real image was re-encoded to PNG with the generations
        real_png = [n for n in tar.getnames() if ".real." in n][0]
        assert Image.open(io.BytesIO(tar.extractfile(real_png).read())).format == "PNG"
    assert not [p for p in (tmp_path / "wds").iterdir() if p.name.startswith(".")]


def test_export_skips_a_record_whose_image_does_not_decode(tmp_path):
    recs = [make_record(i, 1) for i in range(3)]
    recs[1].generations[0].image = b"\xff\xd8\xff garbage"
    summary = export_webdataset(recs, tmp_path, fmt="png", progress=False)
    assert summary.samples == 2 and summary.skipped["bad_image"] == 1 and summary.formats["png"] == 2


def test_split_is_deterministic_and_balanced():
    ids = [str(i) for i in range(20000)]
    first = [split_of(i, 0.1, 0.2) for i in ids]
    assert first == [split_of(i, 0.1, 0.2) for i in ids]
    frac = {s: first.count(s) / len(ids) for s in ("train", "val", "test")}
    assert abs(frac["val"] - 0.1) < 0.01 and abs(frac["test"] - 0.2) < 0.01
    assert [split_of(i, 0.1, 0.2, salt="other") for i in ids] != first


def test_cli_split_and_leave_generator_out(tmp_path, capsys):
    records = make_shards(tmp_path / "d3", 60, per_shard=25, n_gen=3)
    out = tmp_path / "split"
    assert main(["data", "split", str(tmp_path / "d3"), "--out", str(out), "--val-fraction", "0.2", "--test-fraction", "0.3"]) == 0
    assert "train" in capsys.readouterr().err
    with open(out / "splits.csv") as fh:
        manifest = {row["id"]: row["split"] for row in csv.DictReader(fh)}
    assert len(manifest) == 60
    for side in ("train", "val", "test"):
        got = list(read_d3(out / side))
        assert {r.id for r in got} == {i for i, s in manifest.items() if s == side}
        assert all(s == split_of(i, 0.2, 0.3) for i, s in manifest.items())
        assert got and all(len(r.generations) == 3 for r in got)
    assert main(["data", "split", str(tmp_path / "d3"), "--out", str(out)]) == 1  # refuses to mix outputs

    lgo = tmp_path / "lgo"
    assert main(["data", "split", str(tmp_path / "d3"), "--out", str(lgo), "--test-fraction", "0.3", "--val-fraction", "0",
                 "--leave-out", "stable-diffusion-xl"]) == 0
    train, test = list(read_d3(lgo / "train")), list(read_d3(lgo / "test"))
    assert {g.model for r in train for g in r.generations} == {"stable-diffusion-1-4", "stable-diffusion-2-1"}
    assert {g.model for r in test for g in r.generations} == {"stable-diffusion-xl"}
    # one rule, as for folders: ALL of the left-out generator's 60 images are in test, and the line says so
    assert len(test) == 60 and {r.id for r in test} == {r.id for r in records}
    originals = {r.id: r for r in records}
    assert all(r.generations[0].image == originals[r.id].generations[2].image for r in test)
    n_test_records = sum(split_of(r.id, 0.0, 0.3) == "test" for r in records)
    assert len(train) == 60 - n_test_records
    err = capsys.readouterr().err
    assert (f"left out stable-diffusion-xl: all 60 of its images in test; dropped {2 * n_test_records} image(s) "
            "of other generators from test") in err
    capsys.readouterr()
    assert main(["data", "split", str(tmp_path / "d3"), "--out", str(tmp_path / "x"), "--leave-out", "midjourney"]) == 2
    assert "leave-out generator 'midjourney': no generator of that name here" in capsys.readouterr().err


def test_leave_out_matches_the_generator_name_exactly(tmp_path, capsys):
    make_shards(tmp_path / "d3", 40, per_shard=40, n_gen=4)  # "deepfloyd-if" + three "stable-diffusion-*"
    out = tmp_path / "lgo"
    for near in ("IF", "deepfloyd", "DeepFloyd-IF"):  # a part or another case is not the name
        assert main(["data", "split", str(tmp_path / "d3"), "--out", str(out), "--leave-out", near]) == 2  # the unknown-generator exit code of every command
        assert "generators: deepfloyd-if, stable-diffusion-1-4" in capsys.readouterr().err
    assert main(["data", "split", str(tmp_path / "d3"), "--out", str(out), "--test-fraction", "0.5",
                 "--val-fraction", "0", "--leave-out", "deepfloyd-if"]) == 0
    train, test = list(read_d3(out / "train")), list(read_d3(out / "test"))
    assert train and test
    assert {g.model for r in test for g in r.generations} == {"deepfloyd-if"}  # not stable-d-IF-fusion
    assert {g.model for r in train for g in r.generations} == {
        "stable-diffusion-1-4", "stable-diffusion-2-1", "stable-diffusion-xl"}


def test_cli_info_and_export(tmp_path, capsys):
    recs = [make_record(i, 2) for i in range(4)]
    recs[0].original_prompt = recs[0].positive_prompt = " "
    recs[3].generations[1].image = b"not an image"
    write_shard(recs, tmp_path / "d3" / "d3-00000.parquet", n_generators=2)
    assert main(["data", "info", str(tmp_path / "d3"), "--check-images"]) == 0
    out = capsys.readouterr().out
    assert "records: 4 in 1 file(s)" in out
    assert "stable-diffusion-1-4: 4 images (sizes 24x16 4; steps 20 4)" in out
    assert "stable-diffusion-2-1: 4 images" in out and "bad 1" in out and "blank prompts: 1" in out
    # one record's image does not decode: it is skipped and counted, the rest exported, exit 3 (partial)
    assert main(["data", "export-wds", str(tmp_path / "d3"), "--out", str(tmp_path / "wds"), "--split", "val"]) == 3
    err = capsys.readouterr().err
    assert "wrote 3 samples" in err and "bad_image 1" in err
    with tarfile.open(tmp_path / "wds" / "elsa_v2-0000.tar") as tar:
        assert f"elsa_v2__val__{recs[1].id}.gen_1.jpg" in tar.getnames()


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"garbage")
    assert main(["data", "info", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.parquet" in err[0] and "Traceback" not in err[0]
    assert main(["data", "fetch-real", str(bad)]) == 2  # --out is required
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0]


def test_cli_split_bad_shard_size_is_one_line(tmp_path, capsys):
    make_shards(tmp_path / "d3", 4, per_shard=4, n_gen=1)
    for bad in ("0", "-1"):
        assert main(["data", "split", str(tmp_path / "d3"), "--out", str(tmp_path / "s"), "--max-shard-mb", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--max-shard-mb" in err[0]
    assert not (tmp_path / "s").exists()  # refused before any work


def test_export_refuses_a_folder_holding_an_earlier_export_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "wds"
    first = export_webdataset([make_record(i, 1) for i in range(3)], out, samples_per_shard=1, progress=False)
    assert [p.name for p in first.shards] == ["elsa_v2-0000.tar", "elsa_v2-0001.tar", "elsa_v2-0002.tar"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DataError, match=r"wds.*not empty.*overwrite option"):
        export_webdataset([make_record(9, 1)], out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    write_shard([make_record(9, 1)], tmp_path / "d3" / "d3-00000.parquet", n_generators=1)
    assert main(["data", "export-wds", str(tmp_path / "d3"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0] and str(out) in err[0]
    (out / "notes.txt").write_text("mine")
    (out / "other-0000.tar").write_bytes(before["elsa_v2-0002.tar"])  # not this export's: another prefix
    assert main(["data", "export-wds", str(tmp_path / "d3"), "--out", str(out), "--overwrite"]) == 0
    # the earlier export's tars are gone (no stale -0001, -0002), everything else is kept
    assert sorted(p.name for p in out.iterdir()) == ["elsa_v2-0000.tar", "notes.txt", "other-0000.tar"]
    with tarfile.open(out / "elsa_v2-0000.tar") as tar:
        assert {n.split(".")[0] for n in tar.getnames()} == {f"elsa_v2__train__{make_record(9, 1).id}"}


def test_a_failed_overwrite_keeps_the_earlier_export(tmp_path):
    out = tmp_path / "wds"
    export_webdataset([make_record(i, 1) for i in range(3)], out, samples_per_shard=1, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = [make_record(5, 1), make_record(6, 1), make_record(5, 1)]  # a repeated id fails mid-way
    with pytest.raises(DataError, match="same sample key"):
        export_webdataset(bad, out, samples_per_shard=1, progress=False, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old tars intact, no staging left


def test_export_keeps_ids_apart_that_differ_only_in_unsafe_characters(tmp_path):
    recs = [make_record(i, 1) for i in range(3)]
    recs[0].id, recs[2].id = "a.b", "a_b"  # a dot would split a WebDataset key: escaped, not merged
    summary = export_webdataset(recs, tmp_path / "wds", progress=False)
    assert summary.samples == 3
    with tarfile.open(tmp_path / "wds" / "elsa_v2-0000.tar") as tar:
        keys = {n.split(".")[0] for n in tar.getnames()}
    assert "elsa_v2__train__a_b" in keys and len(keys) == 3 and all(k.count(".") == 0 for k in keys)
    dup = [make_record(0, 1), make_record(0, 1)]
    with pytest.raises(DataError, match="same sample key"):
        export_webdataset(dup, tmp_path / "dup", progress=False)


@pytest.mark.parametrize("option,value", [("--prefix", "../x"), ("--prefix", "a.b"), ("--prefix", ""),
                                          ("--split", "a/b"), ("--split", "val id"), ("--split", "x.y")])
def test_export_unsafe_prefix_or_split_is_a_one_line_usage_error(tmp_path, capsys, option, value):
    write_shard([make_record(0, 1)], tmp_path / "d3.parquet", n_generators=1)
    out = tmp_path / "wds"
    assert main(["data", "export-wds", str(tmp_path / "d3.parquet"), "--out", str(out), option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0] and repr(value) in err[0]
    assert not out.exists() and not (tmp_path / "x-0000.tar").exists()  # refused before any work
