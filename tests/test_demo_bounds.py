"""What one anonymous visitor can cause: no stall, bounded decoding, the demo's own body cap, limits in images."""
from __future__ import annotations

import io
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from deepsift.server import create_app
from demokit import demo_settings, fit_demo_heads, jpeg_bytes
from httpserver import DripServer
from serverkit import LiveServer


@pytest.fixture(scope="module")
def heads_dir(code_model_dir, labelled_folders, tmp_path_factory):
    return fit_demo_heads(code_model_dir, labelled_folders, tmp_path_factory.mktemp("demo-heads"))


@pytest.fixture
def make_app(code_model_dir, heads_dir, tmp_path):
    apps = []

    def make(server: dict | None = None, **demo):
        n = len(apps)
        settings = demo_settings(f"sqlite:///{tmp_path / f'b{n}.db'}", tmp_path / f"data{n}", code_model_dir,
                                 heads_dir, **demo)
        if server:
            settings = settings.model_copy(update=server)
        apps.append(create_app(settings))
        return apps[-1]

    yield make
    for a in apps:
        a.state.db.dispose()


def test_pages_and_health_answer_while_45_dripping_urls_are_fetched(make_app):
    """45 image URLs that send one byte a second hold no thread: '/', /healthz and uploads answer at once."""
    app = make_app(allow_private_urls=False, url_allow_networks=["127.0.0.1/32"], url_timeout=60.0,
                   url_fetches_per_visitor=64)
    with DripServer(interval=1.0) as drip, LiveServer(app) as live:
        codes: list[int] = []

        def post(i: int) -> None:
            r = httpx.post(live.url + "/api/v1/detect", data={"url": f"{drip.base}/{i}.jpg"}, timeout=120)
            codes.append(r.status_code)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(45)]
        for t in threads:
            t.start()
        try:
            assert drip.wait_dripping(45, timeout=60), f"only {drip.dripping} URLs in flight"
            with httpx.Client(base_url=live.url, timeout=30) as c:
                for path, accept in (("/", "text/html"), ("/healthz", "application/json")):
                    t0 = time.perf_counter()
                    r = c.get(path, headers={"accept": accept})
                    took = time.perf_counter() - t0
                    assert r.status_code == 200 and took < 0.5, (path, r.status_code, took)
                r = c.post("/api/v1/detect", files={"files": ("a.jpg", jpeg_bytes(1))})
                assert r.status_code == 200 and r.json()["results"][0]["error"] is None
            assert drip.dripping == 45  # still all in flight while the others were answered
        finally:
            drip.release.set()
            for t in threads:
                t.join(120)
    assert len(codes) == 45 and set(codes) == {422}  # each cut short: a body that ended early


def test_url_fetches_in_flight_are_capped_per_visitor(make_app):
    app = make_app(allow_private_urls=False, url_allow_networks=["127.0.0.1/32"], url_timeout=60.0,
                   url_fetches_per_visitor=2)
    with DripServer(interval=0.5) as drip, LiveServer(app) as live:
        first: dict = {}
        t = threading.Thread(target=lambda: first.update(r=httpx.post(
            live.url + "/api/v1/detect", data={"url": [f"{drip.base}/a.jpg", f"{drip.base}/b.jpg"]}, timeout=120)))
        t.start()
        try:
            assert drip.wait_dripping(2, timeout=60)
            r = httpx.post(live.url + "/api/v1/detect", data={"url": f"{drip.base}/c.jpg"}, timeout=30)
            assert r.status_code == 429 and "at most 2" in r.json()["detail"] and "Retry-After" in r.headers
            assert drip.dripping == 2  # the refused URL was never fetched
            ok = httpx.post(live.url + "/api/v1/detect", files={"files": ("a.jpg", jpeg_bytes(1))}, timeout=60)
            assert ok.status_code == 200  # uploads are not URL fetches
        finally:
            drip.release.set()
            t.join(120)
    assert app.state.demo.bounds.fetching("127.0.0.1") == 0  # the slots were given back


def big_png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h)).save(buf, "PNG")
    return buf.getvalue()


def test_over_the_pixel_budget_a_request_queues_then_gets_a_503(make_app):
    app = make_app(max_megapixels=1.0, busy_wait_s=0.3)
    budget = app.state.demo.bounds.budget
    assert budget.capacity == 2_000_000  # default: twice the largest image
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert budget.try_acquire(budget.capacity)  # all of it taken (as by other requests' decoding)
        try:
            r = c.post("/api/v1/detect", files={"files": ("a.png", big_png(800, 600))}, data={"heatmap": "true"})
        finally:
            budget.release(budget.capacity)
        assert r.status_code == 503 and "busy" in r.json()["detail"] and int(r.headers["Retry-After"]) >= 1
        assert budget.used == 0 and budget.waiting == 0
        # within the wait: it queues and is answered once the budget is free
        app.state.demo.bounds.busy_wait_s = 60
        assert budget.try_acquire(budget.capacity)
        got: dict = {}
        t = threading.Thread(target=lambda: got.update(r=c.post(
            "/api/v1/detect", files={"files": ("a.png", big_png(800, 600))}, data={"heatmap": "true"})))
        t.start()
        try:
            assert budget.wait_for_waiting(1, timeout=60)
        finally:
            budget.release(budget.capacity)
            t.join(120)
        assert got["r"].status_code == 200 and got["r"].json()["results"][0]["heatmap"]["cols"] == 4
        assert budget.used == 0


def test_an_input_that_must_be_decoded_whole_takes_its_whole_pixel_count(make_app):
    """A PNG's window is decoded a strip at a time (little of the budget); a grey PNG is decoded whole (all of it)."""
    app = make_app(max_megapixels=8.0, busy_wait_s=0.3)
    budget = app.state.demo.bounds.budget
    assert budget.capacity == 16_000_000
    buf = io.BytesIO()
    Image.new("L", (3000, 2000), 90).save(buf, "PNG")  # 6 MP, no partial decode for greyscale
    grey, rgb = buf.getvalue(), big_png(3000, 2000)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert budget.try_acquire(11_000_000)  # other requests decode 11 of the 16 MP: 5 MP free
        try:
            partial = c.post("/api/v1/detect", files={"files": ("rgb.png", rgb)})
            whole = c.post("/api/v1/detect", files={"files": ("grey.png", grey)})
        finally:
            budget.release(11_000_000)
        assert partial.status_code == 200 and partial.json()["results"][0]["error"] is None
        assert whole.status_code == 503 and "busy" in whole.json()["detail"]
        assert c.post("/api/v1/detect", files={"files": ("grey.png", grey)}).status_code == 200  # once it is free
    assert budget.used == 0 and budget.waiting == 0


def test_an_upload_is_sniffed_and_decoded_in_one_pool_job_when_its_pixels_are_free(make_app, monkeypatch):
    """No second hop to the pool per input when the budget is free; busy, it still queues for its pixels."""
    from deepsift.demo.bounds import Bounds

    app = make_app(max_megapixels=1.0, busy_wait_s=60)
    bounds, budget = app.state.demo.bounds, app.state.demo.bounds.budget
    jobs: list[str] = []
    real_run = Bounds.run

    async def spy(self, fn, *args):  # type: ignore[no-untyped-def]
        jobs.append(getattr(getattr(fn, "func", fn), "__name__", repr(fn)))
        return await real_run(self, fn, *args)

    monkeypatch.setattr(Bounds, "run", spy)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.get("/api/v1/detector").status_code == 200  # the detector loaded (on the pool) first
        jobs.clear()
        r = c.post("/api/v1/detect", files={"files": ("a.jpg", jpeg_bytes(1))}, data={"metadata": "false"})
        assert r.status_code == 200 and r.json()["results"][0]["error"] is None
        assert jobs == ["_sniff_then_decode"], jobs
        jobs.clear()
        assert budget.try_acquire(budget.capacity)  # all of it taken: the request waits in line for its pixels
        got: dict = {}
        t = threading.Thread(target=lambda: got.update(r=c.post(
            "/api/v1/detect", files={"files": ("a.jpg", jpeg_bytes(1))}, data={"metadata": "false"})))
        t.start()
        try:
            assert budget.wait_for_waiting(1, timeout=60)
            assert jobs == ["_sniff_then_decode"]  # sniffed, found the budget busy, decoded nothing
        finally:
            budget.release(budget.capacity)
            t.join(120)
        assert got["r"].status_code == 200 and got["r"].json()["results"][0]["probability"] == \
            r.json()["results"][0]["probability"]
        assert jobs == ["_sniff_then_decode", "prepare"], jobs
    assert budget.used == 0 and budget.waiting == 0 and bounds._large == 0


def test_pixels_now_holds_only_free_pixels_nobody_waits_for():
    import asyncio

    from deepsift.demo.bounds import LARGE_DECODE_PIXELS, Bounds

    b = Bounds(1, 2 * LARGE_DECODE_PIXELS, busy_wait_s=60, url_fetches_per_visitor=1)
    with b.pixels_now(LARGE_DECODE_PIXELS) as held:
        assert held and b.budget.used == LARGE_DECODE_PIXELS and b._large == 1
        with b.pixels_now(LARGE_DECODE_PIXELS + 1) as more:  # over what is left
            assert not more and b.budget.used == LARGE_DECODE_PIXELS
    assert b.budget.used == 0 and b._large == 0

    async def waiter_in_line() -> None:
        assert b.budget.try_acquire(2 * LARGE_DECODE_PIXELS)
        queued = asyncio.ensure_future(b.budget.acquire(2 * LARGE_DECODE_PIXELS - 5, 60))
        while b.budget.waiting == 0:
            await asyncio.sleep(0)
        b.budget.release(2 * LARGE_DECODE_PIXELS - 10)  # most is free, yet one waits: nobody jumps the line
        with b.pixels_now(5) as jumped:
            assert not jumped and b.budget.used == 10
        b.budget.release(10)  # the rest of the first hold: the one in line gets its pixels
        await queued
        b.budget.release(2 * LARGE_DECODE_PIXELS - 5)

    asyncio.run(waiter_in_line())
    assert b.budget.used == 0 and b.budget.waiting == 0


def test_only_large_decodes_make_the_heap_trimmed(monkeypatch):
    """Small images' buffers are reused by the next request: trimming after them would only make the next
    forward pass fault its memory in again. After large decodes the freed heap goes back."""
    from deepsift.demo import bounds as bounds_mod

    trims: list[bool] = []
    real_trim = bounds_mod.malloc_trim
    monkeypatch.setattr(bounds_mod, "malloc_trim", lambda: trims.append(real_trim()) or True)
    b = bounds_mod.Bounds(1, 4 * bounds_mod.TRIM_AFTER_PIXELS, busy_wait_s=60, url_fetches_per_visitor=1)
    small = bounds_mod.LARGE_DECODE_PIXELS - 1
    for _ in range(2 * bounds_mod.TRIM_AFTER_PIXELS // small + 1):
        with b.pixels_now(small) as held:
            assert held
        b.settle()
    b.pool.submit(int).result()
    assert trims == []
    for _ in range(bounds_mod.TRIM_AFTER_PIXELS // bounds_mod.LARGE_DECODE_PIXELS):
        with b.pixels_now(bounds_mod.LARGE_DECODE_PIXELS) as held:
            assert held
        b.settle()
    b.pool.submit(int).result()  # one worker, in order: every trim asked for has run
    b.close()
    assert len(trims) == 1


def test_concurrent_large_requests_decode_within_the_budget(make_app, monkeypatch):
    """3 requests x 4 images of 1 MP with heatmap and preview: never more than the budget decoded at once."""
    from deepsift.demo import inputs

    app = make_app(max_megapixels=1.0, workers=4)
    inner, live_px, peak, lock = inputs.decode_image, [0], [0], threading.Lock()

    def counting(source, **kw):  # the one whole-image decoder the demo calls
        im = inner(source, **kw)
        n = im.width * im.height
        with lock:
            live_px[0] += n
            peak[0] = max(peak[0], live_px[0])
        return _Tracked(im, lambda: _drop(lock, live_px, n))

    monkeypatch.setattr(inputs, "decode_image", counting)
    data = big_png(1000, 1000)
    codes = []
    with TestClient(app, base_url="http://127.0.0.1") as c:
        def post() -> None:
            r = c.post("/api/v1/detect", files=[("files", (f"{i}.png", data)) for i in range(4)],
                       data={"heatmap": "true", "preview": "true"})
            codes.append((r.status_code, all(x["preview"] and x["heatmap"] for x in r.json()["results"])))

        threads = [threading.Thread(target=post) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    assert codes == [(200, True)] * 3
    assert 1_000_000 <= peak[0] <= app.state.demo.bounds.budget.capacity, peak[0]


def _drop(lock, live_px, n) -> None:  # type: ignore[no-untyped-def]
    with lock:
        live_px[0] -= n


class _Tracked:
    """A decoded image that reports when it is garbage (the demo keeps no whole image afterwards)."""

    def __new__(cls, im, on_free):  # type: ignore[no-untyped-def]
        import weakref

        weakref.finalize(im, on_free)
        return im


def test_a_jpeg_preview_comes_from_a_reduced_decode(make_app, monkeypatch):
    from deepsift.demo import inputs, reduced

    app = make_app()
    sizes = []
    inner = inputs.decode_image

    def loaded(src, **kw):  # type: ignore[no-untyped-def]
        im = inner(src, **kw)
        im.load()
        sizes.append(im.size)
        return im

    for module in (inputs, reduced):  # the whole-image decoder and the reduced one
        monkeypatch.setattr(module, "decode_image", loaded)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.post("/api/v1/detect", files={"files": ("big.jpg", jpeg_bytes(4, 3000, 2000))}, data={"preview": "true"})
    res = r.json()["results"][0]
    assert r.status_code == 200 and res["preview"].startswith("data:image/jpeg") and res["error"] is None
    assert sizes and max(w * h for w, h in sizes) <= 1500 * 1000, sizes  # never the whole 6 MP image


# -- the demo's own body cap, read in memory after the limits --------------------------------------
def raw_post(url: str, headers: dict[str, str], body: bytes, timeout: float = 20.0) -> tuple[int, bytes]:
    """Send headers and only ``body`` (perhaps less than Content-Length says); the status of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        try:
            s.sendall(f"POST /api/v1/detect HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode() + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking the whole body: read its answer
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def _length(response: bytes) -> int:
    head = response.split(b"\r\n\r\n", 1)[0].lower()
    return next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length:")), 0)


def test_the_demo_has_its_own_body_cap_checked_before_reading(make_app):
    app = make_app(max_images=2, max_image_mb=1.0)  # 2 x 1 MiB + 1 MiB of form
    with LiveServer(app) as live:
        # a declared body over the cap: refused without reading it (only the headers are sent)
        status, data = raw_post(live.url, {"Content-Type": "multipart/form-data; boundary=x",
                                           "Content-Length": str(4 << 20)}, b"")
        assert status == 413 and b"3 MiB limit" in data
        # a chunked body (no Content-Length) is counted as it streams in and cut off at the cap
        part = b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
        piece = b"%x\r\n" % (256 << 10) + b"\0" * (256 << 10) + b"\r\n"
        status, data = raw_post(live.url, {"Content-Type": "multipart/form-data; boundary=x",
                                           "Transfer-Encoding": "chunked"},
                                b"%x\r\n" % len(part) + part + b"\r\n" + piece * 20)
        assert status == 413
        ok = httpx.post(live.url + "/api/v1/detect", files={"files": ("a.jpg", jpeg_bytes(1))}, timeout=60)
        assert ok.status_code == 200
    assert app.state.settings.max_upload_bytes > 3 << 20  # the platform's own cap is larger


def test_rate_limits_answer_before_the_body_is_read(make_app):
    app = make_app(detect_rate="2/minute")
    with LiveServer(app) as live:
        ok = httpx.post(live.url + "/api/v1/detect", files=[("files", (f"{i}.jpg", jpeg_bytes(i))) for i in range(2)],
                        timeout=60)
        assert ok.status_code == 200
        # 10 MiB announced, nothing sent: the 429 comes at once (the body is never waited for)
        status, data = raw_post(live.url, {"Content-Type": "multipart/form-data; boundary=x",
                                           "Content-Length": str(10 << 20)}, b"--x\r\n")
        assert status == 429 and b"retry-after" in data.lower()


def test_uploads_stay_in_memory(make_app):
    """A 3 MiB upload is parsed without a temporary file (Starlette would spool anything over 1 MiB)."""
    import asyncio

    from starlette.requests import Request

    from deepsift.demo.upload import read_form

    payload = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    body = (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + payload + b"\r\n--b--\r\n")
    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]

    async def receive():  # type: ignore[no-untyped-def]
        piece = chunks.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/api/v1/detect",
             "headers": [(b"content-type", b"multipart/form-data; boundary=b")]}
    form = asyncio.run(read_form(Request(scope, receive), max_files=8, max_bytes=8 << 20))
    upload = form.getlist("files")[0]
    assert upload.file.read() == payload and upload.file._rolled is False  # noqa: SLF001 - the point of the test


# -- limits that fit the cost ----------------------------------------------------------------------
def test_detect_is_limited_in_images_not_requests(make_app):
    app = make_app(detect_rate="5/minute")
    with TestClient(app, base_url="http://127.0.0.1") as c:
        def post(n: int) -> httpx.Response:
            return c.post("/api/v1/detect", files=[("files", (f"{i}.jpg", jpeg_bytes(i))) for i in range(n)])

        assert post(3).status_code == 200
        over = post(3)  # 3 more would make 6 images in the minute
        assert over.status_code == 429 and "images analysed" in over.json()["detail"]
        assert int(over.headers["Retry-After"]) >= 1
        assert post(1).status_code == 200  # the refused request counted one image (before its body), not three
        assert post(1).status_code == 429


def test_the_default_image_limit_is_sized_from_the_machine(make_app):
    from deepsift.demo.bounds import default_workers

    app = make_app()
    assert app.state.demo.settings.image_rate == f"{30 * default_workers(cap=64)}/minute"


@pytest.mark.parametrize("hops,header,expected", [
    (1, "198.51.100.7", "198.51.100.7"),
    (1, "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # the client wrote 6.6.6.6; the proxy appended the rest
    (2, "6.6.6.6, 198.51.100.7, 10.0.0.2", "198.51.100.7"),  # two proxies
    (2, "198.51.100.7", "198.51.100.7"),
])
def test_client_address_is_the_one_the_trusted_proxy_appended(hops, header, expected):
    from starlette.requests import Request

    from deepsift.server import Settings
    from deepsift.server.security import client_address

    settings = Settings(trusted_proxy=True, trusted_proxy_hops=hops, secret_key="x")
    req = Request({"type": "http", "headers": [(b"x-forwarded-for", header.encode())], "client": ("127.0.0.1", 1)})
    assert client_address(req, settings) == expected
    assert client_address(req, Settings(secret_key="x")) == "127.0.0.1"  # no proxy trusted: the peer


def test_spoofed_forwarded_for_does_not_escape_the_limit(make_app):
    app = make_app(server={"trusted_proxy": True, "api_rate": "60/minute"})
    with TestClient(app, base_url="http://127.0.0.1", client=("127.0.0.1", 50000)) as c:  # through a local proxy
        codes = [c.get("/api/v1/quiz/stats", headers={"X-Forwarded-For": f"10.{i // 256}.{i % 256}.1, 203.0.113.7"})
                 .status_code for i in range(100)]
        assert codes.count(200) == 60 and codes[60:] == [429] * 40
        other = c.get("/api/v1/quiz/stats", headers={"X-Forwarded-For": "203.0.113.8"})
        assert other.status_code == 200  # another client behind the same proxy has its own count


def test_forwarded_for_is_read_only_on_connections_from_the_configured_proxy(make_app):
    app = make_app(server={"trusted_proxy": True, "trusted_proxy_ips": "10.0.0.0/24, 192.0.2.1",
                           "api_rate": "5/minute"})

    def codes(peer: str, n: int, hop: str = "198.51.100.{i}") -> list[int]:
        with TestClient(app, base_url="http://127.0.0.1", client=(peer, 40000)) as c:
            return [c.get("/api/v1/quiz/stats", headers={"X-Forwarded-For": f"6.6.6.6, {hop.format(i=i)}"}).status_code
                    for i in range(n)]

    # a client talking to the server directly cannot pose as many others: its own address counts
    assert codes("203.0.113.50", 8) == [200] * 5 + [429] * 3
    assert codes("127.0.0.1", 6) == [200] * 5 + [429]  # loopback is not the configured proxy here
    # through the proxy (an address of its network, or the single address) every client has its own count
    assert codes("10.0.0.7", 8) == [200] * 8
    assert codes("192.0.2.1", 6, hop="198.51.100.200") == [200] * 5 + [429]  # one client: its own limit


def test_forwarded_proto_is_read_only_from_the_configured_proxy():
    from starlette.requests import Request

    from deepsift.server import Settings
    from deepsift.server.security import client_address, cookie_secure

    settings = Settings(trusted_proxy=True, trusted_proxy_ips="10.1.0.0/16", secret_key="x")

    def req(peer: str) -> Request:
        return Request({"type": "http", "scheme": "http", "server": ("example.org", 80), "path": "/",
                        "headers": [(b"x-forwarded-proto", b"https"), (b"x-forwarded-for", b"198.51.100.7"),
                                    (b"host", b"example.org")], "client": (peer, 1)})

    assert cookie_secure(req("10.1.2.3"), settings) and client_address(req("10.1.2.3"), settings) == "198.51.100.7"
    assert not cookie_secure(req("10.2.0.1"), settings) and client_address(req("10.2.0.1"), settings) == "10.2.0.1"
    anyone = Settings(trusted_proxy=True, trusted_proxy_ips="*", secret_key="x")
    assert client_address(req("10.2.0.1"), anyone) == "198.51.100.7"
    with pytest.raises(ValueError, match="not an IP address"):
        Settings(trusted_proxy=True, trusted_proxy_ips="10.0.0.1, proxy.local", secret_key="x")


# -- privacy -----------------------------------------------------------------------------------------
def test_shared_rate_limit_file_keeps_no_address_and_forgets_on_time(tmp_path):
    import os
    import sqlite3
    import stat

    from deepsift.server.security import SWEEP_EVERY_S, SharedRateLimiter

    path = tmp_path / "ratelimits.sqlite"
    rl = SharedRateLimiter(path, b"data-dir secret")
    assert rl.hit("api", "ip:203.0.113.9", 5, 60.0, now=1000.0) == 0
    assert rl.hit("api", "ip:203.0.113.9", 5, 60.0, now=1001.0, cost=4) == 0
    assert rl.hit("api", "ip:203.0.113.9", 5, 60.0, now=1002.0) == pytest.approx(58.0)  # the 5 are counted
    with sqlite3.connect(path) as db:
        keys = {k for (k,) in db.execute("SELECT DISTINCT key FROM hits")}
    assert len(keys) == 1 and not any("203.0.113" in k for k in keys)
    assert SharedRateLimiter(path, b"another secret")._key("api", "ip:203.0.113.9") not in keys  # noqa: SLF001
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            assert stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode) == 0o600, suffix
    # another visitor's hit after the window (and a sweep period) removes the first visitor's rows
    assert rl.hit("api", "ip:198.51.100.1", 5, 60.0, now=1061.0 + SWEEP_EVERY_S) == 0
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM hits").fetchone()[0] == 1


def test_the_access_log_never_pairs_an_address_with_a_round_id(code_model_dir, heads_dir, labelled_folders, tmp_path):
    from serverkit import ServeProcess

    env = {"DEEPSIFT_DEMO_MODEL": str(code_model_dir), "DEEPSIFT_DEMO_HEADS": str(heads_dir),
           "DEEPSIFT_DEMO_QUIZ_DATASET": str(labelled_folders["real"].parent), "DEEPSIFT_DOMAINS": "demo"}
    with ServeProcess(f"sqlite:///{tmp_path / 'q.db'}", tmp_path / "data", extra_env=env,
                      args=("--log-level", "info")) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        r = c.post("/api/v1/quiz/rounds")
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        assert c.get(r.json()["image_url"]).status_code == 200
        assert c.post(f"/api/v1/quiz/rounds/{rid}/guess", json={"guess": "fake"}).status_code == 200
    log = srv.log()  # once stopped: the log is whole (the last request's line was written after its response)
    assert "/api/v1/quiz/rounds/<id>/guess" in log and "127.0.0.1" in log  # the requests are logged ...
    assert rid not in log  # ... without the round's id
