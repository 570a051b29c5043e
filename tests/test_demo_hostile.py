"""Images a hostile visitor uploads to the demo: they get an answer (or one clear error) at a bounded cost,
and never make the server do anything else on their behalf."""
from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from deepsift.server import create_app
from demokit import demo_settings, fit_demo_heads
from httpserver import LocalServer


@pytest.fixture(scope="module")
def heads_dir(code_model_dir, labelled_folders, tmp_path_factory):
    return fit_demo_heads(code_model_dir, labelled_folders, tmp_path_factory.mktemp("demo-heads"))


@pytest.fixture(scope="module")
def client(code_model_dir, heads_dir, tmp_path_factory):
    """A demo whose URL rules refuse every private address (127.0.0.1 included)."""
    tmp = tmp_path_factory.mktemp("demo-hostile")
    app = create_app(demo_settings(f"sqlite:///{tmp / 'x.db'}", tmp / "data", code_model_dir, heads_dir,
                                   allow_private_urls=False))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c
    app.state.db.dispose()


def _picture() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))


def _xmp(url: str) -> str:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about="" xmlns:dcterms="http://purl.org/dc/terms/" dcterms:provenance="{url}"/>'
            '</rdf:RDF></x:xmpmeta>')


def test_a_remote_c2pa_manifest_named_by_an_upload_is_never_fetched(client):
    """XMP ``dcterms:provenance`` names a remote C2PA manifest: fetching it would let any upload make the server
    request any address (here its own loopback, which the demo's URL rules refuse)."""
    with LocalServer({"/manifest.c2pa": (200, "application/c2pa", b"not a manifest")}) as inside:
        url = inside.base + "/manifest.c2pa"
        jpeg, png = io.BytesIO(), io.BytesIO()
        _picture().save(jpeg, "JPEG", xmp=_xmp(url).encode())
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", _xmp(url))
        _picture().save(png, "PNG", pnginfo=info)
        r = client.post("/api/v1/detect", files=[("files", ("remote.jpg", jpeg.getvalue())),
                                                 ("files", ("remote.png", png.getvalue()))])
        assert r.status_code == 200, r.text
        assert [x["verdict"] for x in r.json()["results"]] != ["error", "error"]
        for result in r.json()["results"]:
            assert result["metadata"]["c2pa"]["valid"] is not True, result["metadata"]
        assert inside.hits == {}, f"the server fetched {inside.hits}"
        r = client.post("/api/v1/detect", data={"url": url})  # the same address as a URL input: refused
        assert r.status_code == 422 and inside.hits == {}, r.text


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def _encoded(fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    _picture().save(buf, fmt, **kw)
    return buf.getvalue()


def _many_segments() -> dict[str, bytes]:
    """Small valid images padded with a few hundred thousand tiny chunks, blocks or markers each."""
    png, jpeg, webp = _encoded("PNG"), _encoded("JPEG"), _encoded("WEBP", lossless=True)
    gif = _encoded("GIF")
    at = 13 + (3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0)  # after the header and global colour table
    body = webp[12:] + b"XTRA\x00\x00\x00\x00" * 200_000
    return {
        "chunks.png": png[:33] + _png_chunk(b"tEXt", b"k\x00v") * 200_000 + png[33:],
        "markers.jpg": jpeg[:2] + b"\xff\xe5\x00\x02" * 300_000 + jpeg[2:],
        "comments.gif": gif[:at] + b"\x21\xfe\x01a\x00" * 300_000 + gif[at:],
        "chunks.webp": b"RIFF" + (len(body) + 4).to_bytes(4, "little") + b"WEBP" + body,
    }


def test_files_of_countless_tiny_segments_are_refused_before_any_parser_walks_them(client):
    """Each of these cost the demo's decoding threads seconds per megabyte (Pillow and the C2PA reader walk
    every segment): refused at once, naming what is wrong; real animations of many frames still pass."""
    for name, data in _many_segments().items():
        r = client.post("/api/v1/detect", files={"files": (name, data)})
        assert r.status_code == 422, (name, r.status_code, r.text[:300])
        detail = r.json()["detail"]
        assert detail.startswith(f"{name}: not a supported image: more than") and "bytes" in detail, detail
    frames = [Image.new("RGB", (8, 8), (i % 256, i // 256, 0)) for i in range(2000)]
    files = []
    for fmt in ("GIF", "PNG", "WEBP"):
        buf = io.BytesIO()
        frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=20, **({"lossless": True} if fmt == "WEBP" else {}))
        files.append(("files", (f"frames.{fmt.lower()}", buf.getvalue())))
    r = client.post("/api/v1/detect", files=files)
    assert r.status_code == 200 and all(x["error"] is None for x in r.json()["results"]), r.text[:500]
