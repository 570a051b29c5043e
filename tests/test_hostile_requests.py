"""Requests a hostile outsider sends to the server's doors: each gets a clear 4xx, never a 500."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

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
