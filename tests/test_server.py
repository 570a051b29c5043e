"""The server skeleton: app assembly, migrations, database pragmas, accounts, security helpers, storage."""
from __future__ import annotations

import io
import re
import sqlite3
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect, text

from deepsift.exceptions import PayloadTooLargeError, UnsafeArchiveError
from deepsift.server import create_app
from deepsift.server.db import Database
from deepsift.server.migrate import current, heads, upgrade
from deepsift.server.security import (RateLimiter, SharedRateLimiter, csrf_ok, csrf_token_for, hash_password, hash_token, new_token,
                                      verify_password)
from deepsift.server.storage import ArchiveLimits, Storage, archive_members, extract_archive
from serverkit import LiveServer, ServeProcess, child_pids, cmdline, make_settings

import example_domain.domain as notes_domain


def csrf_from(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def register_token(client, name: str = "alice", password: str = "correct horse") -> str:
    assert client.post("/api/auth/register", json={"username": name, "password": password}).status_code == 201
    r = client.post("/api/auth/token", json={"username": name, "password": password})
    assert r.status_code == 201, r.text
    return r.json()["token"]


# -- assembly and database -------------------------------------------------------------------------
def test_app_starts_and_reports_its_database(client, database_url):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["database"] == ("sqlite" if database_url.startswith("sqlite") else "postgresql")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_migrations_from_the_first_revision_keep_data(database_url, tmp_path):
    """An older database (server_0001 only, with a user) is upgraded to every head, data kept."""
    db = Database(database_url)
    try:
        assert upgrade(db, "server_0001", domains=[notes_domain.DOMAIN]) == ["server_0001"]
        with db.session(write=True) as s:
            s.execute(text("INSERT INTO users (username, password_hash, role, disabled, created_at) "
                           "VALUES ('old', 'x', 'participant', false, CURRENT_TIMESTAMP)"))
        upgrade(db, "notes@notes_0001", domains=[notes_domain.DOMAIN])
        assert "pinned" not in {c["name"] for c in inspect(db.engine).get_columns("notes_notes")}
        app = create_app(make_settings(database_url, tmp_path / "data"), domains=[notes_domain.DOMAIN])
        app.state.db.dispose()
        assert "pinned" in {c["name"] for c in inspect(db.engine).get_columns("notes_notes")}
        assert set(current(db)) == set(heads([notes_domain.DOMAIN]))
        with db.session() as s:
            assert s.execute(text("SELECT username FROM users")).scalars().all() == ["old"]
        upgrade(db, domains=[notes_domain.DOMAIN])  # idempotent
    finally:
        db.dispose()


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}", busy_timeout_ms=1234)
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
        upgrade(db)
        with pytest.raises(Exception, match="FOREIGN KEY"):
            with db.session(write=True) as s:
                s.execute(text("INSERT INTO api_tokens (id, user_id, name, token_hash, prefix, created_at) "
                               "VALUES ('t', 999, 'n', 'h', 'p', CURRENT_TIMESTAMP)"))
    finally:
        db.dispose()


def test_sqlite_write_sessions_take_the_lock_at_begin(tmp_path):
    """A write session holds the write lock from BEGIN, so a second writer waits (busy) instead of racing."""
    path = tmp_path / "x.db"
    db = Database(f"sqlite:///{path}")
    try:
        upgrade(db)
        with db.session(write=True) as s:
            s.execute(text("SELECT 1"))
            other = sqlite3.connect(path, timeout=0.05, isolation_level=None)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            other.close()
        with db.session() as s:  # a read session takes no write lock
            s.execute(text("SELECT 1"))
            other = sqlite3.connect(path, timeout=0.05, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            other.close()
    finally:
        db.dispose()


# -- a domain plugs in -----------------------------------------------------------------------------
def test_a_domain_adds_routes_tables_pages_static_and_settings(database_url, tmp_path):
    from fastapi.testclient import TestClient

    settings = make_settings(database_url, tmp_path / "data", domain_overrides={"notes": {"greeting": "hi there"}})
    app = create_app(settings, domains=[notes_domain.DOMAIN])
    with TestClient(app, base_url="http://127.0.0.1") as c:
        token = register_token(c)
        r = c.post("/api/notes", json={"id": "ignored", "text": "first"}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 201
        assert [n["text"] for n in c.get("/api/notes").json()] == ["first"]
        page = c.get("/notes", headers={"accept": "text/html"})
        assert "hi there" in page.text and "first" in page.text and "/static/notes/notes.css" in page.text
        assert c.get("/static/notes/notes.css").status_code == 200
        assert c.get("/static/deepsift.css").status_code == 200
        assert "/api/notes" in c.get("/api/openapi.json").json()["paths"]
        assert c.get("/", follow_redirects=False).headers["location"] == "/notes"  # one domain: home goes there
    app.state.db.dispose()


def test_pages_load_nothing_from_another_origin(client):
    html = client.get("/login", headers={"accept": "text/html"}).text
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith("/"), url


# -- accounts and security -------------------------------------------------------------------------
def test_passwords_are_argon2_and_tokens_are_stored_hashed(client, app):
    token = register_token(client)
    with app.state.db.session() as s:
        pw, th = s.execute(text("SELECT u.password_hash, t.token_hash FROM users u JOIN api_tokens t "
                                "ON t.user_id = u.id")).one()
    assert pw.startswith("$argon2id$") and "m=65536" in pw
    assert th == hash_token(token) and token not in th
    assert verify_password(hash_password("pw-123456"), "pw-123456") and not verify_password(None, "x")
    plain, digest = new_token()
    assert plain.startswith("dsk_") and digest == hash_token(plain)


def test_a_revoked_token_stops_working_at_once(client):
    token = register_token(client)
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/auth/me", headers=auth).status_code == 200
    tid = client.get("/api/auth/tokens", headers=auth).json()[0]["id"]
    assert client.delete(f"/api/auth/tokens/{tid}", headers=auth).status_code == 200
    r = client.get("/api/auth/me", headers=auth)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert client.get("/api/auth/me", headers={"Authorization": "Bearer dsk_wrong"}).status_code == 401


def test_wrong_passwords_and_taken_names(client):
    register_token(client)
    assert client.post("/api/auth/token", json={"username": "alice", "password": "nope nope"}).status_code == 401
    assert client.post("/api/auth/token", json={"username": "nobody", "password": "nope nope"}).status_code == 401
    assert client.post("/api/auth/register", json={"username": "ALICE", "password": "12345678"}).status_code == 409
    r = client.post("/api/auth/register", json={"username": "x", "password": "12345678"})
    assert r.status_code == 422 and "username" in r.json()["detail"]
    assert client.post("/api/auth/register", json={"username": "bob", "password": "short"}).status_code == 422


def test_forms_need_the_csrf_token_and_cookies_carry_the_flags(client):
    register_token(client, "carol", "carol-password")
    page = client.get("/login", headers={"accept": "text/html"})
    csrf_cookie = page.headers["set-cookie"]
    assert "HttpOnly" in csrf_cookie and "SameSite=Strict" in csrf_cookie and "Secure" not in csrf_cookie
    form = {"username": "carol", "password": "carol-password", "next": "/account"}
    assert client.post("/login", data=form, follow_redirects=False).status_code == 403
    assert client.post("/login", data={**form, "csrf_token": "forged"}, follow_redirects=False).status_code == 403
    r = client.post("/login", data={**form, "csrf_token": csrf_from(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/account"
    session_cookie = r.headers["set-cookie"]
    assert "HttpOnly" in session_cookie and "samesite=lax" in session_cookie.lower()
    # a cookie-authenticated API write needs the token too (header), a bearer-authenticated one does not
    assert client.post("/api/auth/tokens", json={"name": "x"}).status_code == 403
    r = client.post("/api/auth/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf_from(page.text)})
    assert r.status_code == 201
    # an open redirect after login is refused
    page = client.get("/login", headers={"accept": "text/html"})
    r = client.post("/login", data={**form, "next": "//evil.example/", "csrf_token": csrf_from(page.text)},
                    follow_redirects=False)
    assert r.headers["location"] == "/"


def test_cookies_are_secure_over_https_or_when_forced(database_url, tmp_path):
    from fastapi.testclient import TestClient

    for setting, base, secure in (("auto", "https://127.0.0.1", True), ("true", "http://127.0.0.1", True),
                                  ("false", "https://127.0.0.1", False)):
        app = create_app(make_settings(database_url, tmp_path / "data", cookie_secure=setting), domains=[])
        with TestClient(app, base_url=base) as c:
            cookie = c.get("/login", headers={"accept": "text/html"}).headers["set-cookie"]
            assert ("; Secure" in cookie) is secure, (setting, base, cookie)
        app.state.db.dispose()


def test_csrf_tokens_are_bound_to_the_cookie_and_the_key():
    tok = csrf_token_for("cookie-a", b"k1")
    assert csrf_ok("cookie-a", tok, b"k1")
    assert not csrf_ok("cookie-b", tok, b"k1") and not csrf_ok("cookie-a", tok, b"k2") and not csrf_ok(None, tok, b"k1")


def test_login_is_rate_limited(database_url, tmp_path):
    from fastapi.testclient import TestClient

    app = create_app(make_settings(database_url, tmp_path / "data", login_rate="3/minute"), domains=[])
    with TestClient(app) as c:
        codes = [c.post("/api/auth/token", json={"username": "a", "password": "wrong-password"}).status_code
                 for _ in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        r = c.post("/api/auth/token", json={"username": "a", "password": "wrong-password"})
        assert int(r.headers["retry-after"]) >= 1 and "at most 3/minute" in r.json()["detail"]
    app.state.db.dispose()


@pytest.mark.parametrize("store", ["memory", "file"])
def test_rate_limiter_window_slides(store, tmp_path):
    rl = RateLimiter() if store == "memory" else SharedRateLimiter(tmp_path / "limits.sqlite")
    assert [rl.hit("s", "k", 2, 10, now=t) for t in (0, 1)] == [0, 0]
    assert rl.hit("s", "k", 2, 10, now=5) == pytest.approx(5)
    assert rl.hit("s", "k", 2, 10, now=10.5) == 0
    assert rl.hit("s", "other", 2, 10, now=5) == 0


HITS = """
import sys
from deepsift.server.security import SharedRateLimiter
rl = SharedRateLimiter(sys.argv[1])
print(sum(rl.hit("login", "ip:1.2.3.4", 150, 60.0) == 0 for _ in range(200)))
"""


def test_processes_sharing_the_file_allow_the_limit_once_between_them(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "limits.sqlite"
    procs = [subprocess.Popen([sys.executable, "-c", HITS, str(path)], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    allowed = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert sum(allowed) == 150, allowed  # 600 attempts by three processes at once, one limit of 150
    assert SharedRateLimiter(path).hit("login", "ip:1.2.3.4", 150, 60.0) > 0
    assert SharedRateLimiter(path).hit("login", "ip:5.6.7.8", 150, 60.0) == 0


def test_an_unusable_limits_file_falls_back_to_this_process_with_a_warning(tmp_path, caplog):
    (tmp_path / "file").write_text("not a folder")
    rl = SharedRateLimiter(tmp_path / "file" / "limits.sqlite")
    with caplog.at_level("WARNING", logger="deepsift.server"):
        assert [rl.hit("s", "k", 2, 10, now=t) for t in (0, 1)] == [0, 0]
    assert rl.hit("s", "k", 2, 10, now=5) == pytest.approx(5)  # still limited, in memory
    assert sum("limiting per process" in r.getMessage() for r in caplog.records) == 1


def test_serve_with_several_processes_shares_one_limit(database_url, tmp_path):
    with ServeProcess(database_url, tmp_path / "data", args=("--processes", "3"),
                      extra_env={"DEEPSIFT_LOGIN_RATE": "4/minute"}) as srv:
        codes = []
        for _ in range(12):  # a new connection each: the processes take turns accepting them
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                codes.append(c.post("/api/auth/token", json={"username": "a", "password": "wrong-password"}).status_code)
    assert codes == [401] * 4 + [429] * 8, codes
    assert (tmp_path / "data" / "ratelimits.sqlite").is_file()


def test_request_bodies_over_the_cap_get_413(database_url, tmp_path):
    from fastapi.testclient import TestClient

    app = create_app(make_settings(database_url, tmp_path / "data", max_upload_mb=1), domains=[])
    with TestClient(app) as c:
        big = b"x" * (3 << 20)
        r = c.post("/api/auth/register", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413

        def chunks():  # no Content-Length: counted as it streams
            for _ in range(3):
                yield b"y" * (1 << 20)

        r = c.post("/login", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413
    app.state.db.dispose()


def test_errors_are_json_for_the_api_and_pages_for_browsers(client):
    assert client.get("/api/auth/me").json()["detail"].startswith("authentication required")
    r = client.get("/account", headers={"accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/account")


# -- storage ---------------------------------------------------------------------------------------
def test_storage_caps_uploads_and_keeps_nothing_partial(tmp_path):
    st = Storage(tmp_path / "storage")
    f = st.save_stream(io.BytesIO(b"abc"), "uploads", max_bytes=10, suffix=".csv")
    assert f.path.read_bytes() == b"abc" and f.path.name.endswith(".csv") and f.size == 3
    with pytest.raises(PayloadTooLargeError):
        st.save_stream(io.BytesIO(b"x" * 11), "uploads", max_bytes=10)
    assert sorted(p.name for p in (tmp_path / "storage" / "uploads").iterdir()) == [f.path.name]
    with pytest.raises(ValueError):
        st.folder("..")


def _zip(tmp_path, name, members, symlink=None):
    p = tmp_path / name
    with zipfile.ZipFile(p, "w") as zf:
        for m, data in members:
            zf.writestr(m, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return p


def test_hostile_archives_are_refused(tmp_path):
    cases = {
        "dotdot.zip": _zip(tmp_path, "dotdot.zip", [("../evil.txt", "x")]),
        "abs.zip": _zip(tmp_path, "abs.zip", [("/etc/evil.txt", "x")]),
        "link.zip": _zip(tmp_path, "link.zip", [("ok.txt", "x")], symlink="link"),
        "many.zip": _zip(tmp_path, "many.zip", [(f"f{i}.txt", "x") for i in range(6)]),
    }
    tar_path = tmp_path / "link.tar"
    with tarfile.open(tar_path, "w") as tf:
        info = tarfile.TarInfo("escape")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc"
        tf.addfile(info)
    cases["link.tar"] = tar_path
    limits = ArchiveLimits(max_files=5)
    messages = {}
    for name, path in cases.items():
        with pytest.raises(UnsafeArchiveError) as exc:
            extract_archive(path, tmp_path / "out" / name, limits)
        messages[name] = str(exc.value)
    assert "escapes" in messages["dotdot.zip"] and "absolute" in messages["abs.zip"]
    assert "link" in messages["link.zip"] and "link" in messages["link.tar"] and "more than 5" in messages["many.zip"]
    assert not any((tmp_path / "out").rglob("*.txt")) and not (tmp_path / "evil.txt").exists()
    ok = _zip(tmp_path, "ok.zip", [("a/b.txt", "hello"), ("c.txt", "x")])
    assert archive_members(ok) == [("a/b.txt", 5), ("c.txt", 1)]
    written = extract_archive(ok, tmp_path / "good")
    assert sorted(p.name for p in written) == ["b.txt", "c.txt"]


# -- real servers ----------------------------------------------------------------------------------
def test_a_real_uvicorn_serves_the_app(app):
    with LiveServer(app) as server:
        r = httpx.get(server.url + "/healthz")
        assert r.status_code == 200 and r.json()["status"] == "ok"


def test_deepsift_serve_migrates_an_empty_database_and_serves(database_url, tmp_path):
    with ServeProcess(database_url, tmp_path / "data") as srv:
        c = httpx.Client(base_url=srv.url)
        assert c.post("/api/auth/register", json={"username": "dave", "password": "dave-password"}).status_code == 201
        assert c.get("/api/openapi.json").status_code == 200
    db = Database(database_url)
    try:
        assert set(current(db)) == set(heads())
    finally:
        db.dispose()


def test_deepsift_serve_says_when_it_listens_and_answers_at_once(tmp_path):
    """``deepsift serve`` says one line once its port takes connections (what ServeProcess waits on, at any log
    level): the first request after it is answered with no retry, one process or several sharing the port."""
    for args in ((), ("--processes", "2")):
        data = tmp_path / f"data{len(args)}"
        with ServeProcess(f"sqlite:///{tmp_path / f'serve{len(args)}.db'}", data, args=args) as srv:
            assert httpx.get(srv.url + "/healthz", timeout=60).status_code == 200
            said = [ln for ln in srv.log().splitlines() if ln.startswith("deepsift: listening on ")]
            assert said == [f"deepsift: listening on {srv.url}"], srv.log()[-2000:]


def test_a_serve_that_cannot_listen_fails_its_start_at_once_with_its_log(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        srv = ServeProcess(f"sqlite:///{tmp_path / 'serve.db'}", tmp_path / "data", port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match=r"(?s)exited \(3\) before listening: .*address already in use"):
            srv.start(timeout=120)
        srv.stop()
    assert "deepsift: listening on" not in srv.log()


def test_the_worker_serve_starts_reads_the_database_url_from_its_environment(pg_server, tmp_path):
    """A password in the database URL never shows in the scoring worker's command line (``/proc/PID/cmdline``
    is readable by every local user): ``serve`` hands the URL to its worker in the environment."""
    pg_server.reset_database()
    url = pg_server.url.replace("postgres@", "postgres:not-in-argv-pw@")  # the test cluster trusts; the URL has one
    with ServeProcess(url, tmp_path / "data", scoring_workers=1) as srv:
        said = srv.wait_line(r"^deepsift: started `deepsift challenges worker .*` \(pid (\d+)\)$", 60,
                             "the scoring worker serve starts")
        worker = int(said[1])
        assert [k for k in child_pids(srv.proc.pid) if b"challenges\0worker" in cmdline(k)] == [worker]
        argv = cmdline(worker)
        assert b"not-in-argv-pw" not in argv and b"--database-url" not in argv, argv
        assert f"DEEPSIFT_DATABASE_URL={url}".encode() in Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
        assert httpx.get(srv.url + "/api/queue").status_code == 200


def test_a_password_on_the_command_line_is_warned_about(pg_server, tmp_path, capsys, monkeypatch):
    from deepsift.cli import main

    pg_server.reset_database()
    data = ["--data-dir", str(tmp_path / "d")]
    url = pg_server.url.replace("postgres@", "postgres:on-the-cmdline-pw@")
    assert main(["admin", "migrate", "--database-url", url, *data]) == 0
    err = capsys.readouterr().err
    assert "visible to every local user" in err and "DEEPSIFT_DATABASE_URL" in err and "on-the-cmdline-pw" not in err
    monkeypatch.setenv("DEEPSIFT_DATABASE_URL", url)  # the way to give it: no warning
    assert main(["admin", "migrate", *data]) == 0
    assert main(["admin", "migrate", "--database-url", pg_server.url, *data]) == 0  # no password: no warning
    assert "visible to every local user" not in capsys.readouterr().err


def test_admin_add_user_makes_a_host(database_url, tmp_path, capsys, monkeypatch):
    from deepsift.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("host-password\n"))
    args = ["--data-dir", str(tmp_path / "d"), "--database-url", database_url]
    assert main(["admin", "add-user", "hal", "--role", "host", "--password-stdin", *args]) == 0
    assert "created host hal" in capsys.readouterr().out
    assert main(["admin", "set-role", "hal", "participant", *args]) == 0
    assert main(["admin", "set-role", "nobody", "host", *args]) == 1
    assert "no user 'nobody'" in capsys.readouterr().err
