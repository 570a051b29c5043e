"""A fair queue and fair quotas: round-robin between teams, a cap on waiting jobs, charged limit failures,
and the team-size cap under concurrent joins (SQLite and PostgreSQL)."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from deepsift.challenges import queue
from deepsift.server.db import Database
from platformkit import csv_text, good_scores, host_challenge, join, register, run_worker, submit
from serverkit import LiveServer


@pytest.fixture
def hosted(app, client, tmp_path):
    return host_challenge(app, client, tmp_path, bootstrap=0)


def _claim_finish(db: Database, name: str) -> str | None:
    job = queue.claim(db, name, lease_s=60)
    if job is None:
        return None
    assert queue.finish(db, job, {"x": 1}, 0.5, 0.5, keep_lease=False)
    return job.submission_id


def test_another_teams_job_is_taken_second_not_fourth(app, client, hosted):
    """Team A queues 3 jobs, then team B one: one worker takes A1, then B1 (not A2, A3 first)."""
    text = csv_text(good_scores(hosted))
    a = join(client, hosted.slug, register(client, "alice"), "Team A")
    b = join(client, hosted.slug, register(client, "bob"), "Team B")
    a_ids = [submit(client, hosted, a, text).json()["id"] for _ in range(3)]
    b_id = submit(client, hosted, b, text).json()["id"]
    positions = {sid: client.get(f"/api/submissions/{sid}", headers=p.auth).json()["position"]
                 for sid, p in [*((i, a) for i in a_ids), (b_id, b)]}
    order = []
    while (sid := _claim_finish(app.state.db, "w")) is not None:
        order.append(sid)
    assert order == [a_ids[0], b_id, a_ids[1], a_ids[2]]
    assert sorted(positions, key=positions.get) == order and sorted(positions.values()) == [1, 2, 3, 4]


def test_the_team_served_longest_ago_goes_first_even_when_it_queued_later(app, client, hosted):
    """Both teams were served before: A longer ago. B queues b2, then A queues a2: a2 is taken (and shown) first."""
    text = csv_text(good_scores(hosted))
    a = join(client, hosted.slug, register(client, "alice"), "Team A")
    b = join(client, hosted.slug, register(client, "bob"), "Team B")
    first = [submit(client, hosted, a, text).json()["id"], submit(client, hosted, b, text).json()["id"]]
    assert [_claim_finish(app.state.db, "w"), _claim_finish(app.state.db, "w")] == first  # A served, then B
    b2 = submit(client, hosted, b, text).json()["id"]
    a2 = submit(client, hosted, a, text).json()["id"]
    positions = {sid: client.get(f"/api/submissions/{sid}", headers=p.auth).json()["position"]
                 for sid, p in [(a2, a), (b2, b)]}
    assert positions == {a2: 1, b2: 2}
    assert [_claim_finish(app.state.db, "w"), _claim_finish(app.state.db, "w")] == [a2, b2]


def test_two_workers_never_run_two_jobs_of_one_team(app, client, hosted):
    """While team A's first (slow) job runs, a second worker takes team B's job, not A's next one."""
    text = csv_text(good_scores(hosted))
    a = join(client, hosted.slug, register(client, "alice"), "Team A")
    b = join(client, hosted.slug, register(client, "bob"), "Team B")
    a_ids = [submit(client, hosted, a, text).json()["id"] for _ in range(3)]
    b_id = submit(client, hosted, b, text).json()["id"]
    db = app.state.db
    slow = queue.claim(db, "w1", lease_s=60)
    assert slow is not None and slow.submission_id == a_ids[0]
    second = queue.claim(db, "w2", lease_s=60)
    assert second is not None and second.submission_id == b_id
    assert queue.claim(db, "w3", lease_s=60) is None  # A's other jobs wait for A's running one
    assert client.get(f"/api/submissions/{a_ids[1]}", headers=a.auth).json()["state"] == "queued"


def test_a_team_can_queue_only_a_few_jobs_at_once(app, client, hosted):
    """The cap (max_queued_per_team, default 5) counts waiting and running jobs; once scored, room again."""
    text = csv_text(good_scores(hosted))
    a = join(client, hosted.slug, register(client, "alice"), "Team A")
    codes = [submit(client, hosted, a, text).status_code for _ in range(5)]
    r = submit(client, hosted, a, text)
    assert codes == [201] * 5 and r.status_code == 409
    assert "waiting to be scored" in r.json()["detail"]
    assert run_worker(app) == 5
    assert submit(client, hosted, a, text).status_code == 201


def test_the_backlog_cap_is_a_setting(tmp_path, database_url):
    from deepsift.server import create_app
    from fastapi.testclient import TestClient
    from serverkit import make_settings

    app = create_app(make_settings(database_url, tmp_path / "data",
                                   domain_overrides={"challenges": {"max_queued_per_team": 1}}))
    try:
        with TestClient(app, base_url="http://127.0.0.1") as c:
            h = host_challenge(app, c, tmp_path, bootstrap=0)
            a = join(c, h.slug, register(c, "alice"), "Team A")
            text = csv_text(good_scores(h))
            assert [submit(c, h, a, text).status_code for _ in range(2)] == [201, 409]
    finally:
        app.state.db.dispose()


def test_a_run_stopped_at_its_time_limit_counts_against_the_quota(app, client, tmp_path):
    """A looping model that uses its whole time limit is charged; a model that crashes is refunded."""
    from test_challenges_models import SPEC, slow_model, wrong_shape_model

    hosted = host_challenge(app, client, tmp_path, max_total=3, bootstrap=0, model_time_limit_s=2)
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    url = f"/api/challenges/{hosted.slug}/phases/dev/submissions"

    def send(path: Path) -> str:
        r = client.post(url, files={"file": (path.name, path.read_bytes())},
                        data={"kind": "model", "preprocessing": SPEC}, headers=alice.auth)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    looping, broken = send(slow_model(tmp_path / "loop.onnx")), send(wrong_shape_model(tmp_path / "bad.onnx"))
    run_worker(app)
    lo = client.get(f"/api/submissions/{looping}", headers=alice.auth).json()
    br = client.get(f"/api/submissions/{broken}", headers=alice.auth).json()
    assert lo["state"] == "failed" and "time limit" in lo["reason"] and lo["counts_toward_quota"]
    assert br["state"] == "failed" and not br["counts_toward_quota"]
    q = client.get(f"/api/challenges/{hosted.slug}", headers=alice.auth).json()["phases"][0]["quota"]
    assert q["used_total"] == 1 and q["left"] == 2


@pytest.mark.parametrize("reason, charged", [
    ("time limit exceeded: the model did not finish within 2 s", True),
    ("CPU time limit exceeded (2 s)", True),
    ("out of memory (limit 700 MiB): std::bad_alloc", True),
    ("the model process died (SIGKILL): most likely out of memory (limit 700 MiB)", True),
    ("time: the model ran for its whole 2 s", True),  # a fixed vocabulary's "time" / "memory" reasons
    ("memory: over 700 MiB", True),
    ("wrong output shape [4, 3] for a batch of 4 images", False),
    ("the model failed on a batch", False),
    ("scoring stopped 3 times without finishing (the worker died or was cut off)", False),
])
def test_the_quota_rule_for_failures(reason, charged):
    assert queue.charged_failure(reason) is charged


# -- the team-size cap under concurrent joins (real threads on a real server) ----------------------
def _register_many(url: str, names: list[str]) -> dict[str, dict[str, str]]:
    auth = {}
    with httpx.Client(base_url=url, timeout=30) as c:
        for n in names:
            assert c.post("/api/auth/register", json={"username": n, "password": "password-123"}).status_code == 201
            tok = c.post("/api/auth/token", json={"username": n, "password": "password-123"}).json()["token"]
            auth[n] = {"Authorization": f"Bearer {tok}"}
    return auth


def _race(url: str, calls: list[tuple[str, dict, dict]]) -> list[int]:
    """Send every (path, json, headers) at once from its own thread; their status codes, in order."""
    barrier = threading.Barrier(len(calls))
    codes: list[int] = [0] * len(calls)

    def go(i: int) -> None:
        path, body, headers = calls[i]
        with httpx.Client(base_url=url, timeout=60) as c:
            barrier.wait()
            codes[i] = c.post(path, json=body, headers=headers).status_code

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return codes


def _capped(app, slug: str, size: int) -> None:
    from sqlalchemy import update

    from deepsift.challenges.models import Challenge

    with app.state.db.session(write=True) as s:
        s.execute(update(Challenge).where(Challenge.slug == slug).values(max_team_size=size))


def test_twelve_simultaneous_joins_never_overfill_a_team(app, client, hosted):
    _capped(app, hosted.slug, 3)
    captain = join(client, hosted.slug, register(client, "captain"), "Team A")
    code = client.get(f"/api/challenges/{hosted.slug}/team", headers=captain.auth).json()["invite_code"]
    with LiveServer(app) as srv:
        auth = _register_many(srv.url, [f"joiner{i}" for i in range(12)])
        codes = _race(srv.url, [(f"/api/challenges/{hosted.slug}/teams/join", {"invite_code": code}, h)
                                for h in auth.values()])
    assert sorted(codes) == [200] * 2 + [409] * 10
    members = client.get(f"/api/challenges/{hosted.slug}/team", headers=captain.auth).json()["members"]
    assert len(members) == 3


def test_one_user_joining_two_teams_at_once_gets_one_team_and_a_409(app, client, hosted):
    codes_of = []
    for name in ("Team A", "Team B"):
        p = join(client, hosted.slug, register(client, name.replace(" ", "").lower()), name)
        codes_of.append(client.get(f"/api/challenges/{hosted.slug}/team", headers=p.auth).json()["invite_code"])
    with LiveServer(app) as srv:
        auth = _register_many(srv.url, [f"racer{i}" for i in range(4)])
        calls = [(f"/api/challenges/{hosted.slug}/teams/join", {"invite_code": c}, h)
                 for h in auth.values() for c in codes_of]
        calls += [(f"/api/challenges/{hosted.slug}/teams", {"name": f"Solo {i}"}, h)
                  for i, h in enumerate(auth.values())]
        codes = _race(srv.url, calls)
        assert set(codes) <= {200, 201, 409}, codes  # never a 500
        with httpx.Client(base_url=srv.url) as c:
            teams = [c.get(f"/api/challenges/{hosted.slug}/team", headers=h) for h in auth.values()]
    assert all(t.status_code == 200 for t in teams)
    for i in range(4):  # each racer's three requests: exactly one won
        mine = codes[2 * i:2 * i + 2] + [codes[8 + i]]
        assert sorted(mine) in ([200, 409, 409], [201, 409, 409]), mine


def test_the_position_of_a_job_taken_meanwhile_is_no_crash(app, client, hosted):
    """A request read its submission as queued; a worker takes it before the position is computed."""
    from deepsift.challenges.models import Submission

    a = join(client, hosted.slug, register(client, "alice"), "Team A")
    sid = submit(client, hosted, a, csv_text(good_scores(hosted))).json()["id"]
    with app.state.db.session() as s:
        sub = s.get(Submission, sid)
        assert sub.state == "queued"
        assert queue.claim(app.state.db, "w", lease_s=60) is not None
        assert queue.position(s, sub) in (None, 1)  # PostgreSQL sees the claim (None), SQLite its snapshot
