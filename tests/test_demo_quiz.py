"""The quiz on SQLite and PostgreSQL: guess first, truth after; no replay; tally; anonymous per-generator stats."""
from __future__ import annotations

import datetime as dt
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from deepsift.demo.quiz import QuizSet
from deepsift.demo.settings import DemoSettings
from deepsift.server.db import utcnow
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
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(img.content)) as im:
        assert im.format == "JPEG" and not im.info.get("parameters") and not im.getexif()
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
        from sqlalchemy import text

        with quiz_app.state.db.session() as s:  # a visitor's first answer per image counts (images are random)
            firsts = len(set(s.execute(text("SELECT visitor_hash, item FROM demo_quiz_rounds WHERE guess IS NOT NULL"))))
        assert 2 <= firsts <= 4 and sum(s["rounds"] for s in stats) == firsts
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
    with Image.open(io.BytesIO(quiz.image_jpeg(fake, "round-1", 96, 10**6))) as im:
        assert im.format == "JPEG" and im.size == (96, 96)


# -- stuffing, expiry and images that give nothing away (issue 18 item 5) ----------------------------
@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    """A quiz of one real JPEG (300x260) and one fake square PNG (256x256), the shapes D3 has."""
    from demokit import jpeg_bytes, png_bytes

    root = tmp_path_factory.mktemp("two-images")
    (root / "real").mkdir()
    (root / "gen_a").mkdir()
    (root / "real" / "photo.jpg").write_bytes(jpeg_bytes(5, 300, 260))
    (root / "gen_a" / "fake.png").write_bytes(png_bytes(6, 256, 256))
    return root


def guarded_app(database_url, code_model_dir, heads_dir, quiz, tmp_path, **opts):
    return create_app(demo_settings(database_url, tmp_path / "data", code_model_dir, heads_dir, quiz=quiz, **opts))


def at(app, address):
    return TestClient(app, base_url="http://127.0.0.1", client=(address, 50000))


def truth_of(app, round_id):
    from deepsift.demo.models import QuizRound

    with app.state.db.session() as s:
        row = s.get(QuizRound, round_id)
        return row.truth, row.item


def test_a_stuffing_client_cannot_move_people_accuracy_beyond_its_cap(database_url, code_model_dir, heads_dir,
                                                                      two_images, tmp_path):
    app = guarded_app(database_url, code_model_dir, heads_dir, two_images, tmp_path,
                      quiz_new_visitors_per_hour=3, quiz_rounds_per_hour=40)
    try:
        honest = 0
        for addr in ("10.0.0.1", "10.0.0.2"):  # two honest visitors, always wrong, who saw both images
            with at(app, addr) as c:
                seen = set()
                while len(seen) < 2:
                    rid = c.post("/api/v1/quiz/rounds").json()["id"]
                    truth, item = truth_of(app, rid)
                    seen.add(item)
                    assert c.post(f"/api/v1/quiz/rounds/{rid}/guess",
                                  json={"guess": "real" if truth else "fake"}).status_code == 200
            honest += 2
        refused = 0
        for _ in range(30):  # the stuffer: a fresh cookie every round, always right (it knows every image)
            with at(app, "10.0.0.9") as c:
                r = c.post("/api/v1/quiz/rounds")
                if r.status_code == 429:
                    refused += 1
                    assert "from your network" in r.json()["detail"] and int(r.headers["retry-after"]) > 0
                    continue
                rid = r.json()["id"]
                truth, _ = truth_of(app, rid)
                for _ in range(5):  # the same visitor answering the same image again counts once
                    assert c.post(f"/api/v1/quiz/rounds/{rid}/guess",
                                  json={"guess": "fake" if truth else "real"}).status_code in (200, 409)
                    r2 = c.post("/api/v1/quiz/rounds")
                    if r2.status_code != 201:
                        break
                    rid = r2.json()["id"]
                    truth, _ = truth_of(app, rid)
        assert refused == 27  # 3 new players an hour from one address
        with at(app, "10.0.0.3") as c:
            stats = {s["generator"]: s for s in c.get("/api/v1/quiz/stats").json()}
            page = c.get("/quiz/results", headers={"accept": "text/html"}).text
        assert set(stats) == {"real", "gen_a"}
        for s in stats.values():
            assert s["visitors"] <= 2 + 3  # the honest two and at most three stuffers
            assert s["rounds"] <= s["visitors"]  # one counted answer per visitor and image
            assert s["people_accuracy"] <= 3 / 5 + 1e-9  # the cap: 3 perfect visitors against 2 wrong ones
        assert sum(s["rounds"] for s in stats.values()) >= honest
        assert "visitors" in page
    finally:
        app.state.db.dispose()


def test_rounds_per_address_are_limited_and_unanswered_rounds_expire(database_url, code_model_dir, heads_dir,
                                                                     two_images, tmp_path):
    from sqlalchemy import text

    app = guarded_app(database_url, code_model_dir, heads_dir, two_images, tmp_path,
                      quiz_rounds_per_hour=4, quiz_round_ttl=60)
    try:
        with at(app, "10.0.0.1") as c, at(app, "10.0.0.2") as other:
            ids = [c.post("/api/v1/quiz/rounds").json()["id"] for _ in range(4)]
            over = c.post("/api/v1/quiz/rounds")
            assert over.status_code == 429 and "at most 4" in over.json()["detail"]
            assert other.post("/api/v1/quiz/rounds").status_code == 201  # another address is not affected
            with app.state.db.session(write=True) as s:  # two of the rounds were started two minutes ago
                s.execute(text("UPDATE demo_quiz_rounds SET created_at = :t WHERE id IN (:a, :b)"),
                          {"t": utcnow() - dt.timedelta(seconds=120), "a": ids[0], "b": ids[1]})
            late = c.post(f"/api/v1/quiz/rounds/{ids[0]}/guess", json={"guess": "real"})
            assert late.status_code == 409 and "expired" in late.json()["detail"]
            assert c.post(f"/api/v1/quiz/rounds/{ids[2]}/guess", json={"guess": "real"}).status_code == 200
            assert other.post("/api/v1/quiz/rounds").status_code == 201  # starting a round clears expired ones
        with app.state.db.session() as s:
            left = set(s.execute(text("SELECT id FROM demo_quiz_rounds")).scalars())
        assert ids[0] not in left and ids[1] not in left and {ids[2], ids[3]} <= left
    finally:
        app.state.db.dispose()


def test_real_and_fake_are_served_alike_and_never_twice_the_same(code_model_dir, heads_dir, two_images, tmp_path):
    import hashlib

    import numpy as np

    app = guarded_app(f"sqlite:///{tmp_path / 'q.db'}", code_model_dir, heads_dir, two_images, tmp_path,
                      quiz_image_size=200)
    try:
        served: dict[int, list[tuple[bytes, np.ndarray]]] = {0: [], 1: []}
        with at(app, "10.0.0.1") as c:
            while min(len(v) for v in served.values()) < 2:
                rid = c.post("/api/v1/quiz/rounds").json()["id"]
                img = c.get(f"/api/v1/quiz/rounds/{rid}/image")
                assert img.headers["content-type"] == "image/jpeg"
                with Image.open(io.BytesIO(img.content)) as im:
                    assert (im.format, im.size, im.mode) == ("JPEG", (200, 200), "RGB")
                    assert not im.getexif() and not im.info.get("icc_profile")
                    pixels = np.asarray(im)
                again = c.get(f"/api/v1/quiz/rounds/{rid}/image").content
                assert again == img.content  # one round, one image
                served[truth_of(app, rid)[0]].append((img.content, pixels))
        for label, rounds in served.items():
            (a, pa), (b, pb) = rounds[:2]  # the same source image in two rounds
            assert hashlib.sha256(a).digest() != hashlib.sha256(b).digest()
            assert not np.array_equal(pa, pb)
    finally:
        app.state.db.dispose()


def test_demo_0002_counts_each_visitors_first_answer_of_old_rounds(database_url):
    from sqlalchemy import inspect, text

    from deepsift.server.db import Database
    from deepsift.server.migrate import upgrade

    db = Database(database_url)
    try:
        upgrade(db, "demo@demo_0001")
        with db.session(write=True) as s:
            for rid, vis, item, ans in (("a", "v1", "x", 1), ("b", "v1", "x", 2), ("c", "v1", "y", 3),
                                        ("d", "v2", "x", 4), ("e", "v2", "y", None)):
                s.execute(text("INSERT INTO demo_quiz_rounds (id, visitor_hash, item, generator, truth, guess, "
                               "created_at, answered_at) VALUES (:i, :v, :it, 'real', 0, :g, :c, :t)"),
                          {"i": rid, "v": vis, "it": item, "g": None if ans is None else 0, "c": utcnow(),
                           "t": None if ans is None else utcnow() + dt.timedelta(seconds=ans)})
        upgrade(db)
        assert "counted" in {c["name"] for c in inspect(db.engine).get_columns("demo_quiz_rounds")}
        with db.session() as s:
            counted = set(s.execute(text("SELECT id FROM demo_quiz_rounds WHERE counted")).scalars())
        assert counted == {"a", "c", "d"}
    finally:
        db.dispose()


def test_quiz_images_wait_for_the_demos_own_pool_and_pages_do_not_wait(code_model_dir, heads_dir, two_images,
                                                                        tmp_path):
    """45 quiz images queued behind a busy decoding pool hold no shared thread: '/' and /healthz answer at once."""
    import threading
    import time

    import httpx

    from serverkit import LiveServer

    app = guarded_app(f"sqlite:///{tmp_path / 'q.db'}", code_model_dir, heads_dir, two_images, tmp_path, workers=1)
    bounds, gate, got = app.state.demo.bounds, threading.Event(), []
    try:
        with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=60) as c:
            rid = c.post("/api/v1/quiz/rounds").json()["id"]
            busy = bounds.pool.submit(gate.wait)  # the pool's one thread is decoding something long
            threads = [threading.Thread(target=lambda: got.append(httpx.get(
                f"{live.url}/api/v1/quiz/rounds/{rid}/image", timeout=120))) for _ in range(45)]
            for t in threads:
                t.start()
            try:
                assert bounds.wait_for_pending(45, timeout=60), "the quiz images did not queue on the demo's pool"
                for path, accept in (("/", "text/html"), ("/healthz", "application/json"), ("/quiz", "text/html")):
                    t0 = time.perf_counter()
                    r = c.get(path, headers={"accept": accept})
                    took = time.perf_counter() - t0
                    assert r.status_code == 200 and took < 0.5, (path, r.status_code, took)
                assert got == []  # all 45 still waiting for the pool, none on the shared threads
            finally:
                gate.set()
                for t in threads:
                    t.join(120)
            busy.result(timeout=10)
        assert len(got) == 45 and {r.status_code for r in got} == {200}
        assert {r.headers["content-type"] for r in got} == {"image/jpeg"}
    finally:
        gate.set()
        app.state.db.dispose()


def test_new_rounds_waiting_for_the_detector_hold_no_shared_thread(code_model_dir, heads_dir, two_images, tmp_path):
    """45 new rounds whose images the detector has not answered yet wait for its (busy) forward thread:
    '/', /healthz and the quiz page answer at once meanwhile."""
    import threading
    import time

    import httpx

    from serverkit import LiveServer

    app = guarded_app(f"sqlite:///{tmp_path / 'q.db'}", code_model_dir, heads_dir, two_images, tmp_path)
    engine, gate, got = app.state.demo.engine, threading.Event(), []
    try:
        with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=60) as c:
            assert c.get("/api/v1/detector").status_code == 200  # the model is loaded
            c.post("/api/v1/quiz/rounds")  # a visitor cookie (its round's image is answered now)
            engine.forward().call_async(gate.wait)  # the forward thread is busy with a long pass
            app.state.demo.quiz._answers.clear()  # a process that has not answered these images yet
            cookies = dict(c.cookies)
            threads = [threading.Thread(target=lambda: got.append(httpx.post(
                f"{live.url}/api/v1/quiz/rounds", cookies=cookies, timeout=120))) for _ in range(45)]
            for t in threads:
                t.start()
            try:
                assert engine.forward().wait_queued(45, timeout=60), "the new rounds did not wait for the detector"
                for path, accept in (("/", "text/html"), ("/healthz", "application/json"), ("/quiz", "text/html")):
                    t0 = time.perf_counter()
                    r = c.get(path, headers={"accept": accept})
                    took = time.perf_counter() - t0
                    assert r.status_code == 200 and took < 0.5, (path, r.status_code, took)
                assert got == []
            finally:
                gate.set()
                for t in threads:
                    t.join(120)
        assert len(got) == 45 and {r.status_code for r in got} == {201}
    finally:
        gate.set()
        app.state.db.dispose()
