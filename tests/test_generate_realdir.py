"""``deepsift data build --real-dir``: real images fetched by ``data fetch-real`` feed ``vae`` generators.

The fetch folder is made the honest way: the real fetcher downloads from a local HTTP server on
127.0.0.1 (good images, a 404); then the test breaks one fetched file on disk and swaps another
for a symlink that points outside the folder.
"""
from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from data_factory import make_record
from httpserver import LocalServer
from PIL import Image

from deepsift.cli import main
from deepsift.data.fetch import load_status
from deepsift.data.reader import read_d3
from deepsift.data.writer import write_shard
from deepsift.generate.backends import VAEReconstruction
from deepsift.generate.spec import derive_seed, parse_spec
from deepsift.images import decode_image

IDS = [str(100000 + i) for i in range(6)]  # make_record's ids
GOOD, BAD404, CORRUPT, ESCAPE, UNFETCHED = IDS[0:2], IDS[2], IDS[3], IDS[4], IDS[5]


def encoded(seed: int, size: tuple[int, int], fmt: str) -> bytes:
    """A smooth random image (w x h), encoded as ``fmt``."""
    small = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize(size, Image.BICUBIC).save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


REALS = {IDS[0]: encoded(1, (48, 40), "PNG"), IDS[1]: encoded(2, (56, 32), "JPEG"),
         IDS[3]: encoded(3, (40, 40), "PNG"), IDS[4]: encoded(4, (40, 40), "PNG"), IDS[5]: encoded(5, (40, 40), "PNG")}


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """(shards folder, fetch-real folder, outside image) for six D3 records."""
    root = tmp_path_factory.mktemp("realdir")
    routes = {f"/img/{rid}": (200, "image/png", data) for rid, data in REALS.items()}
    with LocalServer(routes) as server:
        urls = {rid: f"{server.base}/img/{rid}" for rid in REALS} | {BAD404: f"{server.base}/gone"}
        records = [make_record(i, 1, url=urls[rid]) for i, rid in enumerate(IDS)]
        write_shard(records[:3], root / "shards" / "d3-00000.parquet", n_generators=1)
        write_shard(records[3:], root / "shards" / "d3-00001.parquet", n_generators=1)
        real = root / "real"  # the last record is left out (--limit 5): no status line at all
        assert main(["data", "fetch-real", str(root / "shards"), "--out", str(real), "--limit", "5",
                     "--timeout", "5", "--retries", "0"]) == 3  # one dead link: done, but an id failed
    status = load_status(real)
    assert {rid: e["status"] for rid, e in status.items()} == {**{r: "ok" for r in IDS[:5]}, BAD404: "http_404"}
    (real / status[CORRUPT]["path"]).write_bytes(REALS[CORRUPT][:60])  # broken on disk after the fetch
    outside = root / "outside.png"
    outside.write_bytes(encoded(9, (40, 40), "PNG"))
    escape = real / status[ESCAPE]["path"]
    escape.unlink()
    escape.symlink_to(outside)  # resolves outside the fetch folder: must never be read
    return root / "shards", real, outside


def sd_spec(models, name="sd"):
    return f"{name}=t2i:{models.sd},steps=2,width=64,height=64,batch=3"


def reconstruct(models, image_bytes: bytes, rid: str, name: str = "rec") -> np.ndarray:
    """The tiny VAE's round trip of ``image_bytes`` with the seed the build uses for ``rid``."""
    gen = VAEReconstruction(parse_spec(f"{name}=vae:{models.vae},device=cpu"))
    gen.load()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return np.asarray(gen.generate([""], [None], [derive_seed(rid, name)], [decode_image(image_bytes)])[0])
    finally:
        torch.set_num_threads(before)


def by_model(out, models):
    """{id: {"rec": image or None, "sd": image or None}} of a build folder."""
    names = {str(models.vae): "rec", str(models.sd): "sd"}
    return {r.id: {names[g.model]: g for g in r.generations if g.model in names} for r in read_d3(out)}


def test_prompts_build_takes_real_images_from_the_fetch_folder(models, fetched, tmp_path, capsys, caplog):
    shards, real, outside = fetched
    out = tmp_path / "out"
    argv = ["data", "build", "--prompts", str(shards), "--real-dir", str(real), "--out", str(out), "--threads", "1",
            "--chunk-size", "4", "-g", f"rec=vae:{models.vae}", "-g", sd_spec(models)]
    with caplog.at_level("WARNING", logger="deepsift.generate"):
        assert main(argv) == 3  # done; records without a real image were skipped by the vae generator
    err = capsys.readouterr().err
    assert "build: wrote 6 record(s)" in err and "6 record(s) from 6 input record(s) in all" in err
    assert "images per generator: rec=2, sd=6" in err
    assert "failures by reason: bad_image_path=1, image_decode_error=1, no_real_image=2" in err
    for rid in (BAD404, CORRUPT, ESCAPE, UNFETCHED):
        assert f"record {rid} skipped for real-image generators" in caplog.text
    assert "http_404" in caplog.text and "no line in status.jsonl" in caplog.text

    recs = by_model(out, models)
    assert list(recs) == IDS  # every record kept: sd ran for all of them
    assert all(set(v) == {"rec", "sd"} for rid, v in recs.items() if rid in GOOD)
    assert all(set(v) == {"sd"} for rid, v in recs.items() if rid not in GOOD)
    for rid in GOOD:  # the VAE's input was exactly this record's fetched real image
        rec = recs[rid]["rec"]
        got = np.asarray(rec.decode())
        assert decode_image(REALS[rid]).size == rec.decode().size == (rec.width, rec.height)
        assert rec.seed == derive_seed(rid, "rec") and rec.filepath == f"rec/{rid}.png"
        assert np.array_equal(got, reconstruct(models, REALS[rid], rid))
    # another real image of the same size, same seed: another output (so the input really was the real image)
    assert not np.array_equal(reconstruct(models, encoded(9, (48, 40), "PNG"), IDS[0]),
                              np.asarray(recs[IDS[0]]["rec"].decode()))
    # the null rec slot is a real null in the shard, and sd's images match a build without --real-dir
    table = pq.read_table(out / "part-00000.parquet")
    assert table.column("model_gen0").to_pylist()[2] is None and table.column("model_gen1").to_pylist()[2] == str(models.sd)
    plain = tmp_path / "plain"
    assert main(["data", "build", "--prompts", str(shards), "--out", str(plain), "--threads", "1", "--chunk-size", "4",
                 "-g", sd_spec(models)]) == 0
    assert [g.image for r in read_d3(plain) for g in r.generations] == [recs[rid]["sd"].image for rid in IDS]


def test_real_dir_is_part_of_the_restart_settings(models, fetched, tmp_path, capsys):
    shards, real, _ = fetched
    out = tmp_path / "out"
    argv = ["data", "build", "--prompts", str(shards), "--out", str(out), "--chunk-size", "3", "-g", f"rec=vae:{models.vae}"]
    assert main(argv + ["--real-dir", str(real)]) == 3
    err = capsys.readouterr().err
    # only vae generators: records without a real image are skipped as before
    assert "build: wrote 2 record(s) in 2 shard(s)" in err and "2 record(s) from 6 input record(s) in all" in err and "images per generator: rec=2" in err
    assert json.loads((out / "build.json").read_text())["real_dir"] == str(real.resolve())
    assert main(argv + ["--real-dir", str(real)]) == 3  # nothing new; the dataset still lacks 4 records
    assert "nothing to do, all 2 shard(s) were already done (2 record(s)" in capsys.readouterr().err
    other = tmp_path / "other-real"
    other.mkdir()
    (other / "status.jsonl").write_text("")
    assert main(argv + ["--real-dir", str(other)]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(argv) == 2  # without --real-dir: also other settings


def test_add_to_with_real_dir(models, fetched, tmp_path, capsys):
    shards, real, _ = fetched
    grown = tmp_path / "grown"
    assert main(["data", "build", "--add-to", str(shards), "--real-dir", str(real), "--out", str(grown), "--threads", "1",
                 "-g", f"rec=vae:{models.vae}", "-g", sd_spec(models)]) == 3
    err = capsys.readouterr().err
    assert "images per generator: rec=2, sd=6" in err
    assert "failures by reason: bad_image_path=1, image_decode_error=1, no_real_image=2" in err
    for name in ("d3-00000.parquet", "d3-00001.parquet"):
        old, new = pq.read_table(shards / name), pq.read_table(grown / name)
        for col in old.column_names:  # existing columns kept as they are
            assert new.column(col).equals(old.column(col)), col
        assert new.column("model_gen1").null_count == (1 if name.startswith("d3-00000") else 3)
    recs = {r.id: r for r in read_d3(grown)}
    assert list(recs) == IDS
    for rid in GOOD:
        _, rec, sd = recs[rid].generations
        assert rec.model == str(models.vae) and sd.model == str(models.sd)
        assert np.array_equal(np.asarray(rec.decode()), reconstruct(models, REALS[rid], rid))
    for rid in (BAD404, CORRUPT, ESCAPE, UNFETCHED):
        assert [g.model for g in recs[rid].generations][1:] == [str(models.sd)]


def test_bad_real_dir_is_refused_before_any_work(models, fetched, tmp_path, capsys):
    shards, _, _ = fetched
    argv = ["data", "build", "--prompts", str(shards), "-g", f"rec=vae:{models.vae}"]
    assert main(argv + ["--real-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o1")]) == 2
    assert "argument --real-dir: " in (err := capsys.readouterr().err) and "nope: no such file or folder" in err
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.png").write_bytes(REALS[IDS[0]])
    assert main(argv + ["--real-dir", str(tmp_path / "plain"), "--out", str(tmp_path / "o2")]) == 1
    assert "no status.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_real_dir_unused_by_text_to_image_only_build_is_a_warning(models, fetched, tmp_path, caplog):
    shards, real, _ = fetched
    with caplog.at_level("WARNING", logger="deepsift.generate"):
        assert main(["data", "build", "--prompts", str(shards), "--real-dir", str(real), "--out", str(tmp_path / "o"),
                     "--threads", "1", "-g", sd_spec(models)]) == 0
    assert "real-image folder" in caplog.text and "not used" in caplog.text
    assert len(list(read_d3(tmp_path / "o"))) == 6


def only_loopback() -> bool:
    """Whether this process's network namespace has no interface but ``lo``."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


@pytest.mark.ray
@pytest.mark.skipif(not only_loopback(), reason="Ray tests run only in a loopback-only network namespace (unshare -n)")
def test_ray_build_with_real_dir_equals_local(models, fetched, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    shards, real, _ = fetched
    argv = ["data", "build", "--add-to", str(shards), "--real-dir", str(real), "--threads", "1",
            "-g", f"rec=vae:{models.vae}"]
    assert main(argv + ["--out", str(tmp_path / "local")]) == 3  # records without a fetched image: partial
    assert main(argv + ["--out", str(tmp_path / "ray"), "--ray", "auto", "--ray-actors", "1"]) == 3

    def content(out: Path):
        return [(r.id, [(g.model, g.seed, g.image) for g in r.generations]) for r in read_d3(out)]

    local, on_ray = content(tmp_path / "local"), content(tmp_path / "ray")
    assert [rid for rid, _ in local] == IDS and local == on_ray
    assert [len(gens) for _, gens in on_ray] == [2 if rid in GOOD else 1 for rid in IDS]
    assert json.loads((tmp_path / "ray" / "build.json").read_text())["additions"][-1]["real_dir"] == str(real.resolve())
