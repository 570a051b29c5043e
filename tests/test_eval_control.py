"""The re-encoding control, size/format strata and small-sample marks in eval reports."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from eval_toys import FormatReader  # noqa: E402

from deepsift.cli import main  # noqa: E402
from deepsift.evaluate.control import parse_control  # noqa: E402
from deepsift.evaluate.detectors import register_detector_loader  # noqa: E402


def _img(i: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)


@pytest.fixture(scope="module")
def confounded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """reals JPEG, fakes PNG, the same pictures; sizes in all three bands; gen_tiny has 1 image."""
    root = tmp_path_factory.mktemp("confounded")
    sizes = [(160, 160), (300, 256), (640, 520)]
    for d in ("real", "fake/gen_a", "fake/gen_b", "fake/gen_tiny"):
        (root / d).mkdir(parents=True)
    for i in range(36):
        im = _img(i, sizes[i % 3])
        im.save(root / "real" / f"{i:03d}.jpg", quality=85)
        im.save(root / "fake" / ("gen_a" if i % 2 else "gen_b") / f"{i:03d}.png")
    _img(99, (300, 300)).save(root / "fake" / "gen_tiny" / "only.png")
    register_detector_loader("format", lambda arg: FormatReader())
    return root


def _json(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_control_shows_original_and_controlled_side_by_side(confounded: Path, tmp_path: Path, capsys) -> None:
    rep = tmp_path / "rep"
    assert main(["eval", "generators", str(confounded), "--detector", "fmt=format:x", "--control", "jpeg:90",
                 "--report", str(rep)]) == 0
    out = capsys.readouterr().out
    data = _json(rep)
    orig = data["control"]["original"]["fmt"]["all"]["metrics"]["auroc"]["value"]
    ctrl = data["control"]["controlled"]["fmt"]["all"]["metrics"]["auroc"]["value"]
    assert orig == pytest.approx(1.0) and ctrl == pytest.approx(0.5)  # all JPEG now: nothing left to read
    assert data["control"]["transform"] == "jpeg:90"
    assert "fmt: AUROC 1.000 original" in out and "with jpeg:90 (drop +0.5" in out
    md = (rep / "report.md").read_text()
    assert "## Re-encoding control: jpeg:90" in md and "| AUROC original | AUROC jpeg:90 | drop |" in md
    # the audit in the same report says why
    assert "WARNING: file format alone tells real from fake" in out
    assert md.index("## At a glance") < md.index("## Curves") < md.index("## Per-generator metrics")


def test_strata_by_size_band_and_original_format(confounded: Path, tmp_path: Path) -> None:
    rep = tmp_path / "rep"
    assert main(["eval", "generators", str(confounded), "--detector", "fmt=format:x", "--report", str(rep)]) == 0
    st = _json(rep)["strata"]["fmt"]
    assert set(st["size"]) == {"padded < 224", "224-512", "> 512"}
    assert st["size"]["padded < 224"]["n_real"] == 12 and st["size"]["padded < 224"]["n_fake"] == 12
    assert set(st["format"]) == {"JPEG", "PNG"}
    assert st["format"]["JPEG"]["n_fake"] == 0  # one class only: AUROC undefined, said so
    assert st["format"]["JPEG"]["metrics"]["auroc"]["value"] is None
    assert "## By size and original format" in (rep / "report.md").read_text()


def test_unreliable_figures_are_marked_with_their_reason(confounded: Path, tmp_path: Path, capsys) -> None:
    rep = tmp_path / "rep"
    assert main(["eval", "generators", str(confounded), "--detector", "fmt=format:x", "--bootstrap", "50",
                 "--report", str(rep)]) == 0
    per = _json(rep)["per_generator"]["fmt"]["all"]
    tiny = per["gen_tiny"]
    assert tiny["n_fake"] == 1 and "wide" in tiny["metrics"]["auroc"]["unreliable"]  # 1.0 [1.0, 1.0] on one image
    assert "balanced_accuracy" in tiny["metrics"]
    assert "unreliable" not in per["gen_a"]["metrics"]["auroc"]  # 18 fakes, 36 reals, perfectly apart: clear
    assert "fewer than the 100" in per["gen_a"]["metrics"]["tpr@1%fpr"]["unreliable"]  # 36 reals for a 1% FPR
    md = (rep / "report.md").read_text()
    line = next(r for r in md.splitlines() if r.startswith("| gen_tiny | fmt |"))
    assert "| 1 |" in line and "1.000 [1.000, 1.000] ⚠" in line
    assert "| gen_tiny (n=1) | 1.000 ⚠ |" in md and "| gen_a (n=18) | 1.000 |" in md  # the first screen
    assert "fmt: unreliable AUROC (⚠): gen_tiny (95% interval" in capsys.readouterr().out


def test_control_on_logo_and_robustness(confounded: Path, tmp_path: Path) -> None:
    rep = tmp_path / "logo"
    assert main(["eval", "logo", str(confounded), "--detector", "fmt=format:x", "--control", "png",
                 "--report", str(rep)]) == 0
    c = _json(rep)["control"]
    assert c["original"]["fmt"]["gen_a"]["metrics"]["auroc"]["value"] == pytest.approx(1.0)
    assert c["controlled"]["fmt"]["gen_a"]["metrics"]["auroc"]["value"] == pytest.approx(0.5)
    rep = tmp_path / "rob"
    assert main(["eval", "robustness", str(confounded), "--detector", "fmt=format:x", "--transform", "blur",
                 "--control", "resize:256", "--report", str(rep)]) == 0
    d = _json(rep)
    assert d["control"]["transform"] == "resize:256" and d["control"]["robustness"]["clean"]["fmt"] == pytest.approx(0.5)
    assert "clean auroc resize:256" in (rep / "report.md").read_text()


def test_robustness_control_is_labelled_test_side_only(confounded: Path, tmp_path: Path, capsys) -> None:
    rep = tmp_path / "rob"
    assert main(["eval", "robustness", str(confounded), "--detector", "fmt=format:x", "--transform", "blur",
                 "--control", "jpeg:90", "--report", str(rep)]) == 0
    out = capsys.readouterr().out
    c = _json(rep)["control"]
    assert c["mode"] == {"fmt": "test side only"} and c["failed"] == []
    assert "fmt: clean auroc 1.000 original, 0.500 with jpeg:90 (drop +0.500, test side only: not refitted)" in out
    md = (rep / "report.md").read_text()
    glance = md[md.index("## At a glance"):md.index("## Robustness")]
    # what it does and does not show, on the first screen, and the "how" of every row
    assert "Control jpeg:90, test side only:" in glance and "no drop does NOT show" in glance
    row = next(r for r in glance.splitlines() if r.startswith("| fmt |"))
    assert row.rstrip(" |").endswith("test side only")


@pytest.mark.parametrize("bad", ["jpeg:0", "jpeg:101", "jpeg:x", "resize:2", "png:3", "gif"])
def test_bad_control_is_a_usage_error(confounded: Path, bad: str, capsys) -> None:
    assert main(["eval", "generators", str(confounded), "--detector", "fmt=format:x", "--control", bad]) == 2
    assert "--control" in capsys.readouterr().err


def test_parse_control() -> None:
    assert parse_control("JPEG:90").name == "jpeg:90" and parse_control("png").name == "png"
    assert parse_control("resize:512").value == 512


def test_control_refits_fittable_detectors_and_says_test_side_only_for_the_others(confounded: Path, tmp_path: Path,
                                                                                   capsys) -> None:
    from eval_toys import CueLearner, Published

    register_detector_loader("cue", lambda arg: CueLearner())
    register_detector_loader("published", lambda arg: Published())
    CueLearner.calls.clear()
    rep = tmp_path / "rep"
    assert main(["eval", "generators", str(confounded), "--detector", "learner=cue:x", "--detector", "pub=published:x",
                 "--control", "jpeg:90", "--report", str(rep)]) == 0
    out = capsys.readouterr().out
    c = _json(rep)["control"]
    assert c["mode"] == {"learner": "refitted", "pub": "test side only"}
    # refitted on each side: 2 folds on the original files, 2 on the controlled (JPEG) copies
    assert len(CueLearner.calls) == 4
    controlled_calls = [call for call in CueLearner.calls if all(str(s).endswith(".jpg") and "deepsift-control-" in str(s)
                                                                 for s in call[0] + call[1])]
    assert len(controlled_calls) == 2
    for real, fake in CueLearner.calls:  # each fold trains on part of each class, never on everything
        assert 0 < len(real) < 36 and 0 < len(fake) < 37
    orig = c["original"]["learner"]["all"]["metrics"]["auroc"]["value"]
    ctrl = c["controlled"]["learner"]["all"]["metrics"]["auroc"]["value"]
    assert orig == pytest.approx(1.0) and ctrl == pytest.approx(0.5)
    assert "learner: AUROC 1.000 original, 0.500 with jpeg:90 (drop +0.500, refitted)" in out
    assert "pub: AUROC 1.000 original, 0.500 with jpeg:90 (drop +0.500, test side only)" in out
    md = (rep / "report.md").read_text()
    assert "only the test images were controlled" in md and "does NOT show" in md
    # the drop in words is on the first screen: in the glance section, before its table
    glance = md[md.index("## At a glance"):]
    assert glance.index("Control jpeg:90: learner AUROC 1.000 -> 0.500, falls by 0.500") < glance.index("| generator")


def test_control_compares_the_same_images_on_both_sides(confounded: Path, tmp_path: Path) -> None:
    """An image that only the re-encode fails (its header reads, its pixels do not) is left out of both sides."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(confounded, data)
    whole = (data / "fake" / "gen_a" / "001.png").read_bytes()
    (data / "fake" / "gen_a" / "zz_torn.png").write_bytes(whole[: len(whole) // 3])  # header fine, pixels torn
    rep = tmp_path / "rep"
    assert main(["eval", "generators", str(data), "--detector", "fmt=format:x", "--control", "png",
                 "--report", str(rep)]) == 0
    c = _json(rep)["control"]
    assert [f["id"] for f in c["failed"]] == ["fake/gen_a/zz_torn.png"]
    assert c["original"]["fmt"]["all"]["n_fake"] == c["controlled"]["fmt"]["all"]["n_fake"] == 37
    assert _json(rep)["per_generator"]["fmt"]["all"]["all"]["n_fake"] == 38  # the as-given figure keeps it
    assert "could not be re-encoded and were left out of both sides" in (rep / "report.md").read_text()
    rep = tmp_path / "logo"
    assert main(["eval", "logo", str(data), "--detector", "fmt=format:x", "--control", "png",
                 "--report", str(rep)]) == 0
    c = _json(rep)["control"]
    assert c["original"]["fmt"]["gen_a"]["n_fake"] == c["controlled"]["fmt"]["gen_a"]["n_fake"] == 18
    assert len(c["failed"]) == 1
