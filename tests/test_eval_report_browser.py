"""A 20-generator x 5-detector report read at a glance, checked in Debian's headless Chromium."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from eval_toys import SeededScorer  # noqa: E402

from deepsift.cli import main  # noqa: E402
from deepsift.evaluate.detectors import register_detector_loader  # noqa: E402

N_GEN, N_DET = 20, 5


@pytest.fixture(scope="module")
def big_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("big") / "data"
    rng = np.random.default_rng(0)

    def save(folder: Path, n: int, fmt: str) -> None:
        folder.mkdir(parents=True)
        for i in range(n):
            side = int(rng.choice([96, 256, 600]))
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((side, side)).save(
                folder / f"{i:03d}.{fmt}")

    save(root / "real", 40, "jpg")
    for g in range(N_GEN):
        save(root / "fake" / f"generator_{g:02d}_with_a_long_name", 2 + (g * 7) % 40, "png" if g % 3 else "jpg")
    for k in range(N_DET):
        register_detector_loader(f"seeded{k}", lambda arg, k=k: SeededScorer(0.5 + 0.2 * k))
    rep = root.parent / "report"
    dets = [a for k in range(N_DET) for a in ("--detector", f"detector_{k}=seeded{k}:x")]
    assert main(["eval", "generators", str(root), *dets, "--bootstrap", "20", "--report", str(rep)]) == 0
    return rep


def test_report_first_screen_plots_and_width(big_report: Path, browser, screenshots: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto((big_report / "report.html").as_uri())
    # the first section is the summary, and its table starts on the first screen
    headings = page.locator("h2").all_inner_texts()
    assert headings[0] == "At a glance"
    first_table = page.locator("table").first
    assert first_table.bounding_box()["y"] < 900
    header = first_table.locator("tr").first.locator("th").all_inner_texts()
    assert header[0] == "generator (n fake)" and len(header) == 1 + N_DET
    rows = first_table.locator("tr").all_inner_texts()
    assert len(rows) == 1 + N_GEN + 1  # header, every generator, all pooled
    cell = first_table.locator("tr", has_text="(n=2)").locator("td").nth(1).inner_text()
    assert cell.endswith("⚠")  # a 2-image generator carries its n, and its figure the mark
    assert page.locator("p.warn").count() >= 1  # the audit's warnings (JPEG vs PNG mix) are on the first screen
    # every plot written is in the page and decoded
    n_plots = len(list((big_report / "plots").glob("*.png")))
    assert n_plots >= 2 + N_DET  # heatmap, ROC/PR, one histogram panel set per detector
    imgs = page.locator("img")
    assert imgs.count() == n_plots
    assert all(imgs.nth(i).evaluate("e => e.complete && e.naturalWidth > 0") for i in range(n_plots))
    # nothing overflows the page width (wide tables scroll inside their own box)
    width = page.evaluate("() => document.documentElement.clientWidth")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width
    over = page.evaluate("""w => [...document.querySelectorAll('body *')]
        .filter(e => !e.closest('.tw') || e.classList.contains('tw'))
        .filter(e => e.getBoundingClientRect().right > w + 1).map(e => e.tagName)""", width)
    assert over == []
    page.screenshot(path=str(screenshots / "first_screen.png"))
    page.screenshot(path=str(screenshots / "full_report.png"), full_page=True)
    page.close()


def _confounded_zoo(root: Path) -> Path:
    """Reals JPEG q90 4:2:0 around 256 px; 20 generators like them, except six, each with its own file cue."""
    rng = np.random.default_rng(1)

    def pic(w: int, h: int) -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((w, h))

    (root / "real").mkdir(parents=True)
    for i in range(40):
        pic(256 + i, 256 + i).save(root / "real" / f"{i:03d}.jpg", quality=90)
    for g in range(N_GEN):
        folder = root / f"generator_{g:02d}_with_a_long_name"
        folder.mkdir()
        for i in range(12):
            side = 256 + 3 * i
            if g == 0:
                pic(96, 96).save(folder / f"{i}.jpg", quality=90)  # below the crop: min side and padding
            elif g == 1:
                pic(2 * side, side).save(folder / f"{i}.jpg", quality=90)  # aspect ratio
            elif g == 2:
                exif = Image.Exif()
                exif[0x0110] = "Cam"
                pic(side, side).save(folder / f"{i}.jpg", quality=90, exif=exif)  # metadata
            elif g == 3:
                pic(side, side).save(folder / f"{i}.jpg", quality=30)  # JPEG quality, file size
            elif g == 4:
                pic(side, side).save(folder / f"{i}.jpg", quality=90, subsampling=0)  # chroma subsampling
            elif g == 5:
                pic(side, side).save(folder / f"{i}.png")  # format
            else:
                pic(side, side).save(folder / f"{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def control_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _confounded_zoo(tmp_path_factory.mktemp("zoo") / "data")
    for k in range(N_DET):
        register_detector_loader(f"seeded{k}", lambda arg, k=k: SeededScorer(0.5 + 0.2 * k))
    rep = root.parent / "report"
    dets = [a for k in range(N_DET) for a in ("--detector", f"detector_{k}=seeded{k}:x")]
    assert main(["eval", "generators", str(root), *dets, "--control", "jpeg:90", "--report", str(rep)]) == 0
    return rep


def test_first_screen_holds_the_controlled_drop_and_the_top_warning(control_report: Path, browser,
                                                                     screenshots: Path) -> None:
    import json

    data = json.loads((control_report / "metrics.json").read_text())
    warnings = data["audit"]["warnings"]
    assert len(warnings) >= 8 and len(data["per_generator"]) == N_DET
    summary = data["control"]["summary"]
    assert len(summary) == N_DET and all("test side only" in s for s in summary)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto((control_report / "report.html").as_uri())

    def on_first_screen(text: str) -> bool:
        box = page.locator("p", has_text=text).first.bounding_box()
        return box is not None and box["y"] + box["height"] <= 800

    assert on_first_screen(summary[0]) and "->" in summary[0]  # the drop, in words
    assert on_first_screen(warnings[0][:60])  # the top-ranked warning
    pooled = page.locator("table").first.locator("tr.pooled")
    assert pooled.count() == 1 and pooled.inner_text().startswith("all generators")  # set apart
    page.screenshot(path=str(screenshots / "first_screen_with_control.png"))
    page.close()
