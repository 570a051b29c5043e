"""``deepsift data build``: records x generators, bad input, --add-to, kill -9 and restart."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import pyarrow.parquet as pq
from PIL import Image

from deepsift.cli import main
from deepsift.data.reader import read_d3
from deepsift.data.writer import write_shard
from deepsift.data.schema import D3Record, Generation
from deepsift.generate.builder import build
from deepsift.generate.spec import derive_seed, parse_spec


def sd_spec(models, name="sd"):
    return f"{name}=t2i:{models.sd},steps=2,width=64,height=64,guidance=5.0,batch=2"


def write_prompts(folder, n, extra=()):
    """A JSONL prompt file with n good records (each with a real image) plus extra raw lines."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        Image.fromarray(np.random.RandomState(i).randint(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"real{i}.png")
        lines.append(json.dumps({"id": f"rec{i}", "prompt": f"a photo of thing {i}", "negative_prompt": "blurry",
                                 "url": f"http://example.invalid/{i}.jpg", "image": f"real{i}.png"}))
    path = folder / "prompts.jsonl"
    path.write_text("\n".join(lines + list(extra)) + "\n")
    return path


def dataset_bytes(out):
    """{id: [(model, w, h, steps, seed, image bytes) per generator]} of a build folder."""
    return {r.id: [(g.model, g.width, g.height, g.steps, g.seed, g.image) for g in r.generations] for r in read_d3(out)}


def test_build_records_every_generator_with_derived_seed(models, tmp_path):
    src = write_prompts(tmp_path / "in", 5)
    out = tmp_path / "out"
    s = build(str(src), [parse_spec(sd_spec(models)), parse_spec(f"vae=vae:{models.vae}")], out, chunk_size=2)
    assert (s.records, dict(s.images), dict(s.failures)) == (5, {"sd": 5, "vae": 5}, {})
    assert sorted(p.name for p in out.glob("*.parquet")) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    recs = list(read_d3(out))
    assert [r.id for r in recs] == [f"rec{i}" for i in range(5)]
    for r in recs:
        sd, vae = r.generations
        assert (sd.model, sd.width, sd.height, sd.steps) == (str(models.sd), 64, 64, 2)
        assert (vae.model, vae.width, vae.height, vae.steps) == (str(models.vae), 48, 40, None)
        assert sd.seed == derive_seed(r.id, "sd") and vae.seed == derive_seed(r.id, "vae")
        assert sd.filepath == f"sd/{r.id}.png" and sd.decode().size == (64, 64)
        assert r.negative_prompt == "blurry" and r.url.endswith(".jpg")
    assert len({r.generations[0].image for r in recs}) == 5  # different seeds/prompts, different images
    # the published format: datasets reads the shards with image_gen* as Image features
    import datasets

    ds = datasets.load_dataset("parquet", data_files=sorted(str(p) for p in out.glob("*.parquet")), split="train")
    assert ds.num_rows == 5 and ds[0]["image_gen0"].size == (64, 64) and ds[0]["seed_gen1"] == recs[0].generations[1].seed


def test_bad_records_are_logged_and_skipped(models, tmp_path, caplog):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    extra = [
        json.dumps({"id": "blank", "prompt": "   ", "image": "real0.png"}),
        json.dumps({"id": "huge", "prompt": "x" * 10_001, "image": "real0.png"}),
        json.dumps({"id": "long", "prompt": "word " * 120, "image": "real1.png"}),
        json.dumps({"id": "corrupt", "prompt": "a corrupt real image", "image": "corrupt.png"}),
        json.dumps({"id": "missing", "prompt": "a missing real image", "image": "nope.png"}),
        json.dumps({"id": "escape", "prompt": "a path outside", "image": "../../etc/passwd"}),
        json.dumps({"id": "noreal", "prompt": "no real image"}),
        "{not json",
        json.dumps({"id": "rec0", "prompt": "duplicate id", "image": "real0.png"}),
    ]
    src = write_prompts(tmp_path / "in", 2, extra)
    with caplog.at_level("WARNING", logger="deepsift.generate"):
        s = build(str(src), [parse_spec(sd_spec(models)), parse_spec(f"vae=vae:{models.vae}")], tmp_path / "out", chunk_size=4)
    # records without a usable real image keep their text-to-image image (the vae slot stays empty)
    recs = {r.id: r for r in read_d3(tmp_path / "out")}
    assert list(recs) == ["rec0", "rec1", "long", "corrupt", "missing", "noreal"]
    assert [[g.generator for g in recs[i].generations] for i in ("corrupt", "missing", "noreal")] == [["sd"]] * 3
    assert [g.generator for g in recs["rec0"].generations] == ["sd", "vae"]
    assert dict(s.failures) == {"blank_prompt": 1, "prompt_too_long": 1, "image_decode_error": 2, "bad_image_path": 1,
                                "no_real_image": 1, "bad_line": 1, "duplicate_id": 1}
    assert s.notes == {"truncated_prompt:sd": 1}
    assert s.input_records == 11 and s.records == 6
    logged = caplog.text
    for rid in ("blank", "huge", "escape", "prompts-10", "rec0"):
        assert f"record {rid} skipped:" in logged
    for rid in ("corrupt", "missing", "noreal"):
        assert f"record {rid} skipped for real-image generators" in logged
    assert "corrupt.png" in logged


def test_csv_and_d3_shard_sources(models, tmp_path):
    with open(tmp_path / "p.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["id", "original_prompt", "url"])
        w.writeheader()
        w.writerows([{"id": "a", "original_prompt": "red", "url": "u1"}, {"id": "b", "original_prompt": "blue", "url": "u2"}])
    build(str(tmp_path / "p.csv"), [parse_spec(sd_spec(models))], tmp_path / "o1")
    old = [Generation("old-model", 8, 8, 1, "x.png", b"not decoded here")]
    write_shard([D3Record("a", "red", "red", None, "u1", old), D3Record("b", "blue", "blue", None, "u2", old)],
                tmp_path / "d3" / "train-0.parquet", n_generators=1)
    build(str(tmp_path / "d3"), [parse_spec(sd_spec(models))], tmp_path / "o2")
    a, b = dataset_bytes(tmp_path / "o1"), dataset_bytes(tmp_path / "o2")
    assert list(a) == ["a", "b"] and a == b  # same ids and prompts -> same images from either source
    (tmp_path / "bad.csv").write_text("id,text\n1,hello\n")
    assert main(["data", "build", "--prompts", str(tmp_path / "bad.csv"), "-g", sd_spec(models), "--out", str(tmp_path / "o3")]) == 1


def test_csv_prompt_over_the_csv_field_limit_is_skipped_as_too_long(models, tmp_path, capsys):
    huge = "x" * 200_000  # over the csv module's default field limit (131072)
    (tmp_path / "p.csv").write_text(f"id,prompt\na,red\nhuge,{huge}\nb,blue\n")
    out = tmp_path / "out"
    assert main(["data", "build", "--prompts", str(tmp_path / "p.csv"), "-g", sd_spec(models), "--out", str(out)]) == 3
    assert "failures by reason: prompt_too_long=1" in capsys.readouterr().err
    assert [r.id for r in read_d3(out)] == ["a", "b"]


def test_spec_that_does_not_load_fails_before_any_work(models, tmp_path, capsys):
    src = write_prompts(tmp_path / "in", 2)
    out = tmp_path / "out"
    code = main(["data", "build", "--prompts", str(src), "-g", sd_spec(models), "-g", "bad=t2i:/no/such/model", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "generator 'bad'" in err and "/no/such/model" in err and "Traceback" not in err
    assert not out.exists()  # nothing was generated or written
    assert main(["data", "build", "--prompts", str(src), "-g", "x=t2i:/m,steps=0", "--out", str(out)]) == 2
    assert "must be a positive integer" in capsys.readouterr().err  # a bad spec is bad usage, found at parsing


def test_add_to_grows_existing_shards_without_regenerating(models, tmp_path, capsys, monkeypatch):
    import deepsift.generate.chunks as chunks

    monkeypatch.setattr(chunks, "ADD_TO_BATCH_ROWS", 1)  # the base shards are streamed a row at a time (issue 12)
    src = write_prompts(tmp_path / "in", 3, [json.dumps({"id": "noreal", "prompt": "kept, but no vae image"})])
    base = tmp_path / "base"
    build(str(src), [parse_spec(sd_spec(models))], base, chunk_size=2)
    before = {p.name: pq.read_table(p) for p in base.glob("*.parquet")}
    grown = tmp_path / "grown"
    assert main(["data", "build", "--add-to", str(base), "-g", sd_spec(models, "sd2"), "--out", str(grown)]) == 0
    assert "images per generator: sd2=4" in capsys.readouterr().err
    for name, old in before.items():
        new = pq.read_table(grown / name)
        for col in old.column_names:  # every existing column kept as is
            assert new.column(col).equals(old.column(col)), col
        assert "model_gen1" in new.column_names and "seed_gen1" in new.column_names
    recs = {r.id: r for r in read_d3(grown)}
    assert list(recs) == ["rec0", "rec1", "rec2", "noreal"]
    for r in recs.values():
        g0, g1 = r.generations
        assert g1.seed == derive_seed(r.id, "sd2") and g1.image != g0.image and g1.model == str(models.sd)
    # in place, with a generator that needs real images (D3 shards have none): rows kept, slot left empty
    assert main(["data", "build", "--add-to", str(grown), "-g", sd_spec(models, "sd3"), "-q"]) == 0
    assert all(len(r.generations) == 3 for r in read_d3(grown))
    capsys.readouterr()
    assert main(["data", "build", "--add-to", str(grown), "-g", sd_spec(models, "sd3")]) == 0  # already there: no-op
    err = capsys.readouterr().err
    assert "nothing to do, all 2 shard(s) were already done (4 record(s)" in err and "wrote" not in err
    assert all(len(r.generations) == 3 for r in read_d3(grown))


@pytest.mark.parametrize("option", [["--threads", "0"], ["--ray-actors", "-1"], ["--ray-actors", "0"]])
def test_bad_thread_and_actor_counts_are_one_line_errors(models, tmp_path, capsys, option):
    src = write_prompts(tmp_path / "in", 1)
    out = tmp_path / "out"
    code = main(["data", "build", "--prompts", str(src), "-g", sd_spec(models), "--out", str(out), *option])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and option[0] in err[0] and "Traceback" not in err[0]
    assert not out.exists()  # refused before any work


def test_restart_with_other_settings_is_refused(models, tmp_path):
    src = write_prompts(tmp_path / "in", 1)
    build(str(src), [parse_spec(sd_spec(models))], tmp_path / "out")
    assert main(["data", "build", "--prompts", str(src), "-g", sd_spec(models, "other"), "--out", str(tmp_path / "out")]) == 2


def test_killed_build_restarts_where_it_stopped(models, tmp_path):
    src = write_prompts(tmp_path / "in", 7, ["   ", json.dumps({"id": "blank", "prompt": ""})])
    specs = [sd_spec(models), f"vae=vae:{models.vae}"]
    argv = ["data", "build", "--prompts", str(src), "--chunk-size", "2", "--threads", "1"]
    for s in specs:
        argv += ["-g", s]
    ref = tmp_path / "ref"
    assert main(argv + ["--out", str(ref)]) == 3  # done, but the blank prompts were skipped

    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "deepsift", *argv, "--out", str(out), "-v"],
                            stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:  # wait for the first shard to be on disk, then kill -9 mid-build
        if "wrote " in line and ".parquet" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    partial = sorted(p.name for p in out.glob("*.parquet"))
    assert 1 <= len(partial) < 5, partial  # stopped mid-way
    assert main(argv + ["--out", str(out)]) == 3
    assert not list(out.glob(".*.tmp-*"))
    a, b = dataset_bytes(ref), dataset_bytes(out)
    assert list(a) == list(b) == [f"rec{i}" for i in range(7)]  # none lost, none duplicated
    assert a == b  # same image bytes
    assert sorted(p.name for p in out.glob("*.parquet")) == sorted(p.name for p in ref.glob("*.parquet"))


def test_vae_and_text_to_image_without_real_images_still_run_the_text_to_image_generator(models, tmp_path, capsys):
    """Prompts without real images: the vae generator skips them, the t2i generator does not; exit 3 says so."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"thing {i}"}) + "\n" for i in range(3)))
    out = tmp_path / "out"
    assert main(["data", "build", "--prompts", str(prompts), "--out", str(out), "-g", sd_spec(models),
                 "-g", f"vae=vae:{models.vae}"]) == 3
    err = capsys.readouterr().err
    assert "images per generator: sd=3, vae=0" in err and "failures by reason: no_real_image=3" in err
    assert [[g.generator for g in r.generations] for r in read_d3(out)] == [["sd"]] * 3
    # a build that writes nothing is an error, not a success
    assert main(["data", "build", "--prompts", str(prompts), "--out", str(tmp_path / "v"),
                 "-g", f"vae=vae:{models.vae}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("deepsift: error: data build wrote no record") and "no_real_image=3" in err[-1]


def test_build_json_records_every_generator_of_the_dataset(models, tmp_path):
    src = write_prompts(tmp_path / "in", 2)
    base = tmp_path / "base"
    assert main(["data", "build", "--prompts", str(src), "--out", str(base), "-g", sd_spec(models)]) == 0
    first = json.loads((base / "build.json").read_text())
    assert first["generators"] == [sd_spec(models)] and "additions" not in first
    assert main(["data", "build", "--add-to", str(base), "-g", sd_spec(models, "sd2")]) == 0  # in place
    grown = json.loads((base / "build.json").read_text())
    assert grown == {**first, "additions": [{"generators": [sd_spec(models, "sd2")]}]}
    assert main(["data", "build", "--add-to", str(base), "-g", sd_spec(models, "sd2")]) == 0  # the same again
    assert json.loads((base / "build.json").read_text()) == grown
    copy = tmp_path / "copy"
    assert main(["data", "build", "--add-to", str(base), "--out", str(copy), "-g", sd_spec(models, "sd3")]) == 0
    assert json.loads((copy / "build.json").read_text())["additions"] == grown["additions"] + [
        {"generators": [sd_spec(models, "sd3")]}]
    # the original build still restarts against its settings (its additions do not count as other settings)
    assert main(["data", "build", "--prompts", str(src), "--out", str(base), "-g", sd_spec(models)]) == 0


def test_an_image_depends_on_its_record_not_on_the_batch_it_was_made_in(models, tmp_path):
    """Other chunk sizes, a failed neighbour, --add-to: the same record gets the same bytes (batch=2 here)."""
    src = write_prompts(tmp_path / "in", 5, [json.dumps({"id": "blank", "prompt": " "})])
    lines = src.read_text().splitlines()
    src.write_text("\n".join(lines[:2] + [lines[-1]] + lines[2:-1]) + "\n")  # the blank prompt shifts the batches
    runs = {}
    for chunk in (3, 4, 64):
        out = tmp_path / f"c{chunk}"
        build(str(src), [parse_spec(sd_spec(models))], out, chunk_size=chunk, threads=1)
        runs[chunk] = {r.id: r.generations[0].image for r in read_d3(out)}
    assert runs[3] == runs[4] == runs[64] and len(runs[3]) == 5
    base = tmp_path / "base"
    build(str(src), [parse_spec(f"vae=vae:{models.vae}")], base, chunk_size=2, threads=1)
    build(None, [parse_spec(sd_spec(models))], tmp_path / "grown", add_to=str(base), threads=1)
    grown = {r.id: [g.image for g in r.generations if g.generator == "sd"][0] for r in read_d3(tmp_path / "grown")}
    assert {i: grown[i] for i in runs[3]} == runs[3]


def test_a_moved_build_folder_with_its_prompts_inside_resumes(models, tmp_path):
    """A prompt file inside the build folder is recorded relative to it, so the moved folder resumes (nothing is
    made again) and its real images are still found; a prompt file outside the folder is recorded as given."""
    from deepsift.train.data import _build_reals

    out = tmp_path / "out"
    src = write_prompts(out / "prompts", 3)
    specs = [parse_spec(f"vae=vae:{models.vae}")]
    first = build(str(src), specs, out, chunk_size=2)
    manifest = json.loads((out / "build.json").read_text())
    assert manifest["source"] == "prompts/prompts.jsonl" and manifest["source_relative"] is True
    moved = tmp_path / "moved"
    os.rename(out, moved)
    again = build(str(moved / "prompts" / "prompts.jsonl"), specs, moved, chunk_size=2)
    assert again.chunks_resumed == again.chunks == first.chunks == 2 and again.records == 3
    assert sorted(_build_reals(moved)) == ["rec0", "rec1", "rec2"]  # the moved prompt file's real images
    elsewhere = tmp_path / "elsewhere"
    build(str(moved / "prompts" / "prompts.jsonl"), specs, elsewhere, chunk_size=2)
    assert json.loads((elsewhere / "build.json").read_text()) == {
        "source": str(moved / "prompts" / "prompts.jsonl"), "add_to": False, "generators": [specs[0].to_text()],
        "chunk_size": 2}
