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
