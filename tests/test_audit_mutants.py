"""Confound audit: what `scripts/mutation.sh audit` found its tests let through (benchmarks/README.md)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deepsift.evaluate.audit import audit

sys.path.insert(0, str(Path(__file__).parent))
from evalkit import header, header_rows  # noqa: E402


def _two_findings() -> list:
    """20 reals (JPEG), three generators of 20 (80 % PNG, 20 % JPEG); gen_b alone is below the 224-px crop."""
    rows = [("real", None, header("JPEG")) for _ in range(20)]
    for gen in ("gen_a", "gen_b", "gen_c"):
        side = 128 if gen == "gen_b" else 256
        rows += [(gen, None, header("JPEG" if i < 4 else "PNG", side)) for i in range(20)]
    return rows


def test_a_pooled_finding_on_every_image_outranks_a_stronger_one_on_half_of_them() -> None:
    """Format separates at AUROC 0.90 over all 80 images (weight 0.8 x 80/80); gen_b's size at 1.00 over its 20
    images and the 20 reals (weight 1.0 x 40/80 = 0.5): format's warning comes first, gen_b's cover 40 images."""
    res = audit(*header_rows(_two_findings()))
    assert res.features["format"]["auroc"] == pytest.approx(0.9)
    assert [(f["feature"], f["generator"], f["n"]) for f in res.findings] == [
        ("format", None, 80), ("min_side", "gen_b", 40), ("padded", "gen_b", 40)]
    assert res.warnings[0].startswith("file format alone tells real from fake: AUROC 0.90 (")
    assert res.headline == "reals are 0% PNG, fakes 80% (file format, AUROC 0.90)"


def test_the_padded_feature_names_the_small_images_and_their_share() -> None:
    """gen_b's 128-px images read '< 224 px 100%', the reals '>= 224 px 100%' (as printed in the warning)."""
    res = audit(*header_rows(_two_findings()))
    f = res.features["padded"]
    assert f["by_group"]["gen_b"]["counts"] == {"< 224 px": 20}
    assert f["real"]["counts"] == {">= 224 px": 20}
    [w] = [w for w in res.warnings if w.startswith("smaller than the 224-px crop")]
    assert "(< 224 px: fake; gen_b: < 224 px 100%; real: >= 224 px 100%; n=20)" in w


def test_the_aspect_ratio_is_long_side_over_short_side() -> None:
    res = audit(*header_rows([("real", None, header(w=320, h=240))] * 4 + [("gen_a", None, header(w=200, h=400))] * 4))
    f = res.features["aspect"]
    assert (f["real"]["median"], f["fake"]["median"]) == (pytest.approx(4 / 3), pytest.approx(2.0))
    assert f["direction"] == "higher: fake" and f["auroc"] == pytest.approx(1.0)


def test_a_single_generated_image_names_the_value_it_has() -> None:
    """One fake (PNG) among JPEG and WEBP reals: the value whose share differs most is PNG (100 % of the fakes,
    0 % of the reals), not JPEG (75 % of the reals)."""
    rows = [("real", None, header("JPEG"))] * 3 + [("real", None, header("WEBP")), ("gen_a", None, header("PNG"))]
    res = audit(*header_rows(rows))
    assert res.features["format"]["direction"] == "PNG: fake"


def test_the_audit_result_repr_leaves_out_the_per_image_values() -> None:
    """repr() (a notebook, a log) shows the findings, not one value per image per feature."""
    res = audit(*header_rows([("real", None, header("JPEG"))] * 50 + [("gen_a", None, header("PNG"))] * 50))
    assert len(res.values["format"]) == 100
    assert "values=" not in repr(res) and "labels=" not in repr(res) and "warnings=" in repr(res)


def test_one_real_image_names_the_value_it_has_and_one_value_is_a_distribution() -> None:
    """One real (PNG) among JPEG and WEBP fakes: PNG is the value that differs most (100 % of the reals)."""
    rows = [("real", None, header("PNG"))] + [("gen_a", None, header("JPEG"))] * 3 + [("gen_a", None, header("WEBP"))]
    f = audit(*header_rows(rows)).features["format"]
    assert f["direction"] == "PNG: real"
    assert f["real"] == {"n": 1, "counts": {"PNG": 1}}  # a single image is a distribution too


def test_a_feature_that_separates_nothing_has_no_direction() -> None:
    rows = [(g, None, header(fmt, side)) for g in ("real", "gen_a") for fmt, side in (("JPEG", 256), ("PNG", 300))
            for _ in range(10)]
    res = audit(*header_rows(rows))
    for name in ("format", "min_side"):  # a category and a number
        assert (res.features[name]["auroc"], res.features[name]["direction"]) == (pytest.approx(0.5), "none")


def _report_md(res, tmp_path: Path) -> str:
    from deepsift.evaluate.audit import audit_block
    from deepsift.evaluate.report import Report

    report = Report("t")
    audit_block(report, res)
    report.write(tmp_path)
    return (tmp_path / "report.md").read_text()


def test_the_report_lists_each_warning_or_says_there_is_none(tmp_path: Path) -> None:
    planted = audit(*header_rows([("real", None, header("JPEG"))] * 20 + [("gen_a", None, header("PNG"))] * 20))
    md = _report_md(planted, tmp_path / "planted")
    assert "⚠ file format alone tells real from fake: AUROC 1.00 (" in md
    assert "No feature separates" not in md
    balanced = audit(*header_rows([(g, None, header("JPEG")) for g in ("real", "gen_a") for _ in range(20)]))
    md = _report_md(balanced, tmp_path / "balanced")
    assert "No feature separates real from fake above AUROC 0.7." in md and "alone tells" not in md
    assert "Per generator" not in md  # one generator: its table would repeat the pooled one


def test_a_merged_cue_is_named_in_the_warning_that_hosts_it_only() -> None:
    res = audit(*header_rows(_two_findings()))
    assert res.warnings[0].endswith("; the same cue as chroma subsampling (they separate nothing within each "
                                    "file format value)")
    assert not any("the same cue" in w for w in res.warnings[1:])


def test_bytes_per_pixel_is_the_file_size_over_the_pixels() -> None:
    from deepsift.evaluate.headers import HeaderInfo

    rows = [("real", None, header("PNG", 100))] * 10 + [("gen_a", None, HeaderInfo("PNG", 100, 50, 5000))] * 10
    f = audit(*header_rows(rows)).features["bytes_per_pixel"]
    assert (f["real"]["median"], f["fake"]["median"]) == (3.0, 1.0) and f["direction"] == "lower: fake"


def test_a_distribution_is_described_by_its_three_commonest_values() -> None:
    from deepsift.evaluate.audit import describe

    dist = {"n": 10, "counts": {"JPEG": 4, "PNG": 3, "WEBP": 2, "TIFF": 1}}
    assert describe(dist) == "JPEG 40%, PNG 30%, WEBP 20%"


def test_a_finding_weighs_its_strength_above_chance_times_its_share_of_the_images() -> None:
    from deepsift.evaluate.audit import finding_weight

    assert finding_weight({"auroc": 0.9, "n": 40}, 80) == pytest.approx(0.4)
    assert finding_weight({"auroc": 0.75, "n": 80}, 80) == pytest.approx(0.5)


@pytest.mark.parametrize("few, reason", [("gen_a", "95% interval 0.25 wide, over 0.20"), ("real", None)])
def test_the_auroc_interval_counts_reals_and_fakes_each(few: str, reason: str | None) -> None:
    """AUROC 0.75 between 20 images at 400 px and 200 at 300 or 500 px: its Hanley-McNeil interval is 0.25 wide
    when the 20 are the fakes, 0.19 when they are the reals."""
    many = "real" if few == "gen_a" else "gen_a"
    rows = [(few, None, header(w=400))] * 20 + [(many, None, header(w=300 if i % 4 else 500)) for i in range(200)]
    f = audit(*header_rows(rows)).features["min_side"]
    assert f["auroc"] == pytest.approx(0.75) and f["unreliable"] == reason


def test_a_generator_finding_names_the_other_generators_with_the_same_cue() -> None:
    """Six generators, gen_b and gen_c below the crop (pooled AUROC 0.67: no pooled warning)."""
    rows = [(g, None, header(w=128 if g in ("gen_b", "gen_c") else 256))
            for g in ("real", "gen_a", "gen_b", "gen_c", "gen_d", "gen_e", "gen_f") for _ in range(20)]
    res = audit(*header_rows(rows))
    [w] = [w for w in res.warnings if w.startswith("smaller than the 224-px crop")]
    assert w.startswith("smaller than the 224-px crop (zero-padded) alone tells real from gen_b: AUROC 1.00 (")
    assert w.endswith("; n=20); also gen_c 1.00 (n=20)")


def test_two_independent_cues_stay_two_warnings() -> None:
    """File size per pixel (AUROC 0.88) and format (0.80, independent of it): format still separates within each
    quartile band of the file size, so it is not folded into it as 'the same cue' (every exact size is one image's)."""
    from deepsift.evaluate.headers import HeaderInfo

    rows = []
    for gen, extra in (("real", 0), ("gen_a", 2050)):
        for i in range(40):
            fmt = ("JPEG" if i % 5 else "PNG") if gen == "real" else ("PNG" if i % 5 else "JPEG")
            rows.append((gen, None, HeaderInfo(fmt, 100, 100, 10000 + 100 * i + extra, 90.0 if fmt == "JPEG" else None,
                                               "4:2:0" if fmt == "JPEG" else "none")))
    res = audit(*header_rows(rows))
    assert [(f["feature"], f["same_cue"]) for f in res.findings] == [("bytes_per_pixel", []),
                                                                     ("format", ["chroma subsampling"])]
    assert res.warnings[0].startswith("file size per pixel (bytes) alone tells real from fake: AUROC 0.88 (")


def test_an_auroc_equal_to_the_warning_level_is_not_above_it() -> None:
    """--warn-above 0.75: a generator (or the pooled set) at exactly 0.75 is not named."""
    half_png = [("gen_b", None, header("PNG" if i < 10 else "JPEG")) for i in range(20)]
    others = [(g, None, header("JPEG")) for g in ("real", "gen_a", "gen_c") for _ in range(20)]
    res = audit(*header_rows(others + half_png), warn_above=0.75)
    assert res.features["format"]["per_generator"]["gen_b"]["auroc"] == 0.75 and res.warnings == []
    pooled = audit(*header_rows([("real", None, header("JPEG"))] * 20 + half_png), warn_above=0.75)
    assert pooled.features["format"]["auroc"] == 0.75 and pooled.warnings == []
