"""One layout reader for eval, data split and heads fit; grouped splits of real images by source."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from evalkit import write_class  # noqa: E402

from deepsift.cli import main  # noqa: E402
from deepsift.data.groups import assign_groups, camera_of  # noqa: E402
from deepsift.data.layout import generator_folders, read_dataset  # noqa: E402
from deepsift.evaluate.datasets import load_eval_set  # noqa: E402
from deepsift.evaluate.protocols import split_reals  # noqa: E402
from deepsift.exceptions import DataError  # noqa: E402


def classes_dataset(root: Path, sources: dict[str, int] | None = None, gens: dict[str, int] | None = None) -> Path:
    """``real/<source>/...`` and ``fake/<generator>/...`` (the heads-fit layout)."""
    for j, (src, n) in enumerate((sources or {"flickr": 4, "coco": 4, "phone": 4, "scans": 4}).items()):
        write_class(root / "real" / src, n, False, seed=j)
    for j, (g, n) in enumerate((gens or {"sd21": 5, "dalle3": 3, "mj": 4}).items()):
        write_class(root / "fake" / g, n, True, seed=50 + j, period=4 + j)
    return root


def test_eval_reads_the_heads_fit_layout_without_pooling_generators(tmp_path: Path) -> None:
    root = classes_dataset(tmp_path / "ds")
    ev = load_eval_set(root)
    assert ev.layout == "classes"
    assert ev.generators == ["dalle3", "mj", "sd21"]  # not one generator called "fake"
    assert ev.counts() == {"real": 16, "dalle3": 3, "mj": 4, "sd21": 5}
    assert {s.group for s in ev.samples if s.label == 0} == {"flickr", "coco", "phone", "scans"}
    # heads fit names the same generators from the same folders
    assert sorted(generator_folders([root / "fake"])) == sorted(ev.generators)
    # a fake/ folder of images without generator sub-folders is one generator, 'fake'
    flat = tmp_path / "flat"
    write_class(flat / "real", 3, False, 1)
    write_class(flat / "fake", 3, True, 2)
    assert load_eval_set(flat).generators == ["fake"]
    # a generator folder beside real/ and fake/ is never left out silently
    write_class(root / "sdxl", 2, True, 3)
    with pytest.raises(DataError, match="also sdxl/: move generator folders under fake/"):
        load_eval_set(root)
    assert set(load_eval_set(root, "folders").generators) == {"fake", "sdxl"}


def test_the_reader_walks_with_sources_rules(tmp_path: Path) -> None:
    root = classes_dataset(tmp_path / "ds")
    outside = tmp_path / "elsewhere"
    write_class(outside, 2, False, 9)
    (root / "real" / "linked").symlink_to(outside, target_is_directory=True)
    d = read_dataset(root)
    assert not any("linked" in s.id for s in d.samples)
    assert len(d.skipped) == 1 and "--follow-links" in d.skipped[0].error  # said, not silently dropped
    d2 = read_dataset(root, follow_links=True)
    assert sum("linked" in s.id for s in d2.samples) == 2
    (root / "real" / ".cache").mkdir()
    Image.new("RGB", (8, 8)).save(root / "real" / ".cache" / "x.png")
    assert not any(".cache" in s.id for s in read_dataset(root).samples)


def test_logo_real_split_keeps_each_source_on_one_side(tmp_path: Path) -> None:
    root = classes_dataset(tmp_path / "ds", sources={f"src{i}": 3 + i % 3 for i in range(10)})
    samples = load_eval_set(root).samples
    for seed in range(5):
        train, test = split_reals(samples, 0.5, seed)
        g_train = {samples[i].group for i in train}
        g_test = {samples[i].group for i in test}
        assert g_train and g_test and not g_train & g_test
        assert len(train) + len(test) == sum(s.label == 0 for s in samples)
    per_image = assign_groups(samples, "image")
    train, test = split_reals(per_image, 0.5, 0)
    assert {per_image[i].id for i in train}.isdisjoint({per_image[i].id for i in test})
    assert len({samples[i].group for i in train} & {samples[i].group for i in test}) > 0  # per image: sources straddle


def test_group_by_camera_and_group_column(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "real").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        im = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        exif = Image.Exif()
        exif[0x010F], exif[0x0110] = "Canon", f"EOS {i % 2}"
        im.save(root / "real" / f"{i}.jpg", exif=exif)
    write_class(root / "gen", 3, True, 1)
    samples = load_eval_set(root).samples
    assert camera_of(next(s for s in samples if s.label == 0).source) in ("Canon EOS 0", "Canon EOS 1")
    by_cam = assign_groups(samples, "camera")
    assert {s.group for s in by_cam if s.label == 0} == {"camera:Canon EOS 0", "camera:Canon EOS 1"}
    table = {s.id: ("a" if i < 3 else "b") for i, s in enumerate(x for x in samples if x.label == 0)}
    by_col = assign_groups(samples, "image", table)
    assert {s.group for s in by_col if s.label == 0} == {"column:a", "column:b"}


def _manifest(path: Path) -> list[dict]:
    with open(path / "splits.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_data_split_on_a_folder_dataset_never_cuts_a_source(tmp_path: Path, capsys) -> None:
    root = classes_dataset(tmp_path / "ds", sources={f"src{i}": 4 for i in range(30)})
    out = tmp_path / "split"
    assert main(["data", "split", str(root), "--out", str(out), "--val-fraction", "0.2",
                 "--test-fraction", "0.3"]) == 0
    rows = _manifest(out)
    assert len(rows) == 120 + 12
    sides: dict[str, set] = {}
    for r in rows:
        if r["label"] == "0":
            sides.setdefault(r["group"], set()).add(r["split"])
    assert len(sides) == 30 and all(len(v) == 1 for v in sides.values())  # no source straddles
    assert {next(iter(v)) for v in sides.values()} == {"train", "val", "test"}
    assert "30 group(s)" in capsys.readouterr().err
    # leave one generator out: all of it in test, no other generator there
    out2 = tmp_path / "logo"
    assert main(["data", "split", str(root), "--out", str(out2), "--leave-out", "mj", "--val-fraction", "0"]) == 0
    rows = _manifest(out2)
    assert {r["split"] for r in rows if r["generator"] == "mj"} == {"test"}
    assert not [r for r in rows if r["label"] == "1" and r["generator"] != "mj" and r["split"] == "test"]
    assert main(["data", "split", str(root), "--out", str(tmp_path / "x"), "--leave-out", "nope"]) == 2  # exit 2 everywhere
    assert "leave-out generator 'nope': no generator of that name here (names are matched exactly); generators: dalle3, mj, sd21" \
        in capsys.readouterr().err


def test_group_file_errors_are_one_line(tmp_path: Path, capsys) -> None:
    root = classes_dataset(tmp_path / "ds")
    bad = tmp_path / "groups.csv"
    bad.write_text("name,where\nx,y\n")
    assert main(["data", "split", str(root), "--out", str(tmp_path / "o"), "--groups", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs an 'id'" in err[0]


def test_eval_logo_on_the_heads_fit_layout_splits_reals_by_source(tmp_path: Path, capsys) -> None:
    import json

    from eval_toys import FormatReader

    from deepsift.evaluate.detectors import register_detector_loader

    register_detector_loader("format", lambda arg: FormatReader())
    root = classes_dataset(tmp_path / "ds")
    rep = tmp_path / "rep"
    assert main(["eval", "logo", str(root), "--detector", "fmt=format:x", "--report", str(rep)]) == 0
    data = json.loads((rep / "metrics.json").read_text())
    assert set(data["leave_one_out"]["fmt"]) == {"sd21", "dalle3", "mj"}
    assert data["real_split"] == {"train": 8, "test": 8, "groups": 4,  # 2 of 4 sources each side
                                  "achieved_train_fraction": 0.5}
    assert "split by source, 4 group(s)" in (rep / "report.md").read_text()
    assert main(["eval", "logo", str(root), "--detector", "fmt=format:x", "--group", "image", "--report",
                 str(tmp_path / "rep2")]) == 0
    assert json.loads((tmp_path / "rep2" / "metrics.json").read_text())["real_split"]["groups"] == 0


def test_a_report_inside_the_dataset_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    root = classes_dataset(tmp_path / "ds")
    assert main(["eval", "audit", str(root), "--report", str(root / "report")]) == 2
    assert "inside the dataset" in capsys.readouterr().err
    assert not (root / "report").exists()  # nothing created


def test_grouped_split_groups_fakes_refuses_unmatched_group_files_and_empty_sides(tmp_path: Path, capsys) -> None:
    """Prompt folders of a generator stay on one side; a group file that matches nothing is refused (and one
    matching little warned about); achieved fractions are printed; a side with no real image is refused."""
    root = tmp_path / "ds"
    for i in range(12):
        write_class(root / "real" / f"src{i}", 3, False, seed=i)
    for p in range(20):
        write_class(root / "fake" / "sd" / f"prompt{p:02d}", 3, True, seed=100 + p)
    out = tmp_path / "split"
    assert main(["data", "split", str(root), "--out", str(out), "--val-fraction", "0", "--test-fraction", "0.4"]) == 0
    err = capsys.readouterr().err
    rows = _manifest(out)
    sides: dict[str, set] = {}
    for r in rows:
        if r["label"] == "1":
            sides.setdefault(r["group"], set()).add(r["split"])
    assert len(sides) == 20 and all(len(v) == 1 for v in sides.values())  # no prompt folder straddles
    n_test = sum(r["split"] == "test" for r in rows)
    assert f"test {n_test / len(rows):.0%}" in err and "achieved train" in err
    # a group file naming other images: refused, nothing written
    bad = tmp_path / "groups.csv"
    bad.write_text("path,group\n" + "".join(f"/elsewhere/{i}.jpg,repo{i}\n" for i in range(5)))
    assert main(["data", "split", str(root), "--out", str(tmp_path / "o1"), "--groups", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "matches none of the 96 images (0 of its 5 rows)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o1" / "splits.csv").exists()
    # one that matches 2 of 5 rows: a warning, the split goes on
    some = tmp_path / "some.csv"
    some.write_text("id,group\nreal/src0/img_000.png,r\nreal/src1/img_000.png,r\n" + "".join(
        f"nope{i},x\n" for i in range(3)))
    assert main(["data", "split", str(root), "--out", str(tmp_path / "o2"), "--groups", str(some),
                 "--val-fraction", "0", "--test-fraction", "0.4"]) == 0
    assert "matches only 2 of its 5 rows (40%)" in capsys.readouterr().err
    # every real source in one group: the test side would have no real image -> refused with the counts
    one = tmp_path / "one.csv"
    one.write_text("id,group\n" + "".join(f"real/src{i}/img_{j:03d}.png,all\n" for i in range(12) for j in range(3)))
    rc = main(["data", "split", str(root), "--out", str(tmp_path / "o3"), "--groups", str(one),
               "--val-fraction", "0", "--test-fraction", "0.4", "--salt", "s1"])
    err = capsys.readouterr().err
    assert rc == 1 and "side would hold 0 real" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o3" / "splits.csv").exists()


def test_eval_generators_resamples_groups_and_warns_below_20_per_class(tmp_path: Path, capsys) -> None:
    import json

    from eval_toys import FormatReader

    from deepsift.evaluate.detectors import register_detector_loader

    register_detector_loader("format", lambda arg: FormatReader())
    root = classes_dataset(tmp_path / "ds", sources={f"src{i}": 3 for i in range(6)}, gens={"sd": 4, "mj": 4})
    rep = tmp_path / "rep"
    assert main(["eval", "generators", str(root), "--detector", "fmt=format:x", "--bootstrap", "50",
                 "--report", str(rep)]) == 0
    pooled = json.loads((rep / "metrics.json").read_text())["per_generator"]["fmt"]["all"]["all"]
    assert pooled["n_real_groups"] == 6 and pooled["few_groups"] is True
    out = capsys.readouterr().out
    assert "the bootstrap resamples groups (6 real" in out and "fewer than 20 groups of a class" in out


def test_printed_paths_have_no_double_slash(tmp_path, capsys):
    """``--out DIR/`` (as people type it) is printed as DIR/splits.csv, not DIR//splits.csv."""
    from evalkit import folders_dataset

    root = folders_dataset(tmp_path / "data", 30)
    assert main(["data", "split", str(root), "--out", str(tmp_path / "out") + "/", "--test-fraction", "0.4"]) == 0
    err = capsys.readouterr().err
    assert f"manifest: {tmp_path / 'out' / 'splits.csv'}" in err and "//" not in err
