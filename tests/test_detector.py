"""The Detector over awkward batches: per-file errors, input order, streaming, URLs, heads."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from badfiles import make_all
from httpserver import LocalServer
from deepsift.model.detector import Detector, Prediction
from deepsift.model.engine import usable_cpus
from deepsift.model.headset import save_headset
from deepsift.model.heads import make_head
from deepsift.urlfetch import USER_POLICY


@pytest.fixture(scope="module")
def heads_dir(code_model_dir, labelled_folders, tmp_path_factory):
    det = Detector.load_backbone_only(str(code_model_dir))
    real = det.embed(sorted(map(str, labelled_folders["real"].iterdir())))
    fake = det.embed(sorted(map(str, labelled_folders["gen_a"].iterdir())))
    X, y = np.r_[real, fake], np.r_[np.zeros(len(real)), np.ones(len(fake))]
    out = tmp_path_factory.mktemp("heads")
    save_headset({k: make_head(k).fit(X, y) for k in ("linear", "knn", "svm")}, out, model=str(code_model_dir))
    return out


@pytest.fixture(scope="module")
def detector(code_model_dir, heads_dir):
    # the image URLs of these tests are served from 127.0.0.1: the explicit setting that allows it
    return Detector.load(str(code_model_dir), heads=heads_dir, batch_size=4, url_timeout=1.0, url_policy=USER_POLICY)


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    return make_all(tmp_path_factory.mktemp("awkward"))


def test_bad_inputs_get_their_own_error_and_the_batch_goes_on(detector, awkward, tmp_path):
    loop = tmp_path / "loop"
    os.symlink(loop, loop)  # a path nothing can read
    good = [awkward[k] for k in ("good", "gray16", "cmyk", "palette", "grey", "anim", "animwebp", "exif",
                                 "plain", "tiff", "small")]
    bad = {awkward["zero"]: "empty file", awkward["truncated"]: "truncated", awkward["notimage"]: "not an image",
           awkward["bomb"]: "exceeds the cap", tmp_path / "missing.jpg": "no such file", loop: "cannot access"}
    order = [str(p) for pair in zip(good, list(bad) + [None] * len(good)) for p in pair if p is not None]
    preds = detector.predict(order)
    assert [p.source for p in preds] == order  # input order, one row each
    for p in preds:
        expected_error = next((w for b, w in bad.items() if str(b) == p.source), None)
        if expected_error:
            assert p.label is None and p.score is None and expected_error in p.error
        else:
            assert p.error is None and p.label in (0, 1) and 0.0 <= p.probability <= 1.0
    alone = {p.source: p for p in detector.predict([str(g) for g in good])}
    for p in preds:
        if p.error is None:  # the bad neighbours changed nothing
            assert p.label == alone[p.source].label
            assert p.score == pytest.approx(alone[p.source].score, abs=1e-6)


def test_predictions_follow_the_heads(detector, labelled_folders):
    real = sorted(map(str, labelled_folders["real"].iterdir()))
    fake = sorted(map(str, labelled_folders["gen_a"].iterdir()))
    preds = detector.predict(real + fake)
    labels = [p.label for p in preds]
    assert labels == [0] * len(real) + [1] * len(fake)  # heads were fit on these
    assert all(p.head == "linear" for p in preds)
    assert min(p.score for p in preds[len(real):]) > max(p.score for p in preds[:len(real)])


@pytest.mark.parametrize("classifier", ["knn", "svm"])
def test_other_classifiers(code_model_dir, heads_dir, labelled_folders, classifier):
    det = Detector.load(str(code_model_dir), heads=heads_dir, classifier=classifier)
    real = sorted(map(str, labelled_folders["real"].iterdir()))
    preds = det.predict(real)
    assert all(p.head == classifier for p in preds)
    assert sum(p.label == 0 for p in preds) >= len(real) * 0.75


def test_pil_images_arrays_and_bytes(detector, awkward):
    from PIL import Image

    path = awkward["good"]
    by_path = detector.predict([str(path)])[0]
    im = Image.open(path)
    for src in (im, np.asarray(im.convert("RGB")), path.read_bytes()):
        p = detector.predict([src])[0]
        assert p.error is None and p.score == pytest.approx(by_path.score, abs=1e-6)


def test_streaming_reads_inputs_lazily(detector, awkward):
    consumed = 0

    def endless():
        nonlocal consumed
        while True:
            consumed += 1
            yield str(awkward["good"])

    it = detector.predict_iter(endless())
    first = [next(it) for _ in range(10)]
    assert all(isinstance(p, Prediction) and p.error is None for p in first)
    # bounded look-ahead, not the whole stream; per-core streams hold one more batch per core beyond two
    streams_extra = max(0, usable_cpus() - 2) * detector.batch_size
    assert consumed < 10 + 3 * detector.batch_size + 16 + streams_extra


def test_urls_ok_html_404_and_timeout(detector, awkward):
    jpeg = awkward["good"].read_bytes()
    with LocalServer({"/a.jpg": (200, "image/jpeg", jpeg),
                      "/page": (200, "text/html", b"<html>nope</html>"),
                      "/moved": (302, "text/plain", b"/a.jpg")}) as srv:
        srv.routes["/slow.jpg"] = srv.slow((200, "image/jpeg", jpeg))
        urls = [f"{srv.base}/a.jpg", f"{srv.base}/page", f"{srv.base}/gone.jpg", f"{srv.base}/slow.jpg",
                f"{srv.base}/moved"]
        preds = detector.predict(urls)
        local = detector.predict([str(awkward["good"])])[0]
    ok, html, gone, slow, moved = preds
    assert ok.error is None and ok.score == pytest.approx(local.score, abs=1e-6)
    assert "text/html" in html.error and "not an image" in html.error
    assert "HTTP 404" in gone.error
    assert "timed out" in slow.error
    assert moved.error is None and moved.score == pytest.approx(local.score, abs=1e-6)


def test_url_size_cap(awkward):
    from deepsift.exceptions import ImageTooLargeError
    from deepsift.sources import fetch_url

    with LocalServer({"/big.jpg": (200, "image/jpeg", b"x" * 5000)}) as srv:
        with pytest.raises(ImageTooLargeError, match="cap of 1000 bytes"):
            fetch_url(f"{srv.base}/big.jpg", max_bytes=1000, policy=USER_POLICY)


def test_unreadable_directory_is_one_error_row(detector, awkward):
    import shutil
    import tempfile

    from deepsift.sources import SourceError, expand_inputs

    tmp_path = Path(tempfile.mkdtemp(prefix="deepsift-perm-"))  # under /tmp, so 'nobody' can reach it
    tmp_path.chmod(0o755)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "x.jpg").write_bytes(awkward["good"].read_bytes())
    locked.chmod(0)
    euid = os.geteuid()
    try:
        if euid == 0:
            os.seteuid(65534)  # root reads everything: drop to 'nobody' to make the folder unreadable
        items = list(expand_inputs([str(tmp_path)]))
    finally:
        if euid == 0:
            os.seteuid(0)
        locked.chmod(0o755)
        shutil.rmtree(tmp_path)
    errors = [i for i in items if isinstance(i, SourceError)]
    assert len(errors) == 1 and "cannot read directory" in errors[0].error and "locked" in errors[0].source
    pred = detector.predict(errors)[0]
    assert pred.error and "cannot read directory" in pred.error


def test_bf16_mostly_agrees(code_model_dir, heads_dir, labelled_folders):
    paths = sorted(map(str, labelled_folders["real"].iterdir())) + sorted(map(str, labelled_folders["gen_a"].iterdir()))
    fp32 = Detector.load(str(code_model_dir), heads=heads_dir).predict(paths)
    bf16 = Detector.load(str(code_model_dir), heads=heads_dir, precision="bf16").predict(paths)
    agree = np.mean([a.label == b.label for a, b in zip(fp32, bf16)])
    assert agree >= 0.9
    assert any(a.score != b.score for a, b in zip(fp32, bf16))  # it really ran in another precision


def test_missing_heads_is_a_clear_error(code_model_dir, tmp_path, monkeypatch):
    from deepsift.exceptions import ModelNotFoundError

    monkeypatch.setenv("DEEPSIFT_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="import-official"):
        Detector.load(str(code_model_dir))


def test_heads_for_another_model_are_refused(code_model_dir, tmp_path):
    from deepsift.exceptions import ModelError

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 16)), np.r_[np.zeros(20), np.ones(20)]
    save_headset({"linear": make_head("linear").fit(X, y)}, tmp_path / "h16")
    with pytest.raises(ModelError, match="expect 16-d embeddings but the model gives 192-d"):
        Detector.load(str(code_model_dir), heads=tmp_path / "h16")
