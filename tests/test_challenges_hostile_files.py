"""Untrusted prediction/score files and host archives: never a crash, a deep recursion or unbounded memory.

Each hostile file is refused with a 422 naming its line (the CLI: one error line, a non-zero exit),
nothing is kept, nothing is counted. The payload that segfaulted pyarrow's JSON reader is run in
child processes, so a crash fails the test instead of killing pytest.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from deepsift.challenges.models import Submission
from deepsift.evaluate.scorefiles import read_aligned_scores, read_scores
from deepsift.exceptions import EvaluationError
from platformkit import csv_text, good_scores, host_challenge, join, make_folders, register, submit

REPO = Path(__file__).resolve().parent.parent
DEEP_JSONL = b'{"id":' + b"[" * 20_000 + b"]" * 20_000 + b',"score":0.5}'  # the 40 KB file of issue 17
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _child(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=ENV, timeout=120)


def test_the_file_that_crashed_pyarrow_is_refused_in_both_readers(tmp_path):
    bad = tmp_path / "deep.jsonl"
    bad.write_bytes(DEEP_JSONL + b"\n")
    # the platform's reader (vectorised path first), in a child: a segfault would be a negative return code
    code = ("import sys; from deepsift.evaluate.scorefiles import read_aligned_scores\n"
            "from deepsift.exceptions import EvaluationError\n"
            "try:\n    read_aligned_scores(sys.argv[1], ['a'])\n"
            "except EvaluationError as e:\n    print(e); sys.exit(3)\n")
    r = _child(code, str(bad))
    assert r.returncode == 3, (r.returncode, r.stderr[-500:])
    assert "line 1" in r.stdout and "nested deeper" in r.stdout
    # deepsift eval scores: one clear error line, a non-zero exit, no traceback
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\na,0\nb,1\n")
    r = subprocess.run([sys.executable, "-m", "deepsift", "eval", "scores", "--labels", str(labels), "--scores", str(bad)],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode > 0, (r.returncode, r.stderr[-500:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "line 1" in lines[0] and "Traceback" not in r.stderr, r.stderr[-500:]


def _hostile(names: list[str]) -> list[tuple[str, bytes, list[str]]]:
    """(file name, bytes, what the 422 must say): every way an upload tried to crash or bloat the server."""
    good = [f"{n},0.5\n" for n in names]
    head = "id,score\n"
    return [
        ("deep.jsonl", json.dumps({"id": names[0], "score": 0.1}).encode() + b"\n" + DEEP_JSONL + b"\n",
         ["line 2", "nested deeper"]),
        ("deep.json", b'{"' + names[0].encode() + b'": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
         ["line 1", "nested deeper"]),
        ("deep-rows.json", b'[\n{"id": "x", "score": 0.1},\n' + b"[" * 5_000 + b"]" * 5_000 + b"\n]",
         ["line 3", "nested deeper"]),
        ("closing.jsonl", b"]]]]\n" + b"[" * 50 + b"\n", ["line 1", "closing bracket"]),
        ("unterminated.jsonl", b'{"id": "abc\n' + b"[" * 50 + b'"}\n', ["line 1", "unterminated"]),
        ("field.csv", (head + good[0] + "x" * (200 << 10) + ",0.5\n").encode(), ["line 3", "longer than"]),
        ("quoted.csv", (head + good[0] + '"' + ("y" * 1000 + "\n") * 200 + '",0.5\n').encode(),
         ["line 3", "field larger than field limit"]),
        ("rows.csv", (head + "".join(good) + "".join(f"extra{i},0.5\n" for i in range(50_000))).encode(),
         [f"line {len(names) + 2}", "more rows than the test set has ids", "not in the test set"]),
        ("line.csv", (head + "z" * (3 << 20)).encode(), ["line 2", "longer than"]),
        ("nul.csv", (head + good[0] + good[1]).encode() + b"a\x00b,0.5\n" + "".join(good[2:]).encode(),
         ["line 4", "NUL"]),
        ("utf16.csv", (head + "".join(good)).encode("utf-16"), ["line 1", "cannot read", "utf-8"]),
        ("latin1.jsonl", json.dumps({"id": names[0], "score": 0.5}).encode() + b'\n{"id": "caf\xe9"}\n',
         ["line 2", "cannot read", "utf-8"]),
        ("padded.json", json.dumps({n: 0.5 for n in names}).encode()[:-1] + b" " * (4 << 20) + b"}",
         ["line 1", "larger than a predictions file for this test set can be"]),
    ]


def test_hostile_predictions_get_a_422_naming_the_line_and_leave_nothing(app, client, tmp_path):
    hosted = host_challenge(app, client, tmp_path, max_total=1)
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    problems = []
    for name, data, expected in _hostile(hosted.names):
        r = submit(client, hosted, alice, data, name)
        detail = r.json().get("detail", "") if r.headers.get("content-type", "").startswith("application/json") else ""
        if r.status_code != 422 or not all(e in detail for e in expected) or len(detail) > 2000:
            problems.append(f"{name}: {r.status_code} {detail[:300]!r} (expected {expected})")
    assert not problems, "\n".join(problems)
    with app.state.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Submission)) == 0
    assert not any((app.state.storage.root / "challenges" / "uploads").iterdir())
    assert submit(client, hosted, alice, csv_text(good_scores(hosted))).status_code == 201  # nothing was counted


def test_the_score_file_readers_refuse_the_same_files_without_a_server(tmp_path):
    names = [f"img{i}.png" for i in range(8)]
    for name, data, expected in _hostile(names):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(EvaluationError) as aligned:
            read_aligned_scores(p, names, ids_name="the test set")
        assert all(e in str(aligned.value) for e in expected), (name, str(aligned.value)[:300])
        if name not in ("rows.csv", "padded.json"):  # valid for a reader that knows no test set
            with pytest.raises(EvaluationError) as plain:
                read_scores(p)
            assert expected[0] in str(plain.value), (name, str(plain.value)[:300])


def test_a_host_archive_with_a_bad_crc_is_a_422_and_nothing_is_kept(app, client, tmp_path):
    hosted = host_challenge(app, client, tmp_path)
    src = make_folders(tmp_path / "upload-src", 4)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(src).as_posix())
    data = bytearray(buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        victim = zf.infolist()[-1]
    start = victim.header_offset + 30 + len(victim.filename.encode()) + len(victim.extra)
    data[start + victim.compress_size // 2] ^= 0xFF  # one flipped byte: the stored CRC no longer matches
    r = client.post(f"/api/challenges/{hosted.slug}/phases/dev/testset", files={"file": ("set.zip", bytes(data))},
                    headers=hosted.host.auth)
    assert r.status_code == 422, r.text
    assert "damaged" in r.json()["detail"] and victim.filename in r.json()["detail"]
    assert not any((app.state.storage.root / "challenges" / "incoming").iterdir())


def test_a_real_serve_survives_the_deep_jsonl_and_keeps_nothing(tmp_path):
    """The route of the real `deepsift serve` process: a 422, the server still answers, no folder left."""
    from deepsift.challenges import service
    from deepsift.challenges.spec import TestSetSpec, parse_spec
    from deepsift.challenges.testsets import collect
    from deepsift.server.accounts import create_user
    from deepsift.server.db import Database
    from deepsift.server.migrate import upgrade
    from deepsift.server.storage import Storage
    from platformkit import spec_dict
    from serverkit import ServeProcess

    url, data = f"sqlite:///{tmp_path / 'serve.db'}", tmp_path / "data"
    db = Database(url)
    upgrade(db)
    with db.session(write=True) as s:
        service.create_challenge(s, parse_spec(spec_dict("hostile")),
                                 create_user(s, username="host", password="host-password", role="host"))
    key = tmp_path / "key.csv"
    key.write_text("id,label\n" + "".join(f"i{k},{k % 2}\n" for k in range(20)))
    service.import_testset(db, Storage(data / "storage"), "hostile", "dev",
                           collect(TestSetSpec(source="labels", labels=str(key))))
    db.dispose()
    with ServeProcess(url, data) as srv:
        c = httpx.Client(base_url=srv.url, timeout=60)
        c.post("/api/auth/register", json={"username": "mallory", "password": "mallory-password"})
        tok = c.post("/api/auth/token", json={"username": "mallory", "password": "mallory-password"}).json()["token"]
        c.headers["Authorization"] = f"Bearer {tok}"
        assert c.post("/api/challenges/hostile/teams", json={"name": "Team Mallory"}).status_code == 201
        r = c.post("/api/challenges/hostile/phases/dev/submissions", files={"file": ("p.jsonl", DEEP_JSONL)})
        assert r.status_code == 422 and "line 1" in r.json()["detail"], r.text
        assert srv.proc.poll() is None and c.get("/healthz").status_code == 200
        uploads = data / "storage" / "challenges" / "uploads"
        assert not uploads.exists() or not any(uploads.iterdir())
        ok = c.post("/api/challenges/hostile/phases/dev/submissions",
                    files={"file": ("p.csv", "id,score\n" + "".join(f"i{k},{k % 2}\n" for k in range(20)))})
        assert ok.status_code == 201, ok.text


def test_a_predictions_file_is_parsed_with_no_database_connection_held(app, client, tmp_path, monkeypatch):
    """A large file takes seconds to validate: no transaction (nor pooled connection) is held meanwhile."""
    from deepsift.challenges import predictions

    hosted = host_challenge(app, client, tmp_path)
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    db, held, real = app.state.db, [], predictions.validate

    def watched(*args, **kw):  # the real validation, noting the connections checked out when it starts
        held.append(db.engine.pool.checkedout() + (db.write_engine.pool.checkedout()
                                                   if db.write_engine is not db.engine else 0))
        return real(*args, **kw)

    monkeypatch.setattr(predictions, "validate", watched)
    assert submit(client, hosted, alice, csv_text(good_scores(hosted))).status_code == 201
    assert submit(client, hosted, alice, b"id,score\nnope,1\n").status_code == 422
    assert held == [0, 0]


def test_truncated_or_corrupt_archives_are_refused_naming_the_member(tmp_path):
    import tarfile

    from deepsift.exceptions import UnsafeArchiveError
    from deepsift.server.storage import extract_archive

    payload = os.urandom(1 << 16)  # incompressible: a cut lands inside the member's data
    tgz = tmp_path / "set.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        info = tarfile.TarInfo("real/a.png")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tgz.read_bytes()[: tgz.stat().st_size * 2 // 3])
    deflated = tmp_path / "deflated.zip"
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("real/b.png", b"pixels " * 5000)
    data = bytearray(deflated.read_bytes())
    with zipfile.ZipFile(deflated) as zf:
        info = zf.infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 2: start + 12] = b"\xff" * 10  # a broken deflate stream
    bad_zip = tmp_path / "broken.zip"
    bad_zip.write_bytes(bytes(data))
    for path, member in ((cut, "real/a.png"), (bad_zip, "real/b.png")):
        with pytest.raises(UnsafeArchiveError) as exc:
            extract_archive(path, tmp_path / "out" / path.name)
        assert member in str(exc.value) or "not a readable" in str(exc.value), str(exc.value)
