"""Test sets (sources, anonymity, split) and predictions files (every way a file can be wrong)."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from deepsift.challenges import service
from deepsift.challenges.models import Submission
from deepsift.challenges.spec import TestSetSpec, load_spec
from deepsift.challenges.testsets import Item, collect, split_public
from deepsift.evaluate.scorefiles import join as join_scores
from deepsift.evaluate.scorefiles import read_aligned_scores, read_labels, read_scores
from deepsift.exceptions import EvaluationError, InvalidInputError
from platformkit import csv_text, good_scores, host_challenge, join, register, submit


def _real_folder(root, n: int = 6):
    """A fetch-real folder: <id>.<ext> images of mixed sizes (some with EXIF) and status.jsonl."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(5)
    with open(root / "status.jsonl", "w") as st:
        for i in range(n):
            w, h = 20 + 7 * i, 30 + 3 * i
            im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
            exif = Image.Exif()
            exif[0x010F] = "CameraMaker"  # Make
            name = f"{100000 + i}.jpg"
            im.save(root / name, exif=exif.tobytes())
            st.write(json.dumps({"id": str(100000 + i), "status": "ok", "path": name}) + "\n")
    return root


def test_d3_shards_and_fetched_reals_become_one_anonymous_format(app, client, tmp_path):
    from data_factory import make_shards

    from deepsift.challenges.spec import parse_spec
    from deepsift.server.accounts import create_user

    make_shards(tmp_path / "shards", n_records=6, per_shard=3, n_gen=2)
    real = _real_folder(tmp_path / "real")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(f"""
slug: d3
title: D3 shards
image_format: png
resize: 32
phases:
  - slug: dev
    starts: 2020-01-01T00:00:00Z
    ends: 2099-01-01T00:00:00Z
    testset: {{source: d3-shards, path: shards, real: real, transform: [jpeg], seed: 3}}
""")
    spec = load_spec(spec_file)
    assert spec.phases[0].testset.path == str(tmp_path / "shards")  # relative to the spec file
    items = collect(spec.phases[0].testset)
    assert len(items) == 2 * (6 * 2 + 6) and sum(it.transformed for it in items) == 6 * 2 + 6
    with app.state.db.session(write=True) as s:
        host = create_user(s, username="host", password="host-password", role="host")
        service.create_challenge(s, parse_spec(spec.model_dump()), host)
    ts = service.import_testset(app.state.db, app.state.storage, "d3", "dev", items, image_format="png", resize=32,
                                seed=3, threads=2)
    folder = app.state.storage.root / ts.folder
    with zipfile.ZipFile(folder / "testset.zip") as zf:
        members = [n for n in zf.namelist() if n.startswith("images/")]
        assert members == sorted(members)  # name order: random, so no order leaks the label
        sizes, formats, infos = set(), set(), []
        for n in members:
            im = Image.open(io.BytesIO(zf.read(n)))
            sizes.add(im.size)
            formats.add(im.format)
            infos.append(set(im.info) - {"dpi"})
            assert zf.getinfo(n).date_time == (1980, 1, 1, 0, 0, 0)
    assert sizes == {(32, 32)} and formats == {"PNG"}  # no size or format tells real from fake
    assert all(not i for i in infos) and not any(b"CameraMaker" in p.read_bytes() for p in (folder / "images").iterdir())
    key = service.load_key(folder)
    assert set(key.generators) == {"real", "stable-diffusion-1-4", "stable-diffusion-2-1"}
    names = key.names.to_pylist()
    assert all(len(n) == 20 and n.endswith(".png") for n in names) and len(set(names)) == len(names)


def test_an_answer_key_alone_makes_a_predictions_only_phase(app, client, tmp_path):
    from deepsift.challenges.spec import parse_spec
    from deepsift.server.accounts import create_user
    from platformkit import spec_dict

    key = tmp_path / "key.csv"
    key.write_text("id,label,generator,transformed\n" + "".join(
        f"img{i},{i % 2},{'real' if i % 2 == 0 else 'sdxl'},{i % 3 == 0}\n" for i in range(40)))
    with app.state.db.session(write=True) as s:
        host = create_user(s, username="host", password="host-password", role="host")
        service.create_challenge(s, parse_spec(spec_dict("k")), host)
    ts = service.import_testset(app.state.db, app.state.storage, "k", "dev",
                                collect(TestSetSpec(source="labels", labels=str(key))))
    assert not ts.has_images and ts.n_images == 40
    alice = register(client, "alice")
    client.post("/api/challenges/k/teams", json={"name": "Team A"}, headers=alice.auth)
    assert client.get("/api/challenges/k/phases/dev/download", headers=alice.auth).status_code == 404
    r = client.post("/api/challenges/k/phases/dev/submissions", headers=alice.auth,
                    files={"file": ("p.csv", "id,score\n" + "".join(f"img{i},{i % 2}\n" for i in range(40)))})
    assert r.status_code == 201, r.text
    r = client.post("/api/challenges/k/phases/dev/submissions", headers=alice.auth, data={"kind": "model"},
                    files={"file": ("m.onnx", b"\x08\x07" + b"x" * 30)})
    assert r.status_code == 409 and "no images" in r.json()["detail"]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\na,1\na,0\n")
    with pytest.raises(InvalidInputError, match="line 3: duplicate id"):
        collect(TestSetSpec(source="labels", labels=str(bad)))


def test_the_public_private_split_is_stratified_and_seeded():
    items = [Item(None, int(g != "real"), g, t) for g in ("real", "a", "b") for t in (False, True) for _ in range(20)]
    pub = split_public(items, 0.3, seed=1)
    for g in ("real", "a", "b"):
        for t in (False, True):
            idx = [i for i, it in enumerate(items) if it.generator == g and it.transformed == t]
            assert pub[idx].sum() == 6  # 30 % of 20 in every stratum
    assert (split_public(items, 0.3, seed=1) == pub).all() and not (split_public(items, 0.3, seed=2) == pub).all()
    tiny = [Item(None, 0, "real", False), Item(None, 1, "x", False), Item(None, 1, "x", False)]
    p = split_public(tiny, 0.5, 0)
    assert p[1:].sum() == 1  # a two-image stratum gives one to each part


# -- predictions files: every way to be wrong -------------------------------------------------------
def _cases(names: list[str]) -> list[tuple[str, bytes, list[str]]]:
    n0, n1, n2 = names[0], names[1], names[2]
    body = "".join(f"{n},0.5\n" for n in names[3:])
    return [
        ("unknown.csv", f"id,score\n{n0},0.1\n{n1},0.2\nnot-an-image.png,0.3\n{n2},0.4\n{body}".encode(),
         ["1 id(s) not in the test set", "'not-an-image.png' (line 4)"]),
        ("duplicate.csv", f"id,score\n{n0},0.1\n{n0},0.2\n{n1},0.3\n{n2},0.4\n{body}".encode(),
         ["duplicate ids", repr(n0)]),
        ("missing.csv", f"id,score\n{n0},0.1\n{body}".encode(), ["2 id(s) of the test set missing", repr(n1)]),
        ("text.csv", f"id,score\n{n0},0.1\n{n1},high\n{n2},0.4\n{body}".encode(),
         ["1 non-numeric or NaN score", f"{n1} (line 3): 'high'"]),
        ("nan.csv", f"id,score\n{n0},nan\n{n1},0.2\n{n2},0.4\n{body}".encode(), [f"{n0} (line 2): 'nan'"]),
        ("inf.csv", f"id,score\n{n0},0.1\n{n1},inf\n{n2},-inf\n{body}".encode(),
         ["2 non-numeric or NaN score", f"{n1} (line 3): 'inf'", f"{n2} (line 4): '-inf'"]),
        ("latin1.csv", f"id,score\n{n0},0.1\n".encode() + "caf\xe9,0.2\n".encode("latin-1"),
         ["cannot read", "utf-8"]),
        ("shape.csv", f"name,value_x\n{n0},0.1\n".encode(), ["needs an id column", "got ['name', 'value_x']"]),
        ("extra.csv", f"id,score\n{n0},0.1,oops\n".encode(), ["line 2: 3 fields but the header has 2"]),
        ("list.json", b"[0.1, 0.2]", ["line 1: row is not an object"]),
        ("scalar.json", b"42", ["expected a JSON object"]),
        ("broken.json", b'{"a": 1', ["invalid JSON"]),
        ("bool.json", json.dumps({n: True for n in names}).encode(), ["non-numeric or NaN score", "True"]),
        ("labels.csv", f"id,score,label\n{n0},0.1,maybe\n".encode() + "".join(
            f"{n},0.5,1\n" for n in names[1:]).encode(), ["bad label", f"{n0} (line 2): 'maybe'"]),
        ("empty.csv", b"", ["no scores"]),
        ("preds.txt", b"whatever", ["predictions are .csv", "got .txt"]),
    ]


def test_bad_predictions_are_refused_with_the_first_offending_rows(app, client, tmp_path, database_url):
    hosted = host_challenge(app, client, tmp_path, max_total=1)
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    problems = []
    for name, data, expected in _cases(hosted.names):
        r = submit(client, hosted, alice, data, name)
        detail = r.json().get("detail", "") if r.headers.get("content-type", "").startswith("application/json") else ""
        if r.status_code != 422 or not all(e in detail for e in expected):
            problems.append(f"{name}: {r.status_code} {detail!r} (expected {expected})")
        assert str(app.state.settings.data_dir) not in detail  # no server path in messages
    assert not problems, "\n".join(problems)
    with app.state.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Submission)) == 0
    assert not any((app.state.storage.root / "challenges" / "uploads").iterdir())
    # none of them counted: the one allowed submission is still free
    assert submit(client, hosted, alice, csv_text(good_scores(hosted))).status_code == 201


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json-object", "json-rows"])
def test_the_fast_reader_agrees_with_the_row_by_row_reader(tmp_path, fmt):
    rng = np.random.default_rng(0)
    ids = [f" img {i:04d}.png" if i % 7 == 0 else f"img{i:04d}.png" for i in range(300)]  # stray spaces, odd names
    vals = rng.random(300)
    vals[5] = 1e-320  # a subnormal
    order = rng.permutation(300)
    p = tmp_path / f"p.{fmt.split('-')[0]}"
    if fmt == "csv":
        p.write_text("ID , Probability,label\n" + "".join(f'"{ids[i]}", {float(vals[i])!r} ,{["real", "fake"][i % 2]}\n'
                                                         for i in order))
    elif fmt == "jsonl":
        p.write_text("".join(json.dumps({"file": ids[i], "score": float(vals[i])}) + "\n\n" for i in order))
    elif fmt == "json-object":
        p.write_text(json.dumps({ids[i]: float(vals[i]) for i in order}))
    else:
        p.write_text(json.dumps([{"id": ids[i], "score": float(vals[i])} for i in order]))
    wanted = [i.strip() for i in ids]
    if fmt != "json-rows":  # the vectorised path really takes these files (it does not fall back)
        import pyarrow as pa

        from deepsift.evaluate.scorefiles import SCORE_COLUMNS, _fast_aligned

        assert _fast_aligned(p, pa.array(wanted), SCORE_COLUMNS, True) is not None
    fast = read_aligned_scores(p, wanted)
    slow = read_scores(p)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\n" + "".join(f"{w},{k % 2}\n" for k, w in enumerate(wanted)))
    _, _, joined = join_scores(read_labels(labels), slow, str(p))
    assert np.array_equal(fast.scores, joined)
    if fmt == "csv":
        assert fast.labels.tolist() == [k % 2 for k in range(300)]


def test_the_fast_reader_errors_match_the_row_by_row_ones(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("id,score\na,0.1\nb,x\nb,0.3\n")
    with pytest.raises(EvaluationError) as slow:
        read_scores(p)
    with pytest.raises(EvaluationError) as fast:
        read_aligned_scores(p, ["a", "b"])
    assert str(fast.value) == str(slow.value)
