"""Confound audit: a planted confound (all fakes PNG, all reals JPEG) warns; a balanced set does not."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, PngImagePlugin

from deepsift.cli import main
from deepsift.evaluate.audit import audit
from deepsift.evaluate.datasets import load_eval_set
from deepsift.evaluate.headers import jpeg_quality, read_header

sys.path.insert(0, str(Path(__file__).parent))
from evalkit import header, header_rows  # noqa: E402


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
    # the pooled 0.75 (24 reals, 48 fakes) has a 0.23-wide interval: ⚠ by the shared rule; gen_b's 24 images
    # against 24 reals, perfectly apart, are a reliable 1.00 (no mark on the count)
    assert any(w.startswith("smaller than the 224-px crop (zero-padded) alone tells real from fake: AUROC 0.75 ⚠ (")
               and "higher still for gen_b 1.00 (n=24)" in w for w in res.warnings)


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


def _numeric_set(root: Path, fakes_smaller: bool) -> Path:
    """Reals and fakes in one format; the fakes' shorter side is smaller (or larger) than the reals'."""
    for i in range(20):
        big, small = (400 + 10 * i, 400 + 10 * i), (240 + 5 * i, 240 + 5 * i)
        _save(root / "real" / f"{i:03d}.png", _pixels(i, small if not fakes_smaller else big), "png")
        _save(root / "gen_a" / f"{i:03d}.png", _pixels(100 + i, big if not fakes_smaller else small), "png")
    return root


@pytest.mark.parametrize("fakes_smaller", [True, False])
def test_audit_auroc_is_oriented_and_its_direction_words_match_the_data(tmp_path: Path, fakes_smaller: bool) -> None:
    res = audit(load_eval_set(_numeric_set(tmp_path / "set", fakes_smaller)).samples)
    f = res.features["min_side"]
    assert f["auroc"] == pytest.approx(1.0)  # oriented: a 'lower means fake' feature reads 1.0, not 0.0
    real_median, fake_median = f["real"]["median"], f["fake"]["median"]
    assert (fake_median < real_median) == fakes_smaller
    assert f["direction"] == ("lower: fake" if fakes_smaller else "higher: fake")
    assert f["contrast"] == (f"fakes {'lower' if fakes_smaller else 'higher'}: median {fake_median:.3g} vs "
                             f"{real_median:.3g} for reals")
    # a categorical feature names the value whose share differs most, and which class has more of it
    from deepsift.evaluate.audit import separability

    a, d = separability(np.array([0] * 10 + [1] * 10), np.array(["JPEG"] * 4 + ["PNG"] * 6 + ["PNG"] * 9 + ["WEBP"]),
                        "category")
    assert a > 0.5 and d == "JPEG: real"


def test_audit_ranks_merges_the_jpeg_cue_and_states_the_contrast(tmp_path: Path, capsys) -> None:
    """Reals 60 % JPEG / 40 % PNG, fakes all PNG (one WEBP): one 'JPEG' finding (format, subsampling, quality merged),
    headlined by the contrast, not by the rarest fake-only value."""
    root = tmp_path / "set"
    for i in range(30):
        arr = _pixels(i, (256, 256))
        _save(root / "real" / f"{i:03d}.{'jpg' if i < 18 else 'png'}", arr, "jpg" if i < 18 else "png")
        _save(root / "gen_a" / f"{i:03d}.png", _pixels(200 + i, (256, 256)), "png")
    Image.fromarray(_pixels(999, (256, 256))).save(root / "gen_a" / "odd.webp")
    res = audit(load_eval_set(root).samples)
    assert res.findings and res.findings[0]["feature"] == "format"
    assert "chroma subsampling" in res.findings[0]["same_cue"]
    assert not any(f["feature"] == "subsampling" for f in res.findings)  # merged, not a second warning
    assert res.features["subsampling"]["auroc"] > 0.7  # it would warn on its own
    assert res.headline.startswith("reals are 60% JPEG, fakes 0% (fakes are 97% PNG)")
    assert "WEBP: fake" not in res.headline and res.features["format"]["direction"] == "JPEG: real"
    weights = [2 * (f["auroc"] - 0.5) * f["n"] / res.n for f in res.findings]
    assert weights == sorted(weights, reverse=True)
    assert main(["eval", "audit", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"finding: {res.headline}" and out[1].startswith("WARNING: file format alone")


def test_each_detector_is_tied_to_the_flagged_feature(tmp_path: Path, capsys) -> None:
    """A detector that reads the format is 'explained by file format'; one that reads the pictures is not."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from eval_toys import FormatReader, SeededScorer

    from deepsift.evaluate.detectors import register_detector_loader

    register_detector_loader("format", lambda arg: FormatReader())
    register_detector_loader("seeded", lambda arg: SeededScorer(2.0))  # separates by the picture's folder
    root = tmp_path / "set"
    for i in range(30):
        _save(root / "real" / f"{i:03d}.{'jpg' if i % 2 else 'png'}", _pixels(i, (256, 256)), "jpg" if i % 2 else "png")
        _save(root / "gen_a" / f"{i:03d}.png", _pixels(300 + i, (256, 256)), "png")
    rep = tmp_path / "rep"
    assert main(["eval", "generators", str(root), "--detector", "fmt=format:x", "--detector", "pics=seeded:x",
                 "--report", str(rep)]) == 0
    out = capsys.readouterr().out
    rows = {(r["detector"], r["feature"]): r for r in json.loads((rep / "metrics.json").read_text())["audit_explain"]}
    fmt, pics = rows[("fmt", "format")], rows[("pics", "format")]
    assert fmt["auroc"] == pytest.approx(0.75) and fmt["within"] == pytest.approx(0.5) and fmt["explained"]
    assert pics["within"] > 0.9 and not pics["explained"] and pics["verdict"] == "holds within each file format stratum"
    assert "fmt: AUROC 0.750 overall, 0.500 within file format strata: this detector's result is explained by " \
           "file format" in out
    assert not [line for line in out.splitlines() if line.startswith("pics: AUROC") and "explained by" in line]


@pytest.mark.parametrize("n, marked", [(10, True), (20, False)])
def test_audit_marks_a_generator_auroc_by_the_shared_reliability_rule_not_by_its_count(n: int, marked: bool) -> None:
    """gen_b (of three generators) alone is smaller than the crop: AUROC 1.00 against n reals. The shared rule's
    floor (a perfect score's Wilson width, 3.84 / (n + 3.84)) exceeds 0.2 below 16 images: 10 is marked, 20 is not
    (the old n < 30 marked both)."""
    rows = [(g, None, header(w=128 if g == "gen_b" else 256)) for g in ("real", "gen_a", "gen_b", "gen_c")
            for _ in range(n)]
    res = audit(*header_rows(rows))
    assert res.features["padded"]["auroc"] < 0.7  # pooled, one generator in three: no pooled warning
    pg = res.features["padded"]["per_generator"]["gen_b"]
    assert pg["auroc"] == pytest.approx(1.0) and pg["n"] == n
    assert (pg["unreliable"] is not None) == marked
    [w] = [w for w in res.warnings if w.startswith("smaller than the 224-px crop")]
    mark = " ⚠" if marked else ""
    assert w.startswith(f"smaller than the 224-px crop (zero-padded) alone tells real from gen_b: AUROC 1.00{mark} (")
    assert w.count("⚠") == marked and f"; n={n})" in w


def test_audit_marks_a_wide_interval_on_a_large_set_and_groups_too_few_to_trust() -> None:
    """80 images, AUROC 0.75: its Hanley-McNeil interval is 0.21 wide, over 0.2: marked although n >= 30;
    the same set 5 times larger is not; 200 images in 5 groups per class are marked for their groups."""
    def rows(k: int, groups: int | None = None) -> list:
        sides = [("real", 300)] * 30 * k + [("real", 500)] * 10 * k + [("gen_a", 400)] * 40 * k
        return [(g, None if groups is None else f"{g}{i % groups}", header(w=w)) for i, (g, w) in enumerate(sides)]

    small = audit(*header_rows(rows(1)))
    f = small.features["min_side"]
    assert f["auroc"] == pytest.approx(0.75) and f["direction"] == "higher: fake"
    assert f["unreliable"] == "95% interval 0.21 wide, over 0.20"
    assert small.warnings[0].startswith("shorter side (px) alone tells real from fake: AUROC 0.75 ⚠ (higher: fake;")
    assert small.headline.endswith("(shorter side (px), AUROC 0.75 ⚠)")
    large = audit(*header_rows(rows(5)))
    assert large.features["min_side"]["unreliable"] is None
    assert "AUROC 0.75 (higher: fake;" in large.warnings[0] and "⚠" not in large.warnings[0]
    grouped = audit(*header_rows(rows(5, groups=5)))
    assert grouped.features["min_side"]["unreliable"] == "fewer than 20 groups of a class (5 real, 5 generated)"
    assert "AUROC 0.75 ⚠ (" in grouped.warnings[0]


def test_audit_report_tables_mark_confounds_with_a_triangle_and_unreliable_figures_with_the_warning_sign(
        tmp_path: Path, capsys) -> None:
    """In the tables ▲ says 'above the warning threshold' and ⚠ only 'unreliable by the shared rule'."""
    rows = [(g, None, header(w=128 if g == "gen_b" else 256)) for g in ("real", "gen_a", "gen_b") for _ in range(10)]
    rows += [("gen_c", None, header(w=128))] * 40 + [("real", None, header(w=256))] * 30
    from deepsift.evaluate.audit import audit_block
    from deepsift.evaluate.report import Report

    res = audit(*header_rows(rows))
    report = Report("t")
    audit_block(report, res)
    report.write(tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    gen_b = next(line for line in md.splitlines() if line.startswith("| gen_b (n=10) |"))
    gen_c = next(line for line in md.splitlines() if line.startswith("| gen_c (n=40) |"))
    padded = list(res.features).index("padded")
    assert gen_b.split(" | ")[1 + padded] == "1.00 ⚠ ▲"  # 10 images against 40 reals: floor 0.28 wide
    assert gen_c.split(" | ")[1 + padded] == "1.00 ▲"  # 40 against 40: a reliable 1.00, above 0.7
    assert "A ⚠ marks an unreliable figure" in md and "marked ▲ in the tables" in md
