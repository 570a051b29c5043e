"""Requests a hostile outsider sends to the server's doors: each gets a clear 4xx, never a 500."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from httpserver import read_head
from platformkit import host_challenge, register


@pytest.fixture
def lenient(app):
    """A client that sees the server's 500s as responses (the real server's answer) instead of raising them."""
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("field", ["username", "password"])
def test_a_lone_surrogate_escaped_into_json_is_a_422(lenient, field):
    """``"\\ud800"`` is valid JSON but no UTF-8: the validation error that echoes it back must still encode."""
    other = "alice" if field == "password" else "password-123"
    body = ('{"%s": "ab\\ud800cd", "%s": "%s"}' % (field, "username" if field == "password" else "password", other))
    r = lenient.post("/api/auth/register", content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["loc"] == ["body", field] and "unicode" in detail[0]["msg"]
    assert lenient.get("/healthz").status_code == 200


def test_a_lone_surrogate_in_a_team_name_is_a_422(app, lenient, tmp_path):
    hosted = host_challenge(app, lenient, tmp_path)
    alice = register(lenient, "alice")
    r = lenient.post(f"/api/challenges/{hosted.slug}/teams", content=b'{"name": "Team \\udc80 A"}',
                     headers={"content-type": "application/json", **alice.auth})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "name"]
    r = lenient.post(f"/api/challenges/{hosted.slug}/teams", json={"name": "Team \u00e9 A"}, headers=alice.auth)
    assert r.status_code == 201 and r.json()["name"] == "Team \u00e9 A", r.text  # real non-ASCII text is fine


def _until_closed(sock, limit: float = 30.0) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if it keeps it past ``limit``)."""
    sock.settimeout(limit)
    out = b""
    while chunk := sock.recv(4096):
        out += chunk
    return out


def test_deepsift_serve_cuts_off_clients_that_send_too_slowly(tmp_path):
    """Slowloris: a connection that sends no request, or its headers or body too slowly, is closed (a 408 when
    no response began), rather than held for ever; a prompt client on the same server is answered."""
    import socket
    import time

    import httpx

    from serverkit import ServeProcess

    env = {"DEEPSIFT_HEADER_TIMEOUT_S": "1", "DEEPSIFT_BODY_IDLE_TIMEOUT_S": "1"}
    with ServeProcess(f"sqlite:///{tmp_path / 'serve.db'}", tmp_path / "data", extra_env=env) as srv:
        def connect() -> socket.socket:
            return socket.create_connection(("127.0.0.1", srv.port), timeout=30)

        with connect() as silent, connect() as partial, connect() as stalled, connect() as prompt:
            partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            stalled.sendall(b"POST /api/auth/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 200\r\n\r\n{\"username\": \"carol\", \"password\": \"password-123\"")
            prompt.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert _until_closed(prompt).startswith(b"HTTP/1.1 200 ")
            assert _until_closed(silent).startswith(b"HTTP/1.1 408 ")
            assert _until_closed(partial).startswith(b"HTTP/1.1 408 ")
            assert not _until_closed(stalled).startswith(b"HTTP/1.1 2")  # cut off: the account was never made
        with connect() as trickle:
            trickle.sendall(b"POST /api/auth/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 100\r\n\r\n")
            sent = 0
            try:  # a byte every 0.25 s: never idle for the 1 s allowed, but far below 1 KiB/s on average
                while sent < 100:
                    trickle.sendall(b" ")
                    sent += 1
                    time.sleep(0.25)  # the slow client's pace (what is tested), not a wait for the server
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert sent < 100, "a body trickling in at 4 bytes/s was read to its end"
        assert httpx.get(srv.url + "/healthz", timeout=30).status_code == 200
        r = httpx.post(srv.url + "/api/auth/token", json={"username": "carol", "password": "password-123"}, timeout=30)
        assert r.status_code == 401, r.text


def _read_head(sock) -> bytes:
    """The server's next response head (up to its blank line), or what came before it closed."""
    sock.settimeout(30)
    return read_head(sock)


def test_one_address_cannot_start_more_than_its_share_of_large_uploads(database_url, tmp_path):
    """Large bodies are read (spooled to disk, or kept in memory) before a route checks anything: one
    address gets ``max_uploads_per_client`` of them at once, and the next a 429 before its body is sent."""
    import socket

    from deepsift.server import create_app
    from serverkit import LiveServer, make_settings

    app = create_app(make_settings(database_url, tmp_path / "data", max_uploads_per_client=2))
    size = 4 << 20
    head = (f"POST /api/challenges/c1/phases/dev/submissions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {size}\r\n"
            f"Expect: 100-continue\r\n\r\n").encode()  # anonymous: refused, but only once its form is read
    part = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="p.csv"\r\n\r\n'
    body = part + b"x" * (size - len(part) - 11) + b"\r\n--XyZ--\r\n"
    assert len(body) == size
    try:
        with LiveServer(app) as live:
            def connect() -> socket.socket:
                return socket.create_connection(("127.0.0.1", live.port), timeout=30)

            with connect() as first, connect() as second, connect() as third:
                for s in (first, second):  # "100 Continue": the route is reading this body, its slot is taken
                    s.sendall(head)
                    assert _read_head(s).startswith(b"HTTP/1.1 100 "), "the upload did not start"
                third.sendall(head)
                refused = _read_head(third)
                assert refused.startswith(b"HTTP/1.1 429 ") and b"retry-after: 1" in refused.lower(), refused
                for s in (first, second):  # the slots' own uploads go on undisturbed
                    s.sendall(body)
                    assert _read_head(s).startswith(b"HTTP/1.1 401 ")
            small = (b'{"username": "dora", "password": "password-123"}')
            with connect() as after:  # small requests never wait for a slot
                after.sendall(b"POST /api/auth/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(small), small))
                assert _read_head(after).startswith(b"HTTP/1.1 201 ")
    finally:
        app.state.db.dispose()


def test_a_deeply_nested_preprocessing_spec_is_a_422_and_leaves_nothing(app, lenient, tmp_path):
    """10,000 characters of ``[[[...]]]`` fit the spec field's cap but not Python's JSON recursion limit."""
    from platformkit import join

    hosted = host_challenge(app, lenient, tmp_path)
    alice = join(lenient, hosted.slug, register(lenient, "alice"), "Team A")
    for spec in ("[" * 5000 + "]" * 5000, '{"mean": ' + "[" * 4000 + "]" * 4000 + "}"):
        r = lenient.post(f"/api/challenges/{hosted.slug}/phases/{hosted.phase}/submissions",
                         files={"file": ("model.onnx", b"\x08\x07" + b"\x00" * 64)},
                         data={"kind": "model", "preprocessing": spec}, headers=alice.auth)
        assert r.status_code == 422, r.text[:300]
        assert r.json()["detail"].startswith("preprocessing spec: ") and "nested" in r.json()["detail"]
    assert not any((app.state.storage.root / "challenges" / "uploads").iterdir())


def _page_login(client, username: str, password: str) -> str:
    """Log ``client`` in through the login form; the page CSRF token for its next forms."""
    import re

    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303, r.text[:300]
    return token


def test_the_new_challenge_form_reads_no_participants_yaml_and_refuses_deep_yaml(app, lenient):
    """A participant's spec is refused before it is parsed; a host's ``[[[...]]]`` (within the field's
    200,000 characters, deeper than the YAML parser can go) is a 422 on the form, not a 500."""
    from deepsift.server.accounts import create_user

    deep = "[" * 50_000 + "]" * 50_000
    register(lenient, "mallory")
    token = _page_login(lenient, "mallory", "password-123")
    r = lenient.post("/host/new", data={"spec": deep, "csrf_token": token}, headers={"accept": "text/html"})
    assert r.status_code == 403 and "only hosts create challenges" in r.text, r.text[-300:]
    with app.state.db.session(write=True) as s:
        create_user(s, username="hoster", password="host-password", role="host")
    lenient.cookies.clear()
    token = _page_login(lenient, "hoster", "host-password")
    r = lenient.post("/host/new", data={"spec": deep, "csrf_token": token}, headers={"accept": "text/html"})
    assert r.status_code == 422 and "not valid YAML: nested too deeply" in r.text, r.text[-300:]


def test_a_spec_file_nested_too_deeply_is_one_clear_error(tmp_path):
    from deepsift.challenges.spec import load_spec
    from deepsift.exceptions import InvalidInputError

    path = tmp_path / "spec.yaml"
    path.write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(InvalidInputError, match="not valid YAML \\(nested too deeply\\)"):
        load_spec(path)


def test_a_team_cannot_pass_itself_off_as_another_with_look_alike_letters(app, lenient, tmp_path):
    """A Cyrillic "е" in "Tеam A", or full-width "ｔｅａｍ ａ", would show on the boards as "Team A"."""
    hosted = host_challenge(app, lenient, tmp_path)
    url = f"/api/challenges/{hosted.slug}/teams"
    assert lenient.post(url, json={"name": "Team A"}, headers=register(lenient, "alice").auth).status_code == 201
    r = lenient.post(url, json={"name": "T\u0435am A"}, headers=register(lenient, "mallory").auth)
    assert r.status_code == 422 and "mixes cyrillic, latin letters" in r.json()["detail"], r.text
    r = lenient.post(url, json={"name": "\uff54\uff45\uff41\uff4d \uff41"}, headers=register(lenient, "mallet").auth)
    assert r.status_code == 409 and "'team a' exists" in r.json()["detail"], r.text
    for i, name in enumerate(["\u041a\u043e\u043c\u0430\u043d\u0434\u0430 1", "\u6771\u4eac\u30c1\u30fc\u30e0 Tokyo",
                              "\u00c9quipe \u00dcnique"]):  # one script, or the mixes real names use
        r = lenient.post(url, json={"name": name}, headers=register(lenient, f"player{i}").auth)
        assert r.status_code == 201 and r.json()["name"] == name, r.text


def test_json_and_form_bodies_over_2_mib_are_refused_before_they_are_parsed(app, lenient, tmp_path):
    """JSON and URL-encoded bodies are read whole and parsed into objects many times their size: capped far
    below the upload limit (which multipart file uploads keep)."""
    from platformkit import join, submit

    zeros = b"[" + b"0," * (3 << 20) + b"0]"  # a 6 MiB array: 3 million objects once parsed
    for ctype in ("application/json", "application/vnd.api+json"):
        r = lenient.post("/api/auth/register", content=zeros, headers={"content-type": ctype})
        assert r.status_code == 413 and "JSON or form body" in r.json()["detail"], r.text[:300]
    form = b"username=a&password=" + b"p" * (3 << 20)
    r = lenient.post("/login", content=form, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413, r.text[:300]
    hosted = host_challenge(app, lenient, tmp_path)
    alice = join(lenient, hosted.slug, register(lenient, "alice"), "Team A")
    r = submit(lenient, hosted, alice, b"id,score\n" + b"x" * (3 << 20), "big.csv")  # a file: read, then judged
    assert r.status_code == 422 and r.json()["detail"].startswith("big.csv line 2: longer than"), r.text[:300]
