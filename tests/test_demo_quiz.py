"""The quiz on SQLite and PostgreSQL: guess first, truth after; no replay; tally; anonymous per-generator stats."""
from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from deepsift.demo.quiz import QuizSet
from deepsift.demo.settings import DemoSettings
from deepsift.server import create_app
from demokit import demo_settings, fit_demo_heads


@pytest.fixture(scope="module")
def heads_dir(code_model_dir, labelled_folders, tmp_path_factory):
    return fit_demo_heads(code_model_dir, labelled_folders, tmp_path_factory.mktemp("demo-heads"))


@pytest.fixture
def quiz_app(database_url, code_model_dir, heads_dir, labelled_folders, tmp_path):
    root = labelled_folders["real"].parent  # real/, gen_a/, gen_b/
    app = create_app(demo_settings(database_url, tmp_path / "data", code_model_dir, heads_dir, quiz=root))
    yield app
    app.state.db.dispose()


def visitor(app):
    return TestClient(app, base_url="http://127.0.0.1")


def play(c, guess="fake"):
    r = c.post("/api/v1/quiz/rounds")
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "image_url", "tally"}  # nothing about the truth before the guess
    img = c.get(body["image_url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(img.content)) as im:
        assert im.format == "PNG" and not im.info.get("parameters") and not getattr(im, "text", {})
    return body, c.post(f"/api/v1/quiz/rounds/{body['id']}/guess", json={"guess": guess})


def test_three_rounds_tally_no_replay_and_stats(quiz_app):
    with visitor(quiz_app) as ada, visitor(quiz_app) as bob:
        tallies = []
        for i in range(3):
            start, r = play(ada, "fake" if i % 2 else "real")
            assert r.status_code == 200, r.text
            rev = r.json()
            assert rev["truth"] in ("real", "fake") and rev["detector"] in ("real", "fake")
            assert rev["you_right"] == (rev["guess"] == rev["truth"])
            assert rev["detector_right"] == (rev["detector"] == rev["truth"])
            assert (rev["generator"] is None) == (rev["truth"] == "real")
            tallies.append(rev["tally"])
            again = ada.post(f"/api/v1/quiz/rounds/{start['id']}/guess", json={"guess": rev["truth"]})
            assert again.status_code == 409 and "already answered" in again.json()["detail"]  # no replay
        assert [t["rounds"] for t in tallies] == [1, 2, 3]
        assert ada.get("/api/v1/quiz/tally").json() == tallies[-1]
        start, _ = play(bob, "real")
        mine = ada.post("/api/v1/quiz/rounds").json()
        stolen = bob.post(f"/api/v1/quiz/rounds/{mine['id']}/guess", json={"guess": "fake"})
        assert stolen.status_code == 404  # someone else's round is no round at all
        assert bob.get("/api/v1/quiz/tally").json()["rounds"] == 1
        stats = ada.get("/api/v1/quiz/stats").json()
        assert sum(s["rounds"] for s in stats) == 4
        assert {s["generator"] for s in stats} <= {"real", "gen_a", "gen_b"}
        for s in stats:
            assert 0 <= s["people_right"] <= s["rounds"] and 0 <= s["detector_right"] <= s["rounds"]
        page = ada.get("/quiz/results", headers={"accept": "text/html"}).text
        assert "<svg" in page and "people versus the detector" in page.lower()
    with quiz_app.state.db.session() as s:
        from sqlalchemy import text

        cols = set(s.execute(text("SELECT * FROM demo_quiz_rounds")).keys())
        hashes = [r[0] for r in s.execute(text("SELECT visitor_hash FROM demo_quiz_rounds"))]
    assert not ({"ip", "address", "user_agent", "user_id"} & cols)  # anonymous
    assert all(len(h) == 64 for h in hashes) and ada.cookies.get("deepsift_quiz") not in hashes


def test_unconfigured_quiz_says_so(code_model_dir, heads_dir, tmp_path):
    app = create_app(demo_settings(f"sqlite:///{tmp_path / 'q.db'}", tmp_path / "d", code_model_dir, heads_dir))
    with visitor(app) as c:
        r = c.post("/api/v1/quiz/rounds")
        assert r.status_code == 503 and "no quiz dataset is configured" in r.json()["detail"]
        assert "no quiz dataset configured" in c.get("/quiz", headers={"accept": "text/html"}).text
    app.state.db.dispose()


def test_quiz_from_d3_shards_and_a_real_folder(tmp_path, labelled_folders):
    from data_factory import make_shards

    make_shards(tmp_path / "shards", n_records=3, per_shard=2, n_gen=2)
    quiz = QuizSet(DemoSettings(quiz_dataset=str(tmp_path / "shards"), quiz_layout="parquet",
                                quiz_real=str(labelled_folders["real"])))
    samples = quiz.samples()
    assert sum(s.label == 1 for s in samples.values()) == 6 and sum(s.label == 0 for s in samples.values()) == 12
    picked = {quiz.pick().label for _ in range(40)}
    assert picked == {0, 1}
    fake = next(k for k, s in samples.items() if s.label == 1)
    with Image.open(io.BytesIO(quiz.image_png(fake, 10**6))) as im:
        assert im.size == (24, 16) or im.size == (25, 16)
