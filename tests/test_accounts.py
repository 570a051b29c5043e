"""Accounts beyond the basics: throttling (pages, per account), private files, password change and reset,
log out everywhere, disabled users, token expiry, the admin role."""
from __future__ import annotations

import io
import os
import re
import stat

import pytest
from fastapi.testclient import TestClient

from deepsift.server import create_app
from serverkit import make_settings


def csrf_from(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def register_token(client, name: str = "alice", password: str = "correct horse") -> dict:
    assert client.post("/api/auth/register", json={"username": name, "password": password}).status_code == 201
    r = client.post("/api/auth/token", json={"username": name, "password": password})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def page_login(client, name: str, password: str) -> None:
    page = client.get("/login", headers={"accept": "text/html"})
    r = client.post("/login", data={"username": name, "password": password, "csrf_token": csrf_from(page.text)},
                    follow_redirects=False)
    assert r.status_code == 303, r.text


# -- item 14: throttling and private files -----------------------------------------------------------
def test_pages_are_rate_limited_like_the_api(database_url, tmp_path):
    app = create_app(make_settings(database_url, tmp_path / "data", api_rate="4/minute"))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        codes = [c.get(path, headers={"accept": "text/html"}).status_code
                 for path in ("/challenges", "/login", "/register", "/challenges", "/challenges", "/login")]
        assert codes == [200, 200, 200, 200, 429, 429]
        r = c.get("/challenges", headers={"accept": "text/html"})
        assert int(r.headers["retry-after"]) >= 1 and "at most 4/minute" in r.text
        assert c.get("/healthz").status_code == 200  # liveness is never throttled
        assert c.get("/api/auth/me").status_code == 429  # the account API counts like the rest of the API
    app.state.db.dispose()
    app = create_app(make_settings(database_url, tmp_path / "demo-data", api_rate="2/minute"), domains=["demo"])
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert [c.get("/quiz/results", headers={"accept": "text/html"}).status_code for _ in range(3)] == [200, 200, 429]
    app.state.db.dispose()


def test_logins_are_throttled_per_account_from_any_address(database_url, tmp_path):
    app = create_app(make_settings(database_url, tmp_path / "data", trusted_proxy=True,
                                   login_account_rate="3/minute"), domains=[])
    with TestClient(app, client=("127.0.0.1", 50000)) as c:  # through a proxy on this machine
        register_token(c, "alice", "alice-password")
        register_token(c, "bob", "bob-password")
        codes = [c.post("/api/auth/token", json={"username": "Alice", "password": f"guess-{i}-xx"},
                        headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code for i in range(3)]
        assert codes == [401, 401, 401]
        # a fourth address, now even with the right password: the account is throttled, not the address
        r = c.post("/api/auth/token", json={"username": "alice", "password": "alice-password"},
                   headers={"X-Forwarded-For": "10.0.0.9"})
        assert r.status_code == 429 and "alice" in r.json()["detail"] and int(r.headers["retry-after"]) >= 1
        page = c.get("/login", headers={"accept": "text/html", "X-Forwarded-For": "10.0.0.9"})
        r = c.post("/login", data={"username": "alice", "password": "alice-password", "csrf_token": csrf_from(page.text)},
                   headers={"X-Forwarded-For": "10.0.0.9"}, follow_redirects=False)
        assert r.status_code == 429 and "alice" in r.text  # the form again, with the reason and when to retry
        assert int(r.headers["retry-after"]) >= 1
        # another account from the same addresses is unaffected; successes do not count
        for _ in range(4):
            assert c.post("/api/auth/token", json={"username": "bob", "password": "bob-password"},
                          headers={"X-Forwarded-For": "10.0.0.1"}).status_code == 201
    app.state.db.dispose()


@pytest.mark.parametrize("command", [["admin", "migrate"], ["admin", "add-user", "hal", "--password-stdin"]])
def test_the_data_folder_and_database_are_private_whatever_runs_first(tmp_path, monkeypatch, command):
    from deepsift.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("hal-password\n"))
    monkeypatch.delenv("DEEPSIFT_DATABASE_URL", raising=False)
    data = tmp_path / "fresh" / "data"
    old = os.umask(0o022)
    try:
        assert main([*command, "--data-dir", str(data)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    db = data / "deepsift.db"
    assert db.is_file() and stat.S_IMODE(db.stat().st_mode) == 0o600
    for extra in data.glob("deepsift.db-*"):  # WAL and shared-memory files follow the database's mode
        assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0, extra


def test_the_secret_key_makes_a_private_folder(tmp_path):
    from deepsift.server import Settings

    old = os.umask(0o022)
    try:
        Settings(data_dir=tmp_path / "d").signing_key()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "d" / "secret_key").stat().st_mode) == 0o600


# -- item 11: password change and reset, log out everywhere, disabled users, token expiry ----------------
def _me(client, headers=None) -> int:
    return client.get("/api/auth/me", headers=headers or {}).status_code


def _browser(app, name: str, password: str) -> TestClient:
    b = TestClient(app, base_url="http://127.0.0.1")
    page_login(b, name, password)
    assert _me(b) == 200
    return b


def test_changing_the_password_ends_every_token_and_session(app, client):
    t1 = register_token(client, "alice", "alice-password")
    t2 = {"Authorization": "Bearer " + client.post("/api/auth/token", json={"username": "alice", "password":
                                                                            "alice-password"}).json()["token"]}
    browser = _browser(app, "alice", "alice-password")
    r = client.post("/api/auth/password", json={"current_password": "wrong-password", "new_password": "new-password-1"},
                    headers=t1)
    assert r.status_code == 403 and "current password" in r.json()["detail"]
    assert _me(client, t1) == _me(client, t2) == _me(browser) == 200  # nothing ended by a wrong attempt
    r = client.post("/api/auth/password", json={"current_password": "alice-password", "new_password": "short"},
                    headers=t1)
    assert r.status_code == 422
    r = client.post("/api/auth/password", json={"current_password": "alice-password", "new_password": "new-password-1"},
                    headers=t1)
    assert r.status_code == 200 and r.json() == {"revoked_tokens": 2, "ended_sessions": 1}
    assert _me(client, t1) == _me(client, t2) == _me(browser) == 401
    assert client.post("/api/auth/token", json={"username": "alice", "password": "alice-password"}).status_code == 401
    assert client.post("/api/auth/token", json={"username": "alice", "password": "new-password-1"}).status_code == 201


def test_the_password_page_changes_it_and_keeps_this_browser_only(app, client):
    token = register_token(client, "alice", "alice-password")
    other = _browser(app, "alice", "alice-password")
    mine = _browser(app, "alice", "alice-password")
    page = mine.get("/account", headers={"accept": "text/html"})
    assert 'action="/account/password"' in page.text and 'action="/account/logout-all"' in page.text
    form = {"current_password": "alice-password", "new_password": "new-password-1"}
    assert mine.post("/account/password", data=form, follow_redirects=False).status_code == 403  # no CSRF token
    r = mine.post("/account/password", data={**form, "csrf_token": csrf_from(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/account?password=changed"
    assert _me(mine) == 200 and _me(other) == 401 and _me(client, token) == 401
    assert "Password changed" in mine.get("/account?password=changed", headers={"accept": "text/html"}).text


def test_log_out_everywhere(app, client):
    token = register_token(client, "alice", "alice-password")
    a, b = _browser(app, "alice", "alice-password"), _browser(app, "alice", "alice-password")
    page = a.get("/account", headers={"accept": "text/html"})
    # each form once, in the page's body; the title is a title, not the forms
    assert re.search(r"<title>Account · [^<]*</title>", page.text), re.search(r"<title>.*?</title>", page.text, re.S)
    assert page.text.count('action="/account/logout-all"') == page.text.count('action="/account/password"') == 1
    assert a.post("/account/logout-all", follow_redirects=False).status_code == 403  # CSRF
    r = a.post("/account/logout-all", data={"csrf_token": csrf_from(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert _me(a) == _me(b) == _me(client, token) == 401
    # and over the API, with a token: that token ends too
    token = {"Authorization": "Bearer " + client.post("/api/auth/token", json={"username": "alice", "password":
                                                                               "alice-password"}).json()["token"]}
    r = client.post("/api/auth/logout-all", headers=token)
    assert r.status_code == 200 and r.json()["revoked_tokens"] == 1
    assert _me(client, token) == 401


def _cli(database_url, tmp_path, *argv, stdin: str = "") -> int:
    from deepsift.cli import main
    import sys

    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        return main([*argv, "--data-dir", str(tmp_path / "cli-data"), "--database-url", database_url])
    finally:
        sys.stdin = old


def test_the_admin_command_resets_passwords_and_disables_users_at_once(app, client, database_url, tmp_path, capsys):
    token = register_token(client, "alice", "alice-password")
    browser = _browser(app, "alice", "alice-password")
    assert _cli(database_url, tmp_path, "admin", "disable", "alice") == 0
    assert "alice is now disabled" in capsys.readouterr().out
    assert _me(client, token) == 401 and _me(browser) == 401  # at once, with no restart
    assert client.post("/api/auth/token", json={"username": "alice", "password": "alice-password"}).status_code == 401
    assert _cli(database_url, tmp_path, "admin", "enable", "alice") == 0
    assert _me(client, token) == 401  # enabling does not bring old tokens back
    r = client.post("/api/auth/token", json={"username": "alice", "password": "alice-password"})
    assert r.status_code == 201
    token = {"Authorization": f"Bearer {r.json()['token']}"}
    assert _cli(database_url, tmp_path, "admin", "reset-password", "alice") == 0
    new = re.search(r"new password: (\S+)", capsys.readouterr().out).group(1)
    assert _me(client, token) == 401
    assert client.post("/api/auth/token", json={"username": "alice", "password": new}).status_code == 201
    assert _cli(database_url, tmp_path, "admin", "reset-password", "alice", "--password-stdin",
                stdin="chosen-password\n") == 0
    assert client.post("/api/auth/token", json={"username": "alice", "password": "chosen-password"}).status_code == 201
    assert _cli(database_url, tmp_path, "admin", "disable", "nobody") == 1
    assert "no user 'nobody'" in capsys.readouterr().err


def test_admins_reset_and_disable_over_the_api_and_nobody_else_may(app, client, database_url, tmp_path):
    users = {n: register_token(client, n, f"{n}-password") for n in ("alice", "hugo", "root")}
    assert _cli(database_url, tmp_path, "admin", "set-role", "hugo", "host") == 0
    assert _cli(database_url, tmp_path, "admin", "set-role", "root", "admin") == 0
    routes = [("GET", "/api/admin/users", {}), ("POST", "/api/admin/users/alice/password", {"json": {}}),
              ("POST", "/api/admin/users/alice/disable", {}), ("POST", "/api/admin/users/alice/enable", {})]
    for method, path, kw in routes:
        assert client.request(method, path, **kw).status_code == 401, path
        for who in ("alice", "hugo"):  # a participant, a challenge host: 403, and nothing changes
            assert client.request(method, path, headers=users[who], **kw).status_code == 403, (who, path)
    assert _me(client, users["alice"]) == 200
    listing = client.get("/api/admin/users", headers=users["root"]).json()
    assert {u["username"]: u["role"] for u in listing} == {"alice": "participant", "hugo": "host", "root": "admin"}
    assert "password_hash" not in str(listing)
    r = client.post("/api/admin/users/alice/disable", headers=users["root"])
    assert r.status_code == 200 and r.json()["disabled"] is True and _me(client, users["alice"]) == 401
    assert client.post("/api/admin/users/root/disable", headers=users["root"]).status_code == 409
    assert client.post("/api/admin/users/nobody/disable", headers=users["root"]).status_code == 404
    assert client.post("/api/admin/users/alice/enable", headers=users["root"]).json()["disabled"] is False
    r = client.post("/api/admin/users/alice/password", json={"password": "x"}, headers=users["root"])
    assert r.status_code == 422
    r = client.post("/api/admin/users/alice/password", headers=users["root"])
    assert r.status_code == 200
    assert client.post("/api/auth/token", json={"username": "alice", "password": r.json()["password"]}).status_code == 201


def test_api_tokens_expire(app, client):
    from sqlalchemy import update

    from deepsift.server.db import utcnow
    from deepsift.server.models import ApiToken

    assert client.post("/api/auth/register", json={"username": "alice", "password": "alice-password"}).status_code == 201
    r = client.post("/api/auth/token", json={"username": "alice", "password": "alice-password"})
    days = (app.state.settings.token_days)
    import datetime as dt

    expires = dt.datetime.fromisoformat(r.json()["expires_at"])
    assert abs((expires - utcnow()).total_seconds() - days * 86400) < 120  # the server's default lifetime
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    short = client.post("/api/auth/tokens", json={"name": "ci", "expires_days": 1}, headers=auth).json()
    assert abs((dt.datetime.fromisoformat(short["expires_at"]) - utcnow()).total_seconds() - 86400) < 120
    assert _me(client, auth) == 200
    with app.state.db.session(write=True) as s:  # a day passes for the first token
        s.execute(update(ApiToken).where(ApiToken.id == r.json()["id"]).values(expires_at=utcnow()))
    r2 = client.get("/api/auth/me", headers=auth)
    assert r2.status_code == 401 and "expired" in r2.json()["detail"]
    assert _me(client, {"Authorization": f"Bearer {short['token']}"}) == 200
    assert client.post("/api/auth/tokens", json={"expires_days": 0}, headers={"Authorization": f"Bearer {short['token']}"}
                       ).status_code == 422
