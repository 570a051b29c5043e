"""The integrity of a ranking: what a board publishes cannot decode hidden labels, the rules cannot change
under the submissions, host and late entries are marked and unranked, ties and the counting choice."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from deepsift.challenges import scoring
from deepsift.challenges.testsets import Key
from platformkit import csv_text, good_scores, host_challenge, join, register, run_worker, submit


def _key(n_real: int = 40, n_fake: int = 40, n_private: int = 20) -> Key:
    labels = np.r_[np.zeros(n_real), np.ones(n_fake), np.arange(n_private) % 2].astype(np.int8)
    n = labels.size
    return Key(pa.array([f"i{k}" for k in range(n)]), labels,
               np.array(["real" if y == 0 else "gen_a" for y in labels], dtype=object), np.zeros(n, bool),
               np.arange(n) < n_real + n_fake)


def _scores_for_order(order: list[int], n: int) -> np.ndarray:
    """Distinct scores that rank the images of ``order`` first to last (the rest at the bottom)."""
    s = np.zeros(n)
    s[order] = np.linspace(1.0, 0.5, len(order))
    return s


def test_the_published_roc_cannot_be_inverted():
    """One submission with distinct scores: its published ROC has <= 20 points, and a second submission
    that ranks one fake and one real the other way round publishes the very same curve: the curve cannot
    tell which of the two images is the fake, so it cannot give back the labels."""
    key = _key()
    public = np.flatnonzero(key.public)
    rng = np.random.default_rng(0)
    order = [int(i) for i in rng.permutation(public)]
    first = scoring.score(key, _scores_for_order(order, len(key)), None)["public"]["roc"]
    assert len(first) <= 20 < key.public.sum() + 1  # not one point per image
    n_real = int((key.labels[public] == 0).sum())
    seen = {int(np.floor(f * n_real)) for f in scoring.ROC_GRID}  # the reals whose step the grid reads
    r = next(k for k in range(n_real - 1) if k not in seen)
    reals = [i for i in order if key.labels[i] == 0]
    # move the first fake ranked below the r-th real to just above it
    pos = order.index(reals[r])
    fake = next(i for i in order[pos + 1:] if key.labels[i] == 1)
    swapped = [i for i in order if i != fake]
    swapped.insert(pos, fake)
    assert swapped != order and key.labels[swapped].tolist() != key.labels[order].tolist()
    second = scoring.score(key, _scores_for_order(swapped, len(key)), None)["public"]["roc"]
    assert second == first


def test_the_roc_grid_reads_the_curve_at_fixed_fprs():
    fpr = np.array([0.0, 0.0, 0.5, 0.5, 1.0])
    tpr = np.array([0.0, 0.4, 0.4, 0.8, 1.0])
    got = scoring.roc_on_grid(fpr, tpr, (0.0, 0.25, 0.5, 0.75, 1.0))
    # at a step: its top; between steps: along the curve (flat from (0, .4) to (.5, .4), then .8 -> 1 linearly)
    assert got == pytest.approx([0.4, 0.4, 0.8, 0.9, 1.0])


def test_participants_see_a_coarse_roc_and_rounded_metrics(app, client, tmp_path):
    hosted = host_challenge(app, client, tmp_path, n=12, bootstrap=0)
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    scores = good_scores(hosted, noise=0.4, seed=3)
    sid = submit(client, hosted, alice, csv_text(scores)).json()["id"]
    run_worker(app)
    sub = client.get(f"/api/submissions/{sid}", headers=alice.auth).json()
    pub = sub["scores"]["public"]
    assert len(pub["roc"]) <= 20
    values = [v for v in pub["overall"].values() if isinstance(v, float)] + [sub["public_score"]]
    assert values and all(v == round(v, scoring.DISPLAY_DIGITS) for v in values)
    assert any(v != round(v, 2) for v in values)  # rounded to 4 decimals, not coarser
    host = client.get(f"/api/submissions/{sid}", headers=hosted.host.auth).json()
    assert host["public_score"] == pytest.approx(sub["public_score"], abs=1e-4)


def _phase_body(client, hosted, **changes) -> dict:
    ph = client.get(f"/api/challenges/{hosted.slug}", headers=hosted.host.auth).json()["phases"][0]
    body = {k: ph[k] for k in ("slug", "title", "max_per_day", "max_total", "counting", "ranking_metric",
                               "threshold", "bootstrap", "public_fraction", "submissions", "model_time_limit_s",
                               "model_memory_mb")}
    body.update(starts=ph["starts_at"], ends=ph["ends_at"], **changes)
    return body


def _put_phase(client, hosted, **changes):
    return client.put(f"/api/challenges/{hosted.slug}/phases/{hosted.phase}", json=_phase_body(client, hosted, **changes),
                      headers=hosted.host.auth)


def test_scoring_rules_are_fixed_once_a_phase_has_submissions(app, client, tmp_path):
    hosted = host_challenge(app, client, tmp_path, bootstrap=0)
    assert _put_phase(client, hosted, ranking_metric="ap").status_code == 200  # no submissions yet: free
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    assert submit(client, hosted, alice, csv_text(good_scores(hosted))).status_code == 201
    for change in ({"ranking_metric": "eer"}, {"threshold": 0.7}, {"ranking_metric": "auroc", "threshold": 0.2}):
        r = _put_phase(client, hosted, **change)
        assert r.status_code == 409, change
        assert "has submissions" in r.json()["detail"] and "can no longer change" in r.json()["detail"]
    r = _put_phase(client, hosted, title="Renamed", max_per_day=5)  # not a scoring rule: still editable
    assert r.status_code == 200 and r.json()["phases"][0]["title"] == "Renamed"
    ph = client.get(f"/api/challenges/{hosted.slug}").json()["phases"][0]
    assert (ph["ranking_metric"], ph["threshold"]) == ("ap", 0.5)


def test_the_public_share_is_fixed_once_the_test_set_is_split(app, client, tmp_path):
    hosted = host_challenge(app, client, tmp_path, bootstrap=0)
    r = _put_phase(client, hosted, public_fraction=0.3)
    assert r.status_code == 409 and "already split" in r.json()["detail"]
    ph = client.get(f"/api/challenges/{hosted.slug}").json()["phases"][0]
    assert ph["public_fraction"] == 0.5  # what is shown is what was applied


# -- host, late and baseline entries ---------------------------------------------------------------
def _end_phase(app) -> None:
    from sqlalchemy import update

    from deepsift.challenges.models import Phase

    with app.state.db.session(write=True) as s:
        s.execute(update(Phase).values(ends_at=dt.datetime.now(dt.timezone.utc)))  # after every entry so far


def _page_rows(html: str) -> list[tuple[str, str]]:
    """(rank cell, team cell text) of each leaderboard row of a page."""
    import re

    body = html.split('id="leaderboard"', 1)[1].split("</tbody>", 1)[0]
    out = []
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)[1:]:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)
        out.append((cells[0].strip(), re.sub(r"<[^>]+>", "", cells[1]).strip()))
    return out


def test_host_and_late_entries_are_flagged_and_never_ranked(app, client, tmp_path, capsys):
    """The host's answer key, submitted after the deadline, does not rank first: it is off the boards
    until marked a baseline, then shown flagged host/baseline/late with no rank, on JSON, CSV and pages."""
    import csv
    import io

    hosted = host_challenge(app, client, tmp_path, bootstrap=0)
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    rng = np.random.default_rng(1)
    submit(client, hosted, alice, csv_text({n: float(rng.random()) for n in hosted.names}))  # worse than the key
    host = join(client, hosted.slug, hosted.host, "Organizers")
    early = submit(client, hosted, host, csv_text(good_scores(hosted))).json()["id"]  # a host entry in time
    _end_phase(app)
    r = submit(client, hosted, host, csv_text(good_scores(hosted)))  # the answer key, after the deadline
    assert r.status_code == 201, r.text
    late = r.json()["id"]
    run_worker(app)
    url = f"/api/challenges/{hosted.slug}/phases/dev/leaderboard"
    for part in ("public", "private"):
        board = client.get(url, params={"part": part}).json()
        assert [(x["rank"], x["team"], x["flags"]) for x in board["rows"]] == [(1, "Team A", [])], part
    assert client.get(f"/api/submissions/{early}", headers=host.auth).json()["flags"] == ["host"]
    m = client.post(f"/api/submissions/{late}/baseline", json={"baseline": True}, headers=host.auth)
    assert m.status_code == 200 and m.json()["flags"] == ["host", "baseline", "late"]
    assert client.post(f"/api/submissions/{late}/baseline", json={"baseline": True},
                       headers=alice.auth).status_code in (403, 404)  # only the host marks baselines
    board = client.get(url, params={"part": "private"}).json()
    assert [(x["rank"], x["team"], x["flags"]) for x in board["rows"]] == [
        (None, "Organizers", ["host", "baseline", "late"]), (1, "Team A", [])]  # above by value, not ranked
    rows = list(csv.DictReader(io.StringIO(client.get(url, params={"part": "private", "format": "csv"}).text)))
    assert [(x["rank"], x["team"], x["flags"]) for x in rows] == [("", "Organizers", "host baseline late"),
                                                                  ("1", "Team A", "")]
    for page in (f"/challenges/{hosted.slug}/phases/dev/leaderboard?part=private",
                 f"/embed/{hosted.slug}/dev/leaderboard?part=private"):
        html = client.get(page).text
        assert _page_rows(html) == [("–", "Organizers host baseline late"), ("1", "Team A")], page
        assert 'class="badge flag-baseline"' in html
    from deepsift.cli import main
    from serverkit import LiveServer

    with LiveServer(app) as srv:  # the CLI client's board too
        capsys.readouterr()
        assert main(["challenges", "leaderboard", "--server", srv.url, "--challenge", hosted.slug, "--phase", "dev",
                     "--part", "private", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(x["rank"], x["team"], x["flags"]) for x in rows] == [("", "Organizers", "host baseline late"),
                                                                  ("1", "Team A", "")]


# -- ties, the counting choice, intervals per part (issue 20) --------------------------------------
def test_tied_values_share_a_rank_on_page_json_and_csv(app, client, tmp_path):
    import csv
    import io

    hosted = host_challenge(app, client, tmp_path, bootstrap=0)
    same, worse = good_scores(hosted, noise=0.3, seed=4), good_scores(hosted, noise=0.6, seed=5)
    teams = {}
    for name, scores in (("Team A", same), ("Team B", same), ("Team C", worse)):
        p = join(client, hosted.slug, register(client, name.lower().replace(" ", "")), name)
        submit(client, hosted, p, csv_text(scores))
        teams[name] = p
    run_worker(app)
    url = f"/api/challenges/{hosted.slug}/phases/dev/leaderboard"
    board = client.get(url).json()
    assert [(r["rank"], r["team"]) for r in board["rows"]] == [(1, "Team A"), (1, "Team B"), (3, "Team C")]
    rows = list(csv.DictReader(io.StringIO(client.get(url, params={"format": "csv"}).text)))
    assert [(r["rank"], r["team"]) for r in rows] == [("1", "Team A"), ("1", "Team B"), ("3", "Team C")]
    html = client.get(f"/challenges/{hosted.slug}/phases/dev/leaderboard").text
    assert _page_rows(html) == [("1", "Team A"), ("1", "Team B"), ("3", "Team C")]


def test_best_counts_by_the_public_score_and_a_tie_keeps_the_earlier(app, client, tmp_path):
    """Entry 1: perfect on the public part, poor on the private; entry 2: the reverse; entry 3: entry 1
    again. While the phase runs and after it ends, entry 1 counts (public score; the earlier on a tie),
    so the private board shows entry 1's private score, not the better one of entry 2."""
    hosted = host_challenge(app, client, tmp_path, bootstrap=0)
    key = hosted.key
    rng = np.random.default_rng(0)
    perfect = {n: float(0.1 + 0.8 * y) for n, y in zip(hosted.names, key.labels)}
    noisy = {n: float(rng.random()) for n in hosted.names}
    first = {n: perfect[n] if pub else noisy[n] for n, pub in zip(hosted.names, key.public)}
    second = {n: noisy[n] if pub else perfect[n] for n, pub in zip(hosted.names, key.public)}
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    ids = [submit(client, hosted, alice, csv_text(s)).json()["id"] for s in (first, second)]
    run_worker(app)
    ids.append(submit(client, hosted, alice, csv_text(first)).json()["id"])  # a tie, later
    run_worker(app)
    subs = [client.get(f"/api/submissions/{i}", headers=hosted.host.auth).json() for i in ids]
    assert subs[0]["public_score"] == subs[2]["public_score"] > subs[1]["public_score"]
    assert subs[1]["private_score"] > subs[0]["private_score"]
    url = f"/api/challenges/{hosted.slug}/phases/dev/leaderboard"
    row = client.get(url).json()["rows"][0]
    when = [dt.datetime.fromisoformat(x["created_at"]) for x in subs]
    assert dt.datetime.fromisoformat(row["submitted_at"]) == when[0] < when[2]  # entry 1, not its later tie
    assert row["metrics"]["auroc"] == pytest.approx(subs[0]["public_score"], abs=1e-4)
    _end_phase(app)
    private = client.get(url, params={"part": "private"}).json()["rows"][0]
    assert private["metrics"]["auroc"] == pytest.approx(subs[0]["private_score"], abs=1e-4)
    assert private["metrics"]["auroc"] < subs[1]["private_score"]


def test_bootstrap_intervals_of_a_part_use_that_parts_samples_only():
    """Public part perfectly separated, private part at random: the public interval is [1, 1] and equals
    the bootstrap of the public samples alone; the private one is that of the private samples alone."""
    from deepsift.evaluate.metrics import compute_metrics

    key = _key(30, 30, 60)
    rng = np.random.default_rng(1)
    s = np.where(key.public, 0.1 + 0.8 * key.labels, rng.random(len(key)))
    ci = scoring.intervals(key, s, None, threshold=0.5, resamples=200, seed=3)
    assert ci["public"]["auroc"] == [1.0, 1.0]
    for part, mask in (("public", key.public), ("private", ~key.public)):
        m = compute_metrics(key.labels[mask], s[mask], threshold=0.5, bootstrap=200, seed=3)
        assert ci[part]["auroc"] == [m.values["auroc"].low, m.values["auroc"].high], part
        assert ci[part]["f1"] == [m.values["f1"].low, m.values["f1"].high], part
    assert ci["private"]["auroc"][0] < 0.8
