"""The demo's detect API: the same answer as `deepsift detect`, every head, heatmap, metadata, OpenAPI, privacy."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from deepsift.server import create_app
from demokit import c2pa_signed_jpeg, demo_settings, fit_demo_heads, jpeg_bytes, png_bytes


@pytest.fixture(scope="module")
def heads_dir(code_model_dir, labelled_folders, tmp_path_factory):
    return fit_demo_heads(code_model_dir, labelled_folders, tmp_path_factory.mktemp("demo-heads"))


@pytest.fixture
def make_client(code_model_dir, heads_dir, tmp_path):
    apps = []

    def make(**demo):
        app = create_app(demo_settings(f"sqlite:///{tmp_path / f'demo{len(apps)}.db'}", tmp_path / f"data{len(apps)}",
                                       code_model_dir, heads_dir, **demo))
        apps.append(app)
        return TestClient(app, base_url="http://127.0.0.1")

    yield make
    for a in apps:
        a.state.db.dispose()


@pytest.fixture
def client(make_client):
    with make_client() as c:
        yield c


CLI_COLUMNS = ("verdict", "label", "probability", "score", "head", "generator", "error")


def test_api_answers_exactly_what_deepsift_detect_answers(client, code_model_dir, heads_dir, labelled_folders, tmp_path):
    files = [labelled_folders["real"] / "000.jpg", labelled_folders["gen_a"] / "001.png",
             labelled_folders["gen_b"] / "002.jpg"]
    (tmp_path / "photo.jpg").write_bytes(jpeg_bytes(5, 640, 480))
    (tmp_path / "large.jpg").write_bytes(jpeg_bytes(6, 1024, 768))  # read by exact region decoding on both sides
    (tmp_path / "large.png").write_bytes(png_bytes(7, 700, 600))  # read down to the window's last row on both sides
    files += [tmp_path / "photo.jpg", tmp_path / "large.jpg", tmp_path / "large.png"]
    out = tmp_path / "cli.jsonl"
    # the demo runs torch; the command's default backend (auto) may pick ONNX Runtime, 1e-5 away
    subprocess.run([sys.executable, "-m", "deepsift", "detect", *map(str, files), "--model", str(code_model_dir),
                    "--heads", str(heads_dir), "--format", "jsonl", "--out", str(out), "--backend", "torch"],
                   check=True, timeout=300)
    cli = [json.loads(line) for line in out.read_text().splitlines()]
    r = client.post("/api/v1/detect", files=[("files", (f.name, f.read_bytes(), "application/octet-stream")) for f in files])
    assert r.status_code == 200, r.text
    api = r.json()["results"]
    assert [a["source"] for a in api] == [f.name for f in files]
    for a, c in zip(api, cli):
        assert {k: a[k] for k in CLI_COLUMNS} == {k: c[k] for k in CLI_COLUMNS}
    assert {c["verdict"] for c in cli} == {"real", "fake"}  # the comparison covered both answers
    assert any(c["generator"] for c in cli)  # and a likely generator
    # alone (a batch of one) the same image differs from its batch-of-four self only by float rounding
    one = client.post("/api/v1/detect", files={"files": ("x.png", files[1].read_bytes())}).json()["results"][0]
    assert {k: one[k] for k in ("verdict", "label", "head", "generator", "error")} == \
        {k: cli[1][k] for k in ("verdict", "label", "head", "generator", "error")}
    assert one["probability"] == pytest.approx(cli[1]["probability"], abs=1e-9)


def test_every_head_generators_band_and_heatmap(client, labelled_folders):
    data = (labelled_folders["gen_a"] / "003.png").read_bytes()
    r = client.post("/api/v1/detect", files={"files": ("fake.png", data)}, data={"heatmap": "true", "preview": "true"})
    res = r.json()["results"][0]
    assert set(res["heads"]) == {"linear", "knn", "svm"}
    assert res["heads"]["linear"]["probability"] == res["probability"]
    assert set(res["generators"]) == {"gen_a", "gen_b"}
    assert res["verdict"] == "fake" and res["generator"] == max(res["generators"], key=res["generators"].get)
    assert res["band"] == ("unsure" if 0.4 <= res["probability"] < 0.6 else res["verdict"])
    hm = res["heatmap"]
    assert (hm["rows"], hm["cols"]) == (2, 2) and (hm["width"], hm["height"]) == (256, 256)  # 256 px: 2 crops a side
    assert all(0.0 <= v <= 1.0 for row in hm["values"] for v in row)
    assert hm["boxes"][-1] == [32, 32, 224, 224]
    assert res["preview"].startswith("data:image/jpeg;base64,")
    plain = client.post("/api/v1/detect", files={"files": ("fake.png", data)}).json()["results"][0]
    assert plain["heatmap"] is None and plain["preview"] is None


def test_unsure_band(make_client, labelled_folders):
    with make_client(unsure_low=0.0, unsure_high=1.0) as c:
        res = c.post("/api/v1/detect", files={"files": ("a.png", (labelled_folders["gen_a"] / "001.png").read_bytes())})
    res = res.json()["results"][0]
    assert res["band"] == "unsure" and res["verdict"] in ("real", "fake")


def test_metadata_signals_shown_apart(client):
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "EOS 5D"
    cam = jpeg_bytes(1, exif=exif.tobytes())
    gen = png_bytes(2, text={"parameters": "a cat in a hat\nSteps: 20, Sampler: Euler a", "prompt": '{"3": {}}',
                             "invokeai_metadata": '{"model": "sdxl"}'})
    r = client.post("/api/v1/detect", files=[("files", ("cam.jpg", cam)), ("files", ("gen.png", gen))]).json()["results"]
    assert r[0]["metadata"]["exif"] == {"Make": "Canon", "Model": "EOS 5D"}
    assert r[0]["metadata"]["generation"] == []
    tools = {g["key"]: g for g in r[1]["metadata"]["generation"]}
    assert set(tools) == {"parameters", "prompt", "invokeai_metadata"}
    assert "AUTOMATIC1111" in tools["parameters"]["tool"] and "Steps: 20" in tools["parameters"]["value"]
    assert "ComfyUI" in tools["prompt"]["tool"] and "InvokeAI" in tools["invokeai_metadata"]["tool"]
    for res in r:
        assert res["metadata"]["c2pa"] == {"present": False, "valid": None, "trusted": None, "state": None,
                                           "signer": None, "claim_generator": None, "declares_ai": None, "error": None}


def test_c2pa_manifest_presence_and_validity(client):
    r = client.post("/api/v1/detect", files=[("files", ("signed.jpg", c2pa_signed_jpeg())),
                                             ("files", ("tampered.jpg", c2pa_signed_jpeg(tamper=True)))])
    signed, tampered = (x["metadata"]["c2pa"] for x in r.json()["results"])
    assert signed["present"] and signed["valid"] and signed["state"] == "Valid"  # signed by an untrusted test CA
    assert signed["trusted"] is False and signed["signer"] == "test signer, deepsift tests"
    assert signed["claim_generator"] == "deepsift-test" and signed["declares_ai"] is True
    assert tampered["present"] and tampered["valid"] is False and tampered["state"] == "Invalid"


def test_openapi_documents_detect_and_its_errors(client):
    spec = client.get("/api/openapi.json").json()
    op = spec["paths"]["/api/v1/detect"]["post"]
    assert {"200", "400", "403", "413", "422", "429", "503"} <= set(op["responses"])
    assert "multipart/form-data" in op["requestBody"]["content"]
    assert {"/api/v1/quiz/rounds", "/api/v1/quiz/rounds/{round_id}/guess", "/api/v1/quiz/stats"} <= set(spec["paths"])


def test_missing_model_is_a_503_and_the_page_still_renders(code_model_dir, heads_dir, tmp_path):
    app = create_app(demo_settings(f"sqlite:///{tmp_path / 'x.db'}", tmp_path / "d", tmp_path / "no-model", heads_dir))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.post("/api/v1/detect", files={"files": ("a.jpg", jpeg_bytes())})
        assert r.status_code == 503 and "detector is not available" in r.json()["detail"]
        assert c.get("/", headers={"accept": "text/html"}).status_code == 200
    app.state.db.dispose()


@pytest.mark.parametrize("keep", [False, True])
def test_uploads_are_not_kept_unless_a_setting_says_so(make_client, keep):
    with make_client(keep_uploads=keep) as c:
        assert c.post("/api/v1/detect", files={"files": ("a.jpg", jpeg_bytes())}).status_code == 200
        root = c.app.state.storage.root
        kept = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    assert len(kept) == (1 if keep else 0)


def test_pages_load_nothing_from_another_origin(client):
    import re

    for path in ("/", "/quiz", "/quiz/results"):
        r = client.get(path, headers={"accept": "text/html"})
        assert r.status_code == 200
        assert "default-src 'self'" in r.headers["content-security-policy"]
        refs = re.findall(r'(?:src|href|action)\s*=\s*["\']([^"\']+)', r.text)
        assert refs and all(u.startswith("/") and not u.startswith("//") for u in refs), refs
        assert "@import" not in r.text and "url(http" not in r.text


def test_one_forward_pass_at_a_time(client):
    det = client.app.state.demo.engine.detector()
    inner, active, peak, lock = det.embed_pixels, [0], [0], threading.Lock()

    def counting(batch):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return inner(batch)
        finally:
            with lock:
                active[0] -= 1

    det.embed_pixels = counting
    codes = []
    threads = [threading.Thread(target=lambda i=i: codes.append(client.post(
        "/api/v1/detect", files={"files": (f"{i}.jpg", jpeg_bytes(i))}, data={"heatmap": "true"}).status_code))
        for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert codes == [200] * 4 and peak[0] == 1


def test_requests_queued_together_share_one_pass_and_keep_their_answers(client):
    eng = client.app.state.demo.engine
    det = eng.detector()
    images = [jpeg_bytes(i, 300 + 40 * i, 260) for i in range(3)]
    solo = [client.post("/api/v1/detect", files={"files": (f"{i}.jpg", d)}).json()["results"][0]
            for i, d in enumerate(images)]
    inner, passes = det.embed_pixels, []
    det.embed_pixels = lambda batch: (passes.append(len(batch)), inner(batch))[1]
    fwd = eng.forward()
    started, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=fwd.call, args=(lambda: (started.set(), release.wait(60)),))
    holder.start()
    assert started.wait(60)
    answers: dict[int, dict] = {}
    threads = [threading.Thread(target=lambda i=i: answers.update({i: client.post(
        "/api/v1/detect", files={"files": (f"{i}.jpg", images[i])}).json()["results"][0]})) for i in range(3)]
    for t in threads:
        t.start()
    assert fwd.wait_queued(3, timeout=60)  # three requests queued behind the held forward thread
    release.set()
    for t in threads + [holder]:
        t.join(120)
    assert passes == [3]  # three clients, one pass
    for i in range(3):
        assert answers[i]["verdict"] == solo[i]["verdict"] and answers[i]["error"] is None
        assert answers[i]["probability"] == pytest.approx(solo[i]["probability"], abs=1e-6)


def test_a_logged_in_browser_needs_the_page_csrf_token(client):
    import re

    form = client.get("/register", headers={"accept": "text/html"}).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    r = client.post("/register", data={"username": "ada", "password": "ada-lovelace-1815", "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code in (302, 303)
    page = client.get("/", headers={"accept": "text/html"}).text
    assert "ada" in page
    meta = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    files = {"files": ("a.jpg", jpeg_bytes())}
    forged = client.post("/api/v1/detect", files=files)
    assert forged.status_code == 403 and "CSRF" in forged.json()["detail"]
    assert client.post("/api/v1/detect", files=files, headers={"X-CSRF-Token": meta}).status_code == 200


def test_deepsift_serve_runs_the_demo(code_model_dir, heads_dir, tmp_path):
    import httpx

    from serverkit import ServeProcess

    env = {"DEEPSIFT_DEMO_MODEL": str(code_model_dir), "DEEPSIFT_DEMO_HEADS": str(heads_dir),
           "DEEPSIFT_DEMO_UNSURE_LOW": "0.3", "DEEPSIFT_DEMO_UNSURE_HIGH": "0.7"}
    with ServeProcess(f"sqlite:///{tmp_path / 'serve.db'}", tmp_path / "data", extra_env=env) as srv:
        assert "Real or AI-generated?" in httpx.get(srv.url + "/", headers={"accept": "text/html"}).text
        r = httpx.post(srv.url + "/api/v1/detect", files={"files": ("a.jpg", jpeg_bytes())}, timeout=120)
        assert r.status_code == 200 and r.json()["unsure_band"] == [0.3, 0.7]
        assert r.json()["results"][0]["verdict"] in ("real", "fake")


def test_schemathesis_finds_no_server_error_in_the_demo(make_client, labelled_folders):
    """A bounded property-based run over the demo's operations, with a model and a quiz set (no 5xx at all)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    with make_client(quiz_dataset=str(labelled_folders["real"].parent)) as c:
        schema = schemathesis.openapi.from_asgi("/api/openapi.json", c.app)
        errors: list[str] = []
        n = 0
        for result in schema.get_all_operations():
            op = result.ok()
            if not op.path.startswith("/api/v1/"):
                continue

            @settings(max_examples=6, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy())
            def run(case) -> None:  # type: ignore[no-untyped-def]
                nonlocal n
                n += 1
                r = case.call()
                if r.status_code >= 500:
                    errors.append(f"{case.method} {case.formatted_path}: {r.status_code} {r.text[:200]}")

            run()
    assert n > 20
    assert not errors, "\n".join(errors[:5])


def test_the_detector_route_names_a_local_model_without_the_servers_path(client, code_model_dir, labelled_folders):
    """Anonymous visitors see the model's name (a hub id, or a local folder's last name), never a server path."""
    info = client.get("/api/v1/detector").json()
    assert info["model"] == code_model_dir.name and str(code_model_dir.parent) not in str(info)
    img = (labelled_folders["real"] / "000.jpg").read_bytes()
    body = client.post("/api/v1/detect", files={"files": ("a.jpg", img, "image/jpeg")}).json()
    assert body["model"] == code_model_dir.name and str(code_model_dir.parent) not in str(body)

    from deepsift.demo.engine import public_model_name

    assert public_model_name("aimagelab/CoDE") == "aimagelab/CoDE"
