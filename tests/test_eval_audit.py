"""Confound audit: a planted confound (all fakes PNG, all reals JPEG) warns; a balanced set does not."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, PngImagePlugin

from deepsift.cli import main
from deepsift.evaluate.audit import audit
from deepsift.evaluate.datasets import load_eval_set
from deepsift.evaluate.headers import jpeg_quality, read_header


def _pixels(i: int, size: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(i)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize(size, Image.BICUBIC))


def _save(path: Path, arr: np.ndarray, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if fmt == "jpg":
        im.save(path, quality=90)
    else:
        im.save(path)


def make_set(root: Path, planted: bool, n: int = 24, small_gen: bool = False) -> Path:
    """real/ + gen_a/ + gen_b/: planted (reals JPEG, fakes PNG) or balanced (the same files in both classes)."""
    sizes = [(256, 256), (320, 240), (512, 384)]
    for i in range(n):
        arr = _pixels(i, sizes[i % 3])
        _save(root / "real" / f"{i:03d}.{'jpg' if planted or i % 2 else 'png'}", arr, "jpg" if planted or i % 2 else "png")
        for g in ("gen_a", "gen_b"):
            fmt = "png" if planted else ("jpg" if i % 2 else "png")
            garr = _pixels(i, (128, 128)) if small_gen and g == "gen_b" else arr
            _save(root / g / f"{i:03d}.{fmt}", garr, fmt)
    return root


def test_planted_format_confound_warns(tmp_path: Path) -> None:
    data = load_eval_set(make_set(tmp_path / "planted", planted=True))
    res = audit(data.samples)
    assert res.features["format"]["auroc"] == pytest.approx(1.0)
    assert res.features["format"]["real"]["counts"] == {"JPEG": 24}
    assert res.features["format"]["fake"]["counts"] == {"PNG": 48}
    assert res.features["subsampling"]["auroc"] == pytest.approx(1.0)  # PNG has none: the same confound
    assert any(w.startswith("file format alone tells real from fake: AUROC 1.00") for w in res.warnings)
    assert res.features["jpeg_quality"]["auroc"] is None  # only the reals are JPEG: not defined, not a crash


def test_balanced_set_gives_no_warning(tmp_path: Path) -> None:
    data = load_eval_set(make_set(tmp_path / "balanced", planted=False))
    res = audit(data.samples)
    assert res.warnings == []
    assert all(f["auroc"] is None or f["auroc"] <= 0.6 for f in res.features.values())


def test_one_generator_below_the_crop_is_named(tmp_path: Path) -> None:
    data = load_eval_set(make_set(tmp_path / "small", planted=False, small_gen=True))
    res = audit(data.samples)
    assert res.features["padded"]["per_generator"]["gen_b"]["auroc"] == pytest.approx(1.0)
    assert res.features["padded"]["per_generator"]["gen_a"]["auroc"] == pytest.approx(0.5)
    assert any("smaller than the 224-px crop" in w and "gen_b" in w and "n=24 ⚠" in w for w in res.warnings)


def test_headers_only_never_decode_pixels(tmp_path: Path, monkeypatch) -> None:
    im = Image.fromarray(_pixels(0, (300, 200)))
    exif = Image.Exif()
    exif[0x0110] = "X100"
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=75, subsampling=2, exif=exif)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a prompt")
    png = io.BytesIO()
    im.save(png, "PNG", pnginfo=info)

    def no_decode(self, *a, **k):  # the real decode path; the audit must never reach it
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decode)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    monkeypatch.setattr(Image.Image, "tobytes", no_decode)
    j = read_header(buf.getvalue())
    assert (j.format, j.width, j.height, j.jpeg_quality, j.subsampling, j.exif) == ("JPEG", 300, 200, 75.0, "4:2:0", True)
    p = read_header(png.getvalue())
    assert (p.format, p.text, p.exif, p.jpeg_quality) == ("PNG", True, False, None)
    assert read_header(b"not an image").format == "unreadable"


@pytest.mark.parametrize("q", [30, 50, 75, 90, 95, 100])
def test_jpeg_quality_estimate_matches_the_encoder(q: int) -> None:
    buf = io.BytesIO()
    Image.fromarray(_pixels(1, (64, 64))).save(buf, "JPEG", quality=q)
    est = jpeg_quality(Image.open(io.BytesIO(buf.getvalue())).quantization)
    assert abs(est - q) <= 1


def test_cli_audit_prints_warnings_and_writes_a_report(tmp_path: Path, capsys) -> None:
    root = make_set(tmp_path / "planted", planted=True, n=6)
    (root / "real" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    rep = tmp_path / "rep"
    assert main(["eval", "audit", str(root), "--report", str(rep)]) == 3  # one unreadable header: partial
    out = capsys.readouterr().out
    assert "WARNING: file format alone tells real from fake" in out and "format: AUROC alone 1.00" in out
    data = json.loads((rep / "metrics.json").read_text())
    assert data["audit"]["unreadable"] == 1 and data["audit"]["features"]["format"]["auroc"] == 1.0
    assert "Confound audit" in (rep / "report.html").read_text()
    assert main(["eval", "audit", str(root), "--warn-above", "0.2"]) == 2  # range-checked at parsing
