"""The command line: a host creates a challenge from YAML; a participant logs in, downloads, submits, checks, reads the board."""
from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
import threading
import zipfile

import pytest

from deepsift.cli import main
from platformkit import make_folders


@pytest.fixture
def worker(app):
    """An in-process scoring worker polling the queue for the whole test."""
    from deepsift.challenges.settings import ChallengeSettings
    from deepsift.challenges.worker import Worker

    w = Worker(app.state.db, app.state.storage, ChallengeSettings(), poll_s=0.05)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    yield w
    w.stop.set()
    t.join(30)


def test_host_and_participant_on_the_command_line(app, live_server, worker, server_settings, tmp_path, capsys,
                                                  monkeypatch):
    db_args = ["--database-url", server_settings.db_url, "--data-dir", str(server_settings.data_dir)]
    monkeypatch.setenv("DEEPSIFT_CLIENT_CONFIG", str(tmp_path / "cfg" / "client.json"))
    monkeypatch.delenv("DEEPSIFT_TOKEN", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO("host-password\n"))
    assert main(["admin", "add-user", "hoster", "--role", "host", "--password-stdin", *db_args]) == 0
    make_folders(tmp_path / "data-src", n=6)
    (tmp_path / "spec.yaml").write_text("""
slug: cli-challenge
title: From the command line
phases:
  - slug: dev
    starts: 2020-01-01T00:00:00Z
    ends: 2099-01-01T00:00:00Z
    ranking_metric: ap
    bootstrap: 20
    testset: {source: folders, path: data-src}
""")
    assert main(["challenges", "create", str(tmp_path / "spec.yaml"), "--host-user", "hoster", *db_args]) == 0
    assert "created challenge cli-challenge" in capsys.readouterr().out

    srv = ["--server", live_server.url]
    # a participant: register over the API, log in from the CLI (the token lands in a 0600 config file)
    import httpx

    assert httpx.post(live_server.url + "/api/auth/register",
                      json={"username": "alice", "password": "alice-password"}).status_code == 201
    monkeypatch.setattr("sys.stdin", io.StringIO("alice-password\n"))
    assert main(["challenges", "login", *srv, "--username", "alice", "--password-stdin"]) == 0
    cfg = tmp_path / "cfg" / "client.json"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600 and json.loads(cfg.read_text())["default_server"] == live_server.url
    token = json.loads(cfg.read_text())["servers"][live_server.url]["token"]
    httpx.post(live_server.url + "/api/challenges/cli-challenge/teams", json={"name": "CLI Team"},
               headers={"Authorization": f"Bearer {token}"})

    out = tmp_path / "dl"
    out.mkdir()
    assert main(["challenges", "download", "--challenge", "cli-challenge", "--phase", "dev", "--out", str(out)]) == 0
    archive = out / "cli-challenge-dev-testset.zip"
    with zipfile.ZipFile(archive) as zf:
        ids = [n[7:] for n in zf.namelist() if n.startswith("images/")]
        sample = zf.read("sample_submission.csv").decode()
    assert len(ids) == 18 and sorted(r["id"] for r in csv.DictReader(io.StringIO(sample))) == sorted(ids)
    # a FIFO (like /dev/null) is written through, never replaced by a rename
    fifo = tmp_path / "archive.fifo"
    os.mkfifo(fifo)
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(open(fifo, "rb").read()), daemon=True)
    reader.start()
    assert main(["challenges", "download", "--challenge", "cli-challenge", "--phase", "dev", "--out", str(fifo)]) == 0
    reader.join(timeout=60)
    assert bytes(got) == archive.read_bytes() and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert not list(tmp_path.glob("archive.fifo.part"))
    capsys.readouterr()

    preds = tmp_path / "preds.csv"
    preds.write_text("id,score\n" + "".join(f"{i},{k % 3 / 2}\n" for k, i in enumerate(ids)))
    assert main(["challenges", "submit", "--challenge", "cli-challenge", "--phase", "dev", str(preds), "--wait",
                 "--timeout", "120", "--format", "json"]) == 0
    [sub] = json.loads(capsys.readouterr().out)  # one row, every field (json/jsonl carry them all)
    assert sub["state"] == "scored" and sub["public_score"] is not None

    assert main(["challenges", "status", sub["id"], "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["state"] == "scored"
    assert main(["challenges", "status", "--challenge", "cli-challenge", "--phase", "dev", "--format", "csv"]) == 0
    assert sub["id"] in capsys.readouterr().out

    assert main(["challenges", "leaderboard", "--challenge", "cli-challenge", "--phase", "dev", "--format", "csv"]) == 0
    text = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["team"] == "CLI Team" and float(rows[0]["ap"]) == pytest.approx(sub["public_score"], abs=1e-4)
    # one CSV form: the command line writes exactly what the API serves
    assert text == httpx.get(live_server.url + "/api/challenges/cli-challenge/phases/dev/leaderboard",
                             params={"format": "csv"}).text

    # a bad file: exit 1, the server's reason on one line, nothing counted
    bad = tmp_path / "bad.csv"
    bad.write_text("id,score\nnope,1\n")
    assert main(["challenges", "submit", "--challenge", "cli-challenge", "--phase", "dev", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "422" in err and "'nope' (line 2)" in err

    # a model whose scoring fails (one value per image expected, it returns three): --wait exits 3,
    # the row says why and so does one line on stderr; the same model sent as predictions: refused (1)
    from test_challenges_models import SPEC, wrong_shape_model

    model, spec = wrong_shape_model(tmp_path / "bad.onnx"), tmp_path / "spec.json"
    spec.write_text(SPEC)
    assert main(["challenges", "submit", "--challenge", "cli-challenge", "--phase", "dev", str(model), "--model-spec",
                 str(spec), "--wait", "--timeout", "300", "--format", "csv", "--out", str(tmp_path / "m.csv")]) == 3
    [row] = list(csv.DictReader(open(tmp_path / "m.csv")))
    err = capsys.readouterr().err.strip().splitlines()
    assert row["state"] == "failed" and row["kind"] == "model" and row["reason"]
    assert err[-1] == f"deepsift: submission {row['id']} failed: {row['reason']}"
    assert main(["challenges", "submit", "--challenge", "cli-challenge", "--phase", "dev", str(model), "--kind",
                 "predictions"]) == 1
    assert main(["challenges", "submit", "--challenge", "cli-challenge", "--phase", "dev", str(preds), "--model-spec",
                 str(spec)]) == 2
    assert "--model-spec describes a model" in capsys.readouterr().err

    # DEEPSIFT_TOKEN wins over the config file; without any token: a usage error
    monkeypatch.setenv("DEEPSIFT_TOKEN", "dsk_not-a-real-token")
    assert main(["challenges", "status", sub["id"]]) == 1
    assert "invalid or revoked" in capsys.readouterr().err
    monkeypatch.delenv("DEEPSIFT_TOKEN")
    os.remove(cfg)
    assert main(["challenges", "status", *srv, sub["id"]]) == 2
    assert "no API token" in capsys.readouterr().err
    assert main(["challenges", "leaderboard", *srv, "--challenge", "cli-challenge", "--phase", "dev"]) == 0  # public


def test_deepsift_serve_alone_scores_submissions(tmp_path):
    """No set-up: `deepsift serve` runs a scoring worker beside itself, and stops it when it stops."""
    import httpx

    from deepsift.challenges import service
    from deepsift.challenges.spec import TestSetSpec, parse_spec
    from deepsift.challenges.testsets import collect
    from deepsift.server.accounts import create_user
    from deepsift.server.db import Database
    from deepsift.server.migrate import upgrade
    from deepsift.server.storage import Storage
    from platformkit import spec_dict
    from serverkit import ServeProcess, wait_gone

    url, data = f"sqlite:///{tmp_path / 'alone.db'}", tmp_path / "data"
    db = Database(url)
    upgrade(db)
    with db.session(write=True) as s:
        host = create_user(s, username="host", password="host-password", role="host")
        service.create_challenge(s, parse_spec(spec_dict("alone")), host)
    key = tmp_path / "key.csv"
    key.write_text("id,label\n" + "".join(f"i{k},{k % 2}\n" for k in range(20)))
    service.import_testset(db, Storage(data / "storage"), "alone", "dev",
                           collect(TestSetSpec(source="labels", labels=str(key))))
    db.dispose()
    with ServeProcess(url, data, scoring_workers=1, args=("--verbose",)) as srv:  # its worker announces each job
        c = httpx.Client(base_url=srv.url, timeout=60)
        c.post("/api/auth/register", json={"username": "solo", "password": "solo-password"})
        tok = c.post("/api/auth/token", json={"username": "solo", "password": "solo-password"}).json()["token"]
        c.headers["Authorization"] = f"Bearer {tok}"
        c.post("/api/challenges/alone/teams", json={"name": "Solo"})
        sid = c.post("/api/challenges/alone/phases/dev/submissions",
                     files={"file": ("p.csv", "id,score\n" + "".join(f"i{k},{k % 2}\n" for k in range(20)))}).json()["id"]
        said = srv.wait_line(rf"^deepsift: job {sid} (scored|failed) by serve-0\b", 180,
                             "the submission to be scored by serve's own worker")
        sub = c.get(f"/api/submissions/{sid}").json()
        assert said[1] == "scored" and sub["state"] == "scored" and sub["events"][1]["worker"] == "serve-0", sub
        workers = [p for p in os.listdir("/proc") if p.isdigit() and _ppid(p) == srv.proc.pid]
        assert len(workers) == 1
        # serving and scoring predictions need numpy and the evaluate metrics, never torch
        for pid in (str(srv.proc.pid), *workers):
            assert not _maps_with(pid, "libtorch"), f"process {pid} loaded torch"
        # a client command loads httpx, not the server's stack nor numpy
        assert loaded(["challenges", "leaderboard", "--server", srv.url, "--challenge", "alone", "--phase", "dev",
                       "--format", "json"]) == set()
    wait_gone(workers, 30, "serve's worker to stop with it")


HEAVY = ("torch", "transformers", "numpy", "fastapi", "sqlalchemy", "pydantic", "uvicorn", "PIL")


def loaded(argv: list[str]) -> set[str]:
    """The heavy libraries a fresh process holds after running ``deepsift ARGV`` (which must exit 0)."""
    code = ("import sys; from deepsift.cli import main; rc = main(sys.argv[1:]); "
            f"print('LOADED', *sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})), file=sys.stderr); "
            "sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stderr.rsplit("LOADED", 1)[1].split())


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["admin", "add-user", "--help"],
                                  ["challenges", "--help"], ["challenges", "submit", "--help"]])
def test_help_loads_no_server_stack(argv):
    """`deepsift --help` and every platform command's help build their parsers from the grammar alone."""
    assert loaded(argv) == set()


def _maps_with(pid: str, needle: str) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as fh:
            return needle in fh.read()
    except OSError:
        return False


def _ppid(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def test_the_participants_path_download_detect_submit(app, live_server, worker, server_settings, code_model_dir,
                                                      tmp_path, capsys, monkeypatch):
    """As a participant would try it: download --extract, deepsift detect on the folder, submit detect's CSV as is."""
    import httpx
    import numpy as np

    from deepsift.model.detector import Detector
    from deepsift.model.headset import save_headset
    from deepsift.model.heads import make_head

    db_args = ["--database-url", server_settings.db_url, "--data-dir", str(server_settings.data_dir)]
    monkeypatch.setenv("DEEPSIFT_CLIENT_CONFIG", str(tmp_path / "cfg" / "client.json"))
    monkeypatch.delenv("DEEPSIFT_TOKEN", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO("host-password\n"))
    assert main(["admin", "add-user", "pathhost", "--role", "host", "--password-stdin", *db_args]) == 0
    make_folders(tmp_path / "src", n=4)
    (tmp_path / "spec.yaml").write_text("slug: path-challenge\ntitle: t\nphases:\n  - slug: dev\n"
                                        "    starts: 2020-01-01T00:00:00Z\n    ends: 2099-01-01T00:00:00Z\n"
                                        "    bootstrap: 0\n    testset: {source: folders, path: src}\n")
    assert main(["challenges", "create", str(tmp_path / "spec.yaml"), "--host-user", "pathhost", *db_args]) == 0
    assert httpx.post(live_server.url + "/api/auth/register",
                      json={"username": "pat", "password": "pat-password"}).status_code == 201
    monkeypatch.setattr("sys.stdin", io.StringIO("pat-password\n"))
    assert main(["challenges", "login", "--server", live_server.url, "--username", "pat", "--password-stdin"]) == 0
    token = json.loads((tmp_path / "cfg" / "client.json").read_text())["servers"][live_server.url]["token"]
    httpx.post(live_server.url + "/api/challenges/path-challenge/teams", json={"name": "Pat"},
               headers={"Authorization": f"Bearer {token}"})
    capsys.readouterr()

    assert main(["challenges", "download", "--challenge", "path-challenge", "--phase", "dev", "--out",
                 str(tmp_path / "data"), "--extract"]) == 0
    folder = tmp_path / "data" / "path-challenge-dev"
    assert capsys.readouterr().out.strip() == str(folder)
    images = sorted((folder / "images").iterdir())
    assert len(images) == 12 and (folder / "sample_submission.csv").is_file()

    heads = tmp_path / "heads"  # any heads fitted on this backbone will do: the path is what is tested
    X = Detector.load_backbone_only(str(code_model_dir), device="cpu").embed([str(p) for p in images[:6]])
    save_headset({"linear": make_head("linear").fit(X.astype(np.float64), np.arange(6) % 2)}, heads)
    assert main(["detect", str(folder / "images"), "--model", str(code_model_dir), "--heads", str(heads),
                 "--format", "csv", "--out", str(tmp_path / "preds.csv")]) == 0
    first = next(csv.DictReader(open(tmp_path / "preds.csv")))
    assert "/" in first["source"]  # detect writes paths, the platform knows file names
    assert main(["challenges", "submit", "--challenge", "path-challenge", "--phase", "dev",
                 str(tmp_path / "preds.csv"), "--wait", "--timeout", "120", "--format", "json"]) == 0
    [sub] = json.loads(capsys.readouterr().out)
    assert sub["state"] == "scored"

    # two rows naming the same image by different paths: refused as a duplicate, never guessed
    rows = (tmp_path / "preds.csv").read_text().splitlines()
    dup = rows[1].replace(str(folder / "images"), str(tmp_path / "elsewhere"))
    (tmp_path / "dup.csv").write_text("\n".join(rows[:1] + [dup] + rows[1:]) + "\n")
    assert main(["challenges", "submit", "--challenge", "path-challenge", "--phase", "dev",
                 str(tmp_path / "dup.csv")]) == 1
    assert "422" in capsys.readouterr().err


@pytest.mark.parametrize("member", ["images/../evil.png", "/abs.png", "images/sub/x.png", "other/x.png", "../up.txt"])
def test_extract_refuses_a_member_outside_the_layout_and_leaves_nothing(tmp_path, member):
    from deepsift.challenges.client import ClientError, extract_images

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("images/ok.png", b"x")
        zf.writestr(member, b"y")
    with pytest.raises(ClientError, match="unexpected member"):
        extract_images(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]
    assert not (tmp_path.parent / "evil.png").exists()


def test_team_commands_and_entry_options(app, client, live_server, tmp_path, capsys, monkeypatch):
    """`challenges team create|join|show|leave` (no curl needed) and `submit --method ... --not-on-board`."""
    from platformkit import csv_text, good_scores, host_challenge, register

    h = host_challenge(app, client, tmp_path)
    alice, bob = register(client, "alice"), register(client, "bob")
    monkeypatch.setenv("DEEPSIFT_CLIENT_CONFIG", str(tmp_path / "cfg" / "client.json"))
    monkeypatch.setenv("DEEPSIFT_SERVER", live_server.url)
    monkeypatch.setenv("DEEPSIFT_TOKEN", alice.token)
    team = ["challenges", "team"]
    assert main([*team, "show", "--challenge", h.slug]) == 1
    assert "not in a team" in capsys.readouterr().err
    assert main([*team, "create", "--challenge", h.slug, "Team A", "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["name"] == "Team A" and row["members"] == ["alice"] and row["captain"] == "alice"
    assert main([*team, "create", "--challenge", h.slug, "Team B"]) == 1
    err = capsys.readouterr().err
    assert "already in a team" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("DEEPSIFT_TOKEN", bob.token)
    assert main([*team, "join", "--challenge", h.slug, "not-a-code"]) == 1
    assert "invite code" in capsys.readouterr().err
    assert main([*team, "join", "--challenge", h.slug, row["invite_code"], "--format", "csv"]) == 0
    [shown] = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert shown["members"] == "alice, bob" and shown["captain"] == "alice"
    assert main([*team, "show", "--challenge", h.slug]) == 0
    assert "alice, bob" in capsys.readouterr().out
    assert main([*team, "leave", "--challenge", h.slug, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["members"] == ["alice"]
    assert main([*team, "show", "--challenge", h.slug]) == 1
    capsys.readouterr()

    monkeypatch.setenv("DEEPSIFT_TOKEN", alice.token)
    preds = tmp_path / "preds.csv"
    preds.write_text(csv_text(good_scores(h)))
    sub = ["challenges", "submit", "--challenge", h.slug, "--phase", "dev", str(preds)]
    assert main([*sub, "--method-url", "javascript:alert(1)"]) == 1
    assert "link" in capsys.readouterr().err
    assert main([*sub, "--method", "CoDE", "--method-description", "ViT-Tiny", "--method-url",
                 "https://github.com/aimagelab/CoDE", "--not-on-board", "--format", "json"]) == 0
    [s] = json.loads(capsys.readouterr().out)
    assert (s["method_name"], s["method_description"], s["method_url"], s["public"]) == (
        "CoDE", "ViT-Tiny", "https://github.com/aimagelab/CoDE", False)


def test_ids_and_invite_codes_never_read_as_an_option():
    """An invite code starting with ``-`` (1 in 64 of ``token_urlsafe``'s) made ``team join CODE`` fail as an option."""
    from deepsift.server.db import new_id

    ids = [new_id(12) for _ in range(5000)]  # P(no leading "-" in 5000 draws of the old ids) ~ 5e-35
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids) and all(len(i) == 16 for i in ids)
    assert any(i.startswith("_") for i in ids)  # the rest of the alphabet is kept
