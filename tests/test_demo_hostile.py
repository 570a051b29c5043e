"""Images a hostile visitor uploads to the demo: they get an answer (or one clear error) at a bounded cost,
and never make the server do anything else on their behalf."""
from __future__ import annotations

import io

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
