"""The real-image fetcher against a local HTTP server on 127.0.0.1 (started here, in a thread)."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import ThreadingHTTPServer

import pytest
from data_factory import encoded_image, make_record
from httpkit import QuietHandler

from deepsift.data.fetch import Fetcher, FetchConfig, load_status, parse_retry_after, safe_name
from deepsift.data.writer import write_shard
from deepsift.exceptions import UsageError
from deepsift.urlfetch import USER_POLICY, FetchPolicy

GOOD = encoded_image(1, (32, 20))
PNG = encoded_image(2, (20, 20), "PNG")
HUGE_PIXELS = encoded_image(3, (200, 200), "PNG")  # over the test's pixel cap of 10,000


class Handler(QuietHandler):
    def do_GET(self):
        srv = self.server
        path = self.path
        with srv.lock:
            srv.hits[path] += 1
            srv.times.setdefault(path, []).append(time.monotonic())
            n = srv.hits[path]
        if path.startswith("/good"):
            self._send(200, GOOD)
        elif path == "/png":
            self._send(200, PNG, "image/png")
        elif path == "/missing":
            self._send(404, b"not found", "text/plain")
        elif path == "/slow":
            srv.release.wait(30)  # held until the test ends; the client gives up first
            self._send(200, GOOD)
        elif path == "/redirect":
            self._send(302, b"", headers=[("Location", "/good/target")])
        elif path == "/loop":
            self._send(302, b"", headers=[("Location", "/loop")])
        elif path == "/redirect-away":  # to another loopback address than the one allowed in strict tests
            self._send(302, b"", headers=[("Location", f"http://127.0.0.2:{srv.server_address[1]}/good/away")])
        elif path == "/oversized":
            self._send(200, b"\xff\xd8\xff" + b"0" * 5000)
        elif path == "/oversized-chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(10):
                self.wfile.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/huge-pixels":
            self._send(200, HUGE_PIXELS, "image/png")
        elif path == "/html":
            self._send(200, b"<html><body>Gone fishing</body></html>", "text/html")
        elif path == "/corrupt":
            self._send(200, GOOD[: len(GOOD) // 2])
        elif path == "/flaky429":
            if n == 1:
                self._send(429, b"slow down", "text/plain", [("Retry-After", "1")])
            else:
                self._send(200, GOOD)
        elif path == "/flaky503":
            if n <= 2:
                self._send(503, b"busy", "text/plain")
            else:
                self._send(200, GOOD)
        elif path == "/down503":
            self._send(503, b"busy", "text/plain")
        else:
            self._send(500, b"?", "text/plain")


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.hits, srv.times, srv.lock, srv.release = Counter(), {}, threading.Lock(), threading.Event()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


CASES = {
    "good": ("/good/1", "ok"),
    "png": ("/png", "ok"),
    "missing": ("/missing", "http_404"),
    "slow": ("/slow", "timeout"),
    "redirect": ("/redirect", "ok"),
    "loop": ("/loop", "too_many_redirects"),
    "oversized": ("/oversized", "too_large"),
    "chunked": ("/oversized-chunked", "too_large"),
    "pixels": ("/huge-pixels", "too_large"),
    "html": ("/html", "not_image"),
    "corrupt": ("/corrupt", "not_image"),
    "r429": ("/flaky429", "ok"),
    "r503": ("/flaky503", "ok"),
    "down": ("/down503", "http_503"),
}


def config(**kw):
    # the test server is on 127.0.0.1: the explicit setting that allows it (the default policy is strict)
    base = dict(concurrency=8, per_host=4, timeout=1.0, retries=2, backoff=0.01, max_bytes=4096,
                max_pixels=10_000, max_redirects=3, trust_env=False, url_policy=USER_POLICY)
    return FetchConfig(**{**base, **kw})


def test_every_response_kind_gets_its_status_and_resume_fetches_nothing(server, tmp_path):
    items = [(rid, server.base + path) for rid, (path, _) in CASES.items()] + [("nourl", None), ("ftp", "ftp://x/y.jpg")]
    out = tmp_path / "real"
    summary = Fetcher(out, config()).run(items, progress=False)
    status = load_status(out)
    got = {rid: status[rid]["status"] for rid in CASES}
    assert got == {rid: want for rid, (_, want) in CASES.items()}
    assert status["nourl"]["status"] == "no_url" and status["ftp"]["status"] == "invalid_url"
    assert summary.statuses["ok"] == 5 and summary.fetched == len(items)
    # original bytes kept, extension from the content
    assert (out / "good.jpg").read_bytes() == GOOD and (out / "png.png").read_bytes() == PNG
    assert (out / "redirect.jpg").read_bytes() == GOOD
    assert status["good"]["width"] == 32 and status["good"]["height"] == 20
    # retries: 429 honoured Retry-After (1 s), 503 retried twice, a dead host gives up after retries
    t429 = server.times["/flaky429"]
    assert len(t429) == 2 and t429[1] - t429[0] >= 0.9
    assert server.hits["/flaky503"] == 3 and status["r503"]["attempts"] == 3
    assert server.hits["/down503"] == 3 and status["down"]["attempts"] == 3
    assert server.hits["/missing"] == 1  # a 404 is not retried
    # failed downloads leave no file behind, and no temporary files remain
    assert sorted(p.name for p in out.iterdir()) == sorted(  # status.sqlite: the on-disk index (issue 12)
        ["status.jsonl", "status.sqlite", "good.jpg", "png.png", "redirect.jpg", "r429.jpg", "r503.jpg"])

    before = Counter(server.hits)
    again = Fetcher(out, config()).run(items, progress=False)
    # ok and permanent failures are skipped; only transient failures (timeout, 503) are retried
    assert again.statuses == Counter({"timeout": 1, "http_503": 1})
    assert again.skipped == len(items) - 2
    changed = {p for p in server.hits if server.hits[p] != before[p]}
    assert changed == {"/slow", "/down503"}


def test_a_deleted_image_is_fetched_again_and_retry_failed(server, tmp_path):
    out = tmp_path / "real"
    items = [("a", server.base + "/good/a"), ("b", server.base + "/missing")]
    Fetcher(out, config()).run(items, progress=False)
    (out / "a.jpg").unlink()
    again = Fetcher(out, config()).run(items, progress=False)
    assert again.statuses == Counter({"ok": 1}) and (out / "a.jpg").read_bytes() == GOOD
    forced = Fetcher(out, config(retry_failed=True)).run(items, progress=False)
    assert forced.statuses == Counter({"http_404": 1})
    lines = (out / "status.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == ["a", "a", "b", "b"]  # one line per attempt run


def test_per_host_cap_is_respected(tmp_path):
    active, peak, lock, gate = [0], [0], threading.Lock(), threading.Event()

    class Counting(Handler):
        def do_GET(self):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                if active[0] >= 3:
                    gate.set()
            gate.wait(10)  # hold the first requests until 3 overlap, so the peak is reached
            self._send(200, GOOD)
            with lock:
                active[0] -= 1

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        items = [(str(i), f"{base}/good/{i}") for i in range(12)]
        summary = Fetcher(tmp_path, config(concurrency=12, per_host=3)).run(items, progress=False)
    finally:
        srv.shutdown()
        srv.server_close()
    assert summary.statuses == Counter({"ok": 12})
    assert peak[0] == 3


def test_cli_fetch_real_from_shards(server, tmp_path, capsys):
    from deepsift.cli import main

    recs = [make_record(0, 1, url=server.base + "/good/x"), make_record(1, 1, url=server.base + "/missing"),
            make_record(2, 1, url=server.base + "/html")]
    write_shard(recs, tmp_path / "shards" / "d3-00000.parquet", n_generators=1)
    out = tmp_path / "real"
    args = ["data", "fetch-real", str(tmp_path / "shards"), "--out", str(out), "--timeout", "2", "--backoff", "0"]
    assert main(args) == 3  # two dead links: done, but some ids failed
    err = capsys.readouterr().err
    assert "3 id(s): http_404 1, not_image 1, ok 1" in err and "this run fetched 3" in err
    assert "2 id(s) have no image" in err
    assert (out / "100000.jpg").read_bytes() == GOOD
    assert main(args) == 3  # a re-run skips everything, and still says the folder lacks two images
    err = capsys.readouterr().err
    assert "3 id(s): http_404 1, not_image 1, ok 1" in err and "this run fetched 0" in err and "skipped 3" in err
    assert main([*args, "--allow-failures"]) == 0  # dead links accepted



def test_helpers():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert safe_name("12345") == "12345"
    for evil in ("../../etc/passwd", "a/b", ".hidden", "", "x" * 500):
        name = safe_name(evil)
        assert "/" not in name and not name.startswith(".") and len(name) < 130
    with pytest.raises(UsageError):
        FetchConfig(concurrency=0)


def test_a_malformed_url_is_invalid_url_and_the_fetch_carries_on(server, tmp_path):
    out = tmp_path / "real"
    items = [("bad", "http://[::1/x.jpg"), ("good", server.base + "/good/g")]
    summary = Fetcher(out, config(concurrency=1)).run(items, progress=False)
    status = load_status(out)
    assert status["bad"]["status"] == "invalid_url" and status["good"]["status"] == "ok"
    assert summary.statuses == Counter({"invalid_url": 1, "ok": 1})


def test_a_failed_write_is_a_status_not_a_hang(server, tmp_path):
    out = tmp_path / "real"
    (out / "a.jpg").mkdir(parents=True)  # the image cannot be stored under its name
    items = [("a", server.base + "/good/a")] + [(f"n{i}", server.base + f"/good/{i}") for i in range(8)]
    result = {}
    t = threading.Thread(target=lambda: result.update(
        s=Fetcher(out, config(concurrency=1)).run(items, progress=False)), daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the fetch hung after a worker failed"
    assert result["s"].statuses == Counter({"ok": 8, "write_error": 1})
    status = load_status(out)
    assert status["a"]["status"] == "write_error" and "a.jpg" in status["a"]["error"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary left
    again = Fetcher(out, config()).run(items, progress=False)  # not a permanent failure: retried
    assert again.statuses == Counter({"write_error": 1}) and again.skipped == 8


def test_a_status_line_cut_short_by_a_kill_does_not_swallow_the_next_run(server, tmp_path):
    out = tmp_path / "real"
    out.mkdir()
    (out / "status.jsonl").write_text('{"id": "killed", "url": "http://x/", "sta')  # a run killed mid-line
    items = [("a", server.base + "/good/a")]
    assert Fetcher(out, config()).run(items, progress=False).statuses == Counter({"ok": 1})
    assert load_status(out)["a"]["status"] == "ok"
    again = Fetcher(out, config()).run(items, progress=False)
    assert again.fetched == 0 and again.skipped == 1 and server.hits["/good/a"] == 1


@pytest.mark.parametrize("option", [["--limit", "-1"], ["--max-pixels", "0"], ["--concurrency", "0"]])
def test_cli_fetch_real_bad_numbers_are_one_line_errors(tmp_path, capsys, option):
    from deepsift.cli import main

    write_shard([make_record(0, 1)], tmp_path / "d3.parquet", n_generators=1)
    assert main(["data", "fetch-real", str(tmp_path / "d3.parquet"), "--out", str(tmp_path / "real"), *option]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option[0].lstrip("-").replace("-", "_") in err[0].replace("-", "_")
    assert not (tmp_path / "real" / "status.jsonl").exists()  # refused before any work


def test_status_lines_survive_a_kill_9_of_fetch_real(tmp_path):
    """Every image on disk has its ``ok`` line even when the process is SIGKILLed; a re-run fetches only the rest."""
    import os
    import signal
    import subprocess
    import sys

    from httpserver import LocalServer

    from deepsift.cli import main

    n_served, concurrency, n_records = 6, 4, 14
    more_held, held = threading.Condition(), [0]

    with LocalServer({}) as srv:
        def held_image():  # answers only once released: the killed run's workers wait here
            with more_held:
                held[0] += 1
                more_held.notify_all()
            srv.release.wait(30)
            return 200, "image/jpeg", GOOD

        for i in range(n_records):
            srv.routes[f"/img/{i}"] = (200, "image/jpeg", GOOD) if i < n_served else held_image
        recs = [make_record(i, 1, url=f"{srv.base}/img/{i}") for i in range(n_records)]
        write_shard(recs, tmp_path / "d3.parquet", n_generators=1)
        out = tmp_path / "real"
        args = ["data", "fetch-real", str(tmp_path / "d3.parquet"), "--out", str(out),
                "--concurrency", str(concurrency), "--per-host", str(concurrency), "--timeout", "60", "--backoff", "0"]
        with open(tmp_path / "stderr.txt", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "deepsift", *args], stdout=subprocess.DEVNULL, stderr=err,
                                    env={**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
        try:
            # wait until every worker sits in a held request: a worker asks for its next image only once its
            # last one is stored and that image's line handed to the status file, so the served images are
            # all on disk by then; then kill -9
            with more_held:
                assert more_held.wait_for(lambda: held[0] == concurrency, 60), \
                    (f"{held[0]} held", proc.poll(), (tmp_path / "stderr.txt").read_text())
            assert len(list(out.glob("*.jpg"))) == n_served
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        on_disk = {p.stem for p in out.glob("*.jpg")}
        assert on_disk == {r.id for r in recs[:n_served]}
        ok = {rid for rid, e in load_status(out).items() if e["status"] == "ok"}
        assert ok == on_disk, f"images on disk without an ok line: {sorted(on_disk - ok)}"

        srv.release.set()
        hits_before = dict(srv.hits)
        assert main(args) == 0
        refetched = {p for p in srv.hits if srv.hits[p] != hits_before.get(p, 0)}
        assert refetched == {f"/img/{i}" for i in range(n_served, n_records)}  # only ids without an image
        status = load_status(out)
        assert all(status[r.id]["status"] == "ok" and (out / f"{r.id}.jpg").read_bytes() == GOOD for r in recs)


def test_the_default_policy_blocks_non_public_addresses_and_sends_nothing(server, tmp_path):
    """A fetcher a server runs for others (the default, strict policy) never reaches loopback; the CLI does (above)."""
    port = server.server_address[1]
    items = [("direct", server.base + "/good/1"), ("named", f"http://localhost:{port}/good/2"),
             ("v6", f"http://[::ffff:127.0.0.1]:{port}/good/3"), ("meta", "http://169.254.169.254/latest/meta-data")]
    out = tmp_path / "real"
    strict = config(url_policy=FetchConfig().url_policy)
    summary = Fetcher(out, strict).run(items, progress=False)
    assert summary.statuses == Counter({"blocked": 4})
    status = load_status(out)
    assert "127.0.0.1" in status["named"]["error"] and "loopback" in status["named"]["error"]
    assert "link-local" in status["meta"]["error"]
    assert server.hits == Counter()  # not one request sent
    again = Fetcher(out, strict).run(items, progress=False)
    assert again.skipped == 4 and again.fetched == 0  # blocked is a permanent failure


def test_a_redirect_to_a_forbidden_address_is_blocked(server, tmp_path):
    one_allowed = FetchPolicy(allow_networks=("127.0.0.1/32",))  # strict checks, 127.0.0.1 standing in for the web
    items = [("ok", server.base + "/redirect"), ("away", server.base + "/redirect-away")]
    summary = Fetcher(tmp_path / "real", config(url_policy=one_allowed)).run(items, progress=False)
    assert summary.statuses == Counter({"ok": 1, "blocked": 1})
    assert "127.0.0.2" in load_status(tmp_path / "real")["away"]["error"]
    assert server.hits["/good/away"] == 0
