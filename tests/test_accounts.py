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
    app.state.db.dispose()


def test_logins_are_throttled_per_account_from_any_address(database_url, tmp_path):
    app = create_app(make_settings(database_url, tmp_path / "data", trusted_proxy=True,
                                   login_account_rate="3/minute"), domains=[])
    with TestClient(app) as c:
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
        assert r.status_code == 429
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
