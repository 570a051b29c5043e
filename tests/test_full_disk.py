"""A full disk: `detect --out` and `embed --out` fail with one clear line and leave nothing half-written.

The disk is real: a 64 KiB tmpfs mounted for the test (needs root, as in CI), then filled.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from deepsift.cli import main
from deepsift.model.detector import Detector
from deepsift.model.headset import save_headset
from deepsift.model.heads import make_head


@pytest.fixture
def full_disk(small_disk):
    mnt = small_disk("64k")
    with open(mnt / "filler", "wb") as fh:  # leave one page free
        fh.write(b"\0" * (60 * 1024))
    return mnt


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
    assert not out.exists()  # the results file appears only when complete
    # the complete rows are kept in verdicts.jsonl.partial: every line is whole JSON, the last one too,
    # and the last says the file is partial when the disk had room for it
    partial = full_disk / "verdicts.jsonl.partial"
    assert f"kept in {partial}" in err[0]
    lines = partial.read_text().splitlines()
    parsed = [json.loads(line) for line in lines]
    rows = [r for r in parsed if "source" in r]
    assert rows and all(r["verdict"] in ("real", "fake") for r in rows)
    if parsed[-1].get("partial"):
        assert parsed[-1]["complete_rows"] == len(rows) and "No space left" in parsed[-1]["reason"]
        assert parsed[:-1] == rows
    else:
        assert parsed == rows
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler", partial.name]  # no temporary file


def test_fetch_real_on_a_full_disk(full_disk, tmp_path, capsys):
    """Images stop fitting: one line, exit 1; every status line whole, every stored image has its ok line."""
    import io

    from data_factory import make_record
    from httpserver import LocalServer
    from PIL import Image

    from deepsift.data.writer import write_shard

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(buf, "PNG")
    png = buf.getvalue()  # about 7 KB: three fit in the free page-and-a-bit, not twenty
    (full_disk / "filler").unlink()
    with open(full_disk / "filler", "wb") as fh:
        fh.write(b"\0" * (40 * 1024))
    with LocalServer({f"/img/{i}": (200, "image/png", png) for i in range(20)}) as srv:
        recs = [make_record(i, 1, url=f"{srv.base}/img/{i}") for i in range(20)]
        write_shard(recs, tmp_path / "d3.parquet", n_generators=1)
        out = full_disk / "real"
        rc = main(["data", "fetch-real", str(tmp_path / "d3.parquet"), "--out", str(out), "--concurrency", "1",
                   "--backoff", "0"])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if line.startswith("deepsift:")]
    assert len(err) == 1 and "No space left on device" in err[0] and "Traceback" not in err[0]
    text = (out / "status.jsonl").read_text() if (out / "status.jsonl").exists() else ""
    assert text == "" or text.endswith("\n")  # no torn last line
    lines = [json.loads(line) for line in text.splitlines()]
    ok = {e["path"] for e in lines if e["status"] == "ok"}
    on_disk = {p.name for p in out.iterdir() if p.name not in ("status.jsonl", "status.sqlite")}  # + its index
    assert on_disk == ok and len(ok) < 20  # no image without its line, no temporary file


def _fill(folder, name: str = "filler2") -> None:
    """Write zeros into ``folder`` until the disk is full (the last write fails with ENOSPC)."""
    import errno

    with open(folder / name, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


@pytest.mark.parametrize("indexed", [True, False], ids=["index-made", "no-index-yet"])
def test_a_second_fetch_real_on_a_full_disk(small_disk, tmp_path, capsys, indexed):
    """A folder fetched once, then the disk fills: a second run is one line, exit 1, and replaces, cuts or
    leaves nothing: the stored images, their status lines and the status index are as they were."""
    import io
    import sqlite3

    from data_factory import make_record
    from httpserver import LocalServer
    from PIL import Image

    from deepsift.data.fetch import load_status
    from deepsift.data.writer import write_shard

    disk = small_disk("256k")
    pngs = []
    for i in range(12):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buf, "PNG")
        pngs.append(buf.getvalue())
    out = disk / "real"
    with LocalServer({f"/img/{i}": (200, "image/png", pngs[i]) for i in range(12)}) as srv:
        recs = [make_record(i, 1, url=f"{srv.base}/img/{i}") for i in range(12)]
        write_shard(recs[:4], tmp_path / "first.parquet", n_generators=1)
        write_shard(recs, tmp_path / "all.parquet", n_generators=1)
        args = ["--out", str(out), "--concurrency", "1", "--backoff", "0"]
        assert main(["data", "fetch-real", str(tmp_path / "first.parquet"), *args]) == 0
        if indexed:
            load_status(out).close()  # the index a later run keeps up to date (made by the first resumed run)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        assert len([n for n in before if n.endswith(".png")]) == 4 and ("status.sqlite" in before) is indexed
        capsys.readouterr()
        _fill(disk)
        rc = main(["data", "fetch-real", str(tmp_path / "all.parquet"), *args, "--retry-failed"])
    assert rc == 1
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("deepsift:")]
    assert len(err) == 1 and "No space left on device" in err[0] and "Traceback" not in err[0]
    after = {p.name: p for p in out.iterdir()}
    assert set(after) == set(before)  # nothing new, half-written or temporary
    for name, data in before.items():
        if name not in ("status.sqlite", "status.jsonl"):
            assert after[name].read_bytes() == data, name  # no stored image replaced
    text = after["status.jsonl"].read_text()
    old = before["status.jsonl"].decode()
    assert text.startswith(old) and text.endswith("\n")  # the old lines kept, no torn line
    new = [json.loads(line) for line in text[len(old):].splitlines()]  # a whole line per id the disk refused
    assert all(e["status"] == "write_error" and "No space left" in e["error"] for e in new)
    ok_ids = {e["id"] for e in map(json.loads, old.splitlines())}
    assert not {e["id"] for e in new} & ok_ids  # a stored image's ok line is never overridden
    if indexed:
        db = sqlite3.connect(after["status.sqlite"])
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
    (disk / "filler2").unlink()  # room again: the index opens (or is made) and agrees with the JSONL
    index = load_status(out)
    assert len(index) == 4 + len(new) and all(index[k]["status"] == "ok" for k in ok_ids)
    index.close()
