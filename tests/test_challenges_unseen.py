"""Unseen-generator phases: seen / unseen / all figures on results and boards, ranking on unseen (issue 22.4)."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json

import numpy as np
import pytest
from sqlalchemy import update

from deepsift.challenges.models import Phase
from platformkit import csv_text, good_scores, host_challenge, join, register, run_worker, submit

GENS = ("gen_a", "gen_b", "gen_c")
TRAIN = ["gen_a", "gen_z"]  # gen_z: a training generator the test set does not hold (fine)


def _scores(hosted, team: str) -> dict[str, float]:
    """Real images spread over 0.1-0.4. Team A: seen fakes (gen_a) at 0.95, unseen ones half at 0.9 and half
    at 0.25 (amid the reals); team B: seen fakes at 0.05 (below every real), unseen ones at 0.9."""
    key = hosted.key
    reals = iter(np.linspace(0.1, 0.4, int((key.labels == 0).sum())))
    count: dict[str, int] = {}
    out = {}
    for name, lab, gen in zip(key.names.to_pylist(), key.labels, key.generators):
        count[gen] = count.get(gen, 0) + 1
        if lab == 0:
            v = next(reals)
        elif team == "Team A":
            v = 0.95 if gen == "gen_a" else (0.9 if count[gen] % 2 else 0.25)
        else:
            v = 0.05 if gen == "gen_a" else 0.9
        out[name] = round(float(v), 6)
    return out


def _end(app) -> None:
    with app.state.db.session(write=True) as s:
        s.execute(update(Phase).values(ends_at=dt.datetime.now(dt.timezone.utc)))  # after every entry so far


def _toolkit(key, scores: dict[str, float], mask: np.ndarray, tmp_path, name: str) -> dict:
    """`deepsift eval scores` on the key (rows in ``mask``), fakes relabelled seen/unseen: pooled figures."""
    from deepsift.cli import main

    tmp_path.mkdir(parents=True, exist_ok=True)
    key_csv, pred_csv, out = tmp_path / f"{name}-labels.csv", tmp_path / f"{name}.csv", tmp_path / f"{name}-report"
    names = key.names.to_pylist()
    with open(key_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "label", "generator"])
        for i in np.flatnonzero(mask):
            gen = "real" if key.labels[i] == 0 else ("seen" if key.generators[i] in TRAIN else "unseen")
            w.writerow([names[i], int(key.labels[i]), gen])
    pred_csv.write_text(csv_text({names[i]: scores[names[i]] for i in np.flatnonzero(mask)}))
    assert main(["eval", "scores", "--labels", str(key_csv), "--scores", str(pred_csv), "--report", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())["scores"][name]


def test_unseen_phase_figures_equal_the_toolkit_and_rank_on_unseen(app, client, live_server, tmp_path, capsys):
    """Team A: perfect on the seen generator, weak on the unseen ones; team B: the reverse trade-off.
    A leads on all and on seen images; the board ranks on unseen, so B is first: on JSON, CSV and pages.
    Every seen / unseen / all figure equals `deepsift eval scores` on the same key and file."""
    from deepsift.evaluate.metrics import compute_metrics

    hosted = host_challenge(app, client, tmp_path, n=12, generators=GENS, train_generators=TRAIN, rank_on="unseen")
    texts, sids = {}, {}
    for team in ("Team A", "Team B"):
        p = join(client, hosted.slug, register(client, team.lower().replace(" ", "")), team)
        texts[team] = _scores(hosted, team)
        r = submit(client, hosted, p, csv_text(texts[team]))
        assert r.status_code == 201, r.text
        sids[team] = (r.json()["id"], p)
    run_worker(app)
    _end(app)
    key = hosted.key
    figures = {}
    for team, (sid, p) in sids.items():
        sub = client.get(f"/api/submissions/{sid}", headers=p.auth).json()
        res = sub["scores"]
        assert res["rank_on"] == "unseen" and res["train_generators"] == sorted(TRAIN)
        assert res["seen_generators"] == ["gen_a"] and res["unseen_generators"] == ["gen_b", "gen_c"]
        for part, mask in (("all", np.ones(len(key), bool)), ("public", key.public), ("private", ~key.public)):
            ev = _toolkit(key, texts[team], mask, tmp_path / team.replace(" ", "") / part, "preds")
            got = res[part]
            for m in ("f1", "accuracy", "ap", "auroc", "tpr@1%fpr", "eer", "balanced_accuracy"):
                assert got["overall"][m] == pytest.approx(ev["all"]["metrics"][m]["value"], abs=1e-12), (part, m)
                for on in ("seen", "unseen"):
                    assert got["split"][on][m] == pytest.approx(ev[on]["metrics"][m]["value"], abs=1e-12), (part, on, m)
            n_real = int((key.labels[mask] == 0).sum())  # every real image counts in both, as the negatives
            assert got["split"]["seen"]["n"] == n_real + int((mask & (key.generators == "gen_a")).sum())
            n_unseen = int((mask & np.isin(key.generators, ["gen_b", "gen_c"])).sum())
            assert got["split"]["unseen"]["n"] == n_real + n_unseen
        assert sub["public_score"] == res["public"]["split"]["unseen"]["auroc"]  # the ranking value: unseen AUROC
        assert sub["private_score"] == res["private"]["split"]["unseen"]["auroc"]
        # the interval beside the ranking metric: the toolkit's bootstrap on the public part's unseen images
        names = key.names.to_pylist()
        sel = key.public & ((key.labels == 0) | np.isin(key.generators, ["gen_b", "gen_c"]))
        m = compute_metrics(key.labels[sel], np.array([texts[team][names[i]] for i in np.flatnonzero(sel)]),
                            bootstrap=50, seed=0)
        assert res["public"]["split_ci"]["unseen"]["auroc"] == pytest.approx([m.values["auroc"].low,
                                                                               m.values["auroc"].high], abs=1e-12)
        figures[team] = res["public"]
    a, b = figures["Team A"], figures["Team B"]  # the premise: ranking on all or seen would put A first
    assert a["overall"]["auroc"] > b["overall"]["auroc"] and a["split"]["seen"]["auroc"] > b["split"]["seen"]["auroc"]
    assert b["split"]["unseen"]["auroc"] > a["split"]["unseen"]["auroc"]

    url = f"/api/challenges/{hosted.slug}/phases/dev/leaderboard"
    board = client.get(url).json()
    assert board["rank_on"] == "unseen" and board["splits"] == ["seen", "unseen", "all"]
    assert [(r["rank"], r["team"]) for r in board["rows"]] == [(1, "Team B"), (2, "Team A")], board
    for r in board["rows"]:
        f = figures[r["team"]]
        assert r["split"]["all"]["auroc"] == round(f["overall"]["auroc"], 4)
        for on in ("seen", "unseen"):
            assert r["split"][on]["auroc"] == round(f["split"][on]["auroc"], 4)
        assert r["metrics"] == r["split"]["unseen"]
        assert r["ci95"] == [round(x, 4) for x in f["split_ci"]["unseen"]["auroc"]]
    rows = list(csv.DictReader(io.StringIO(client.get(url, params={"format": "csv"}).text)))
    assert [(r["rank"], r["team"]) for r in rows] == [("1", "Team B"), ("2", "Team A")]
    for r, jr in zip(rows, board["rows"]):
        for on in ("seen", "unseen", "all"):
            assert float(r[f"auroc_{on}"]) == jr["split"][on]["auroc"] and f"f1_{on}" in r
    from deepsift.cli import main

    capsys.readouterr()
    assert main(["challenges", "leaderboard", "--server", live_server.url, "--challenge", hosted.slug,
                 "--phase", "dev", "--format", "csv"]) == 0
    cli_rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    cols = ("auroc_unseen", "auroc_seen", "auroc_all", "f1_unseen")
    assert [(r["team"], *[float(r[c]) for c in cols]) for r in cli_rows] == \
        [(r["team"], *[float(r[c]) for c in cols]) for r in rows]
    html = client.get(f"/challenges/{hosted.slug}/phases/dev/leaderboard").text
    assert html.count('class="num split-unseen ranked"') == 2 * 5 + 5  # header + 2 rows, 5 metric columns
    assert "Team B" in html.split("Team A")[0]  # first row
    page = client.get(f"/challenges/{hosted.slug}").text
    assert "on unseen images" in page and "trained on: gen_a, gen_z" in page
    page = client.get(f"/submissions/{sids['Team A'][0]}", headers=sids["Team A"][1].auth).text
    assert "seen: real + gen_a" in page and "unseen: real + gen_b, gen_c" in page and "on the unseen images" in page
    auroc_unseen = f"{a['split']['unseen']['auroc']:.4f}"
    assert auroc_unseen in page.split("unseen: real + gen_b, gen_c", 1)[1].split("</tr>", 1)[0]


def test_rank_on_unseen_needs_an_unseen_generator_in_the_test_set(app, client, tmp_path):
    """A test set whose generators are all seen is refused at import (422, saying why) for rank_on unseen;
    rank_on without train_generators is refused in the spec; the split rules are fixed once submitted."""
    hosted = host_challenge(app, client, tmp_path, n=4, train_generators=["gen_a"], rank_on="unseen")
    url = f"/api/challenges/{hosted.slug}/phases/dev"
    key = tmp_path / "key.csv"
    key.write_text("id,label,generator\n" + "".join(f"r{i},0,real\nf{i},1,gen_a\n" for i in range(4)))
    with open(key, "rb") as fh:
        r = client.post(f"{url}/testset", files={"file": ("key.csv", fh)}, headers=hosted.host.auth)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "ranks on unseen generators, but its test set has none" in detail and "gen_a" in detail
    assert client.get(f"{url}/testset", headers=hosted.host.auth).json()["n_images"] == len(hosted.names)  # kept
    admin = client.get(f"/challenges/{hosted.slug}/admin", headers=hosted.host.auth).text
    assert 'gen_a <span class="badge split-seen">seen</span>' in admin
    assert 'gen_b <span class="badge split-unseen">unseen</span>' in admin
    spec = client.get(f"/api/challenges/{hosted.slug}").json()["phases"][0]
    assert spec["train_generators"] == ["gen_a"] and spec["rank_on"] == "unseen"
    body = {"slug": "dev", "starts": spec["starts_at"], "ends": spec["ends_at"], "bootstrap": 0,
            "train_generators": ["gen_a", "gen_b"], "rank_on": "unseen"}
    r = client.put(url, json=body, headers=hosted.host.auth)  # every generator of the test set now seen
    assert r.status_code == 422 and "has none" in r.json()["detail"], r.text
    r = client.put(url, json={**body, "train_generators": None}, headers=hosted.host.auth)
    assert r.status_code == 422 and "rank_on 'unseen' needs train_generators" in r.text
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    assert submit(client, hosted, alice, csv_text(good_scores(hosted))).status_code == 201
    r = client.put(url, json={**body, "train_generators": ["gen_b"], "bootstrap": 1000}, headers=hosted.host.auth)
    assert r.status_code == 409 and "train_generators" in r.json()["detail"], r.text


def test_a_phase_without_train_generators_is_scored_and_shown_as_before(app, client, tmp_path):
    hosted = host_challenge(app, client, tmp_path, n=4)
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    sid = submit(client, hosted, alice, csv_text(good_scores(hosted, 0.3))).json()["id"]
    run_worker(app)
    res = client.get(f"/api/submissions/{sid}", headers=alice.auth).json()
    assert not {"train_generators", "rank_on", "seen_generators", "unseen_generators"} & set(res["scores"])
    assert not {"split", "split_ci"} & set(res["scores"]["public"])
    assert res["public_score"] == res["scores"]["public"]["overall"]["auroc"]
    url = f"/api/challenges/{hosted.slug}/phases/dev/leaderboard"
    board = client.get(url).json()
    assert board["splits"] is None and board["rank_on"] == "all" and board["rows"][0]["split"] is None
    header = client.get(url, params={"format": "csv"}).text.splitlines()[0]
    assert header == ("rank,team,f1,accuracy,ap,auroc,tpr@1%fpr,ci95_low,ci95_high,submitted_at,submissions,flags,"
                      "method,method_url,disqualified")  # no seen/unseen columns
    assert "split-" not in client.get(f"/challenges/{hosted.slug}/phases/dev/leaderboard").text
    assert "split-phase" not in client.get(f"/challenges/{hosted.slug}").text
    page = client.get(f"/submissions/{sid}", headers=alice.auth).text
    assert "unseen:" not in page and "split-" not in page


def test_challenges_create_refuses_an_unseen_phase_without_unseen_generators(app, server_settings, tmp_path, capsys,
                                                                            monkeypatch):
    """`deepsift challenges create`: one line saying why, and no challenge half-created."""
    from deepsift.cli import main
    from platformkit import make_folders

    db_args = ["--database-url", server_settings.db_url, "--data-dir", str(server_settings.data_dir)]
    monkeypatch.setattr("sys.stdin", io.StringIO("host-password\n"))
    assert main(["admin", "add-user", "hoster", "--role", "host", "--password-stdin", *db_args]) == 0
    make_folders(tmp_path / "data-src", n=2)
    spec = tmp_path / "spec.yaml"
    text = """
slug: unseen-cli
title: Unseen generators
phases:
  - slug: dev
    starts: 2020-01-01T00:00:00Z
    ends: 2099-01-01T00:00:00Z
    train_generators: [gen_a, gen_b]
    rank_on: unseen
    testset: {source: folders, path: data-src}
"""
    spec.write_text(text)
    capsys.readouterr()
    assert main(["challenges", "create", str(spec), "--host-user", "hoster", *db_args]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ranks on unseen generators, but its test set has none" in err, err
    assert "Traceback" not in err
    from deepsift.challenges.models import Challenge

    with app.state.db.session() as s:
        assert s.query(Challenge).filter_by(slug="unseen-cli").count() == 0
    spec.write_text(text.replace("[gen_a, gen_b]", "[gen_a]"))
    assert main(["challenges", "create", str(spec), "--host-user", "hoster", *db_args]) == 0
