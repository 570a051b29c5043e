"""Bad input for the demo's API: each case gets one clear message, and the server keeps answering others."""
from __future__ import annotations

import io
import threading

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from badfiles import png_with_size
from deepsift.server import create_app
from demokit import demo_settings, fit_demo_heads, jpeg_bytes
from httpserver import LocalServer
from serverkit import LiveServer


@pytest.fixture(scope="module")
def heads_dir(code_model_dir, labelled_folders, tmp_path_factory):
    return fit_demo_heads(code_model_dir, labelled_folders, tmp_path_factory.mktemp("demo-heads"))


@pytest.fixture(scope="module")
def images():
    good = jpeg_bytes(1)
    large = jpeg_bytes(2, 1000, 960)  # large enough for region decoding, under the 1 MP cap
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1100, 1000, 3), dtype=np.uint8)).save(big, "PNG")
    return {"good": good, "big_file": big.getvalue(), "truncated": good[: len(good) // 2],
            "truncated_large": large[: len(large) * 2 // 3],
            "bomb": png_with_size(40000, 40000)}


@pytest.fixture(scope="module")
def site(code_model_dir, heads_dir, tmp_path_factory):
    """A demo with strict URL rules except 127.0.0.1 itself, 1 MiB / 1 MP caps and a fixed DNS answer."""
    tmp = tmp_path_factory.mktemp("demo-inputs")
    app = create_app(demo_settings(f"sqlite:///{tmp / 'x.db'}", tmp / "data", code_model_dir, heads_dir,
                                   allow_private_urls=False, url_allow_networks=["127.0.0.1/32"], url_timeout=1.5,
                                   max_image_mb=1.0, max_megapixels=1.0,
                                   url_hosts={"images.evil.test": ["10.20.30.40"], "ok.test": ["127.0.0.1"]}))
    with LiveServer(app) as live:
        yield app, live
    app.state.db.dispose()


@pytest.fixture
def client(site):
    with TestClient(site[0], base_url="http://127.0.0.1") as c:
        yield c


def post_file(client, name, data):
    return client.post("/api/v1/detect", files={"files": (name, data, "image/png")})


@pytest.mark.parametrize("name,key,status,message", [
    ("notes.txt", None, 422, "not a supported image"),
    ("corrupt.jpg", "truncated", 422, "corrupt or truncated"),
    ("cut.jpg", "truncated_large", 422, "corrupt or truncated"),
    ("huge.png", "big_file", 422, "larger than the 1 MiB limit"),
    ("bomb.png", "bomb", 422, "decompression bomb"),
    ("drawing.png", "svg", 422, "SVG/HTML/XML document"),
    ("page.png", "html", 422, "SVG/HTML/XML document"),
    ("empty.png", "empty", 422, "empty file"),
])
def test_bad_uploads_get_one_clear_message(client, images, name, key, status, message):
    inline = {None: b"just some text, not a picture\n", "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
              "html": b"<!DOCTYPE html><html><body>hi</body></html>", "empty": b""}
    data = inline[key] if key in inline else images[key]
    r = post_file(client, name, data)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail.startswith(name) and message in detail and "\n" not in detail
    assert r.json()["results"][0]["verdict"] == "error"


def test_pixel_cap_is_checked_before_decoding(client):
    data = png_with_size(1200, 1000)  # 1.2 MP claimed in a tiny file
    r = post_file(client, "wide.png", data)
    assert r.status_code == 422 and "1.2 MP exceeds the cap of 1 MP" in r.json()["detail"]


def test_a_bad_image_beside_good_ones_loses_nothing(client, images):
    r = client.post("/api/v1/detect", files=[("files", ("a.jpg", images["good"])), ("files", ("b.png", b"nope")),
                                             ("files", ("c.jpg", images["good"]))])
    assert r.status_code == 200
    res = r.json()["results"]
    assert [x["verdict"] == "error" for x in res] == [False, True, False]
    assert res[0]["probability"] == res[2]["probability"]


def test_request_level_errors(client, images):
    assert "at least one image" in client.post("/api/v1/detect", data={"heatmap": "true"}).json()["detail"]
    r = client.post("/api/v1/detect", files=[("files", (f"{i}.jpg", images["good"])) for i in range(9)])
    assert r.status_code == 422 and "at most 8 images" in r.json()["detail"]


@pytest.fixture(scope="module")
def web(images):
    routes = {"/good.jpg": (200, "image/jpeg", images["good"]),
              "/page": (200, "text/html", b"<html>no</html>"),
              "/huge.jpg": (200, "image/jpeg", b"\xff\xd8" + b"\0" * (3 << 20))}
    with LocalServer(routes) as srv:
        port = srv.httpd.server_address[1]
        srv.routes["/to-private"] = (302, "text/plain", f"http://127.0.0.2:{port}/good.jpg".encode())
        srv.routes["/to-link-local"] = (302, "text/plain", b"http://169.254.169.254/latest/meta-data")
        srv.routes["/slow.jpg"] = srv.slow((200, "image/jpeg", images["good"]))
        yield srv


@pytest.mark.parametrize("path,message", [
    ("http://10.0.0.1/x.jpg", "10.0.0.1 is a private address"),
    ("http://[::1]/x.jpg", "is a loopback address"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("{base}/to-private", "127.0.0.2"),
    ("{base}/to-link-local", "169.254.169.254"),
    ("http://images.evil.test:{port}/x.jpg", "10.20.30.40"),
    ("{base}/slow.jpg", "timed out after 1.5 s"),
    ("{base}/huge.jpg", "exceeds the cap of 1048576 bytes"),
    ("{base}/page", "returned text/html, not an image"),
    ("file:///etc/passwd", "only http(s) URLs"),
])
def test_bad_urls_get_one_clear_message(client, web, path, message):
    url = path.format(base=web.base, port=web.httpd.server_address[1])
    r = client.post("/api/v1/detect", data={"url": url})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert message in detail and "\n" not in detail, detail


def test_a_good_url_through_the_same_rules(client, web):
    r = client.post("/api/v1/detect", data={"url": [f"{web.base}/good.jpg", f"http://ok.test:{web.httpd.server_address[1]}/good.jpg"]})
    assert r.status_code == 200, r.text
    assert [x["verdict"] in ("real", "fake") for x in r.json()["results"]] == [True, True]


def test_the_server_keeps_answering_while_a_url_hangs(site, web, images):
    _, live = site
    web.release.clear()
    slow = {}

    def hang() -> None:
        slow["r"] = httpx.post(live.url + "/api/v1/detect", data={"url": f"{web.base}/slow.jpg"}, timeout=60)

    t = threading.Thread(target=hang)
    t.start()
    try:
        with httpx.Client(base_url=live.url, timeout=60) as c:
            for i in range(3):  # while the fetch hangs, other clients are answered
                assert c.get("/healthz").json()["status"] == "ok"
                r = c.post("/api/v1/detect", files={"files": (f"{i}.jpg", images["good"])})
                assert r.status_code == 200 and r.json()["results"][0]["error"] is None
                assert c.post("/api/v1/detect", files={"files": ("x.png", b"<svg/>")}).status_code == 422
    finally:
        t.join(60)
    assert slow["r"].status_code == 422 and "timed out" in slow["r"].json()["detail"]
