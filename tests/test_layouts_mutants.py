"""Layouts: what `scripts/mutation.sh layouts` found the layout tests let through (benchmarks/README.md)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from evalkit import folders_dataset, write_class  # noqa: E402

from deepsift.data.layout import images_under, read_dataset, real_only  # noqa: E402
from deepsift.exceptions import DataError  # noqa: E402


def test_a_folders_dataset_with_only_real_images_is_refused(tmp_path: Path) -> None:
    write_class(tmp_path / "real", 2, False, 0)
    with pytest.raises(DataError, match=r"only a 'real/' folder, no generator folder"):
        read_dataset(tmp_path, "folders")


def test_an_empty_class_folder_is_named_with_its_class(tmp_path: Path) -> None:
    root = folders_dataset(tmp_path / "gen", 2)
    (root / "gen_empty").mkdir()
    with pytest.raises(DataError, match=r"generator folder 'gen_empty' contains no images"):
        read_dataset(root)
    root = folders_dataset(tmp_path / "real", 2)
    for p in (root / "real").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=r"real folder 'real' contains no images"):
        read_dataset(root)


def test_a_loose_image_is_its_own_group_and_a_nested_one_takes_its_folder(tmp_path: Path) -> None:
    root = folders_dataset(tmp_path, 2)
    write_class(root / "real" / "flickr", 2, False, 7)
    groups = {s.id: s.group for s in read_dataset(root).samples if s.label == 0}
    assert sorted(groups.items()) == [("real/flickr/img_000.png", "flickr"), ("real/flickr/img_001.png", "flickr"),
                                      ("real/img_000.png", None), ("real/img_001.png", None)]


def test_an_extra_real_folder_adds_real_images(tmp_path: Path) -> None:
    root = folders_dataset(tmp_path / "set", 2)
    extra = tmp_path / "photos"
    write_class(extra / "cam1", 3, False, 9)
    samples = read_dataset(root, real=extra).samples
    added = [s for s in samples if s.id.startswith("real:")]
    assert [(s.id, s.label, s.generator, s.group) for s in added] == [
        (f"real:cam1/img_00{i}.png", 0, "real", "cam1") for i in range(3)]
    assert len(samples) == 6 + 3


def test_a_folder_of_real_photos_is_all_real(tmp_path: Path) -> None:
    write_class(tmp_path / "photos", 3, False, 0)
    data = real_only(tmp_path / "photos")
    assert [(s.label, s.generator) for s in data.samples] == [(0, "real")] * 3


def test_links_out_of_the_folder_are_not_followed_unless_asked(tmp_path: Path) -> None:
    write_class(tmp_path / "outside", 2, False, 1)
    write_class(tmp_path / "photos", 1, False, 0)
    (tmp_path / "photos" / "more").symlink_to(tmp_path / "outside", target_is_directory=True)
    files, errors = images_under(tmp_path / "photos")
    assert [Path(f).name for f in files] == ["img_000.png"] and "not followed" in errors[0].error
    data = real_only(tmp_path / "photos")
    assert len(data.samples) == 1 and len(data.skipped) == 1
    assert len(real_only(tmp_path / "photos", follow_links=True).samples) == 3


def test_parquet_shards_give_one_generated_sample_per_generation(tmp_path: Path) -> None:
    from deepsift.data.schema import D3Record, Generation
    from deepsift.data.writer import write_shard

    write_class(tmp_path / "png", 2, True, 0)
    png = [(tmp_path / "png" / f"img_00{i}.png").read_bytes() for i in range(2)]
    recs = [D3Record(f"r{i}", "p", None, None, f"http://x/{i}.jpg",
                     [Generation("sd-1.4", 64, 64, 20, f"a{i}.png", png[i]),
                      Generation("if-i-xl", 64, 64, 20, f"b{i}.png", png[1 - i])]) for i in range(2)]
    write_shard(recs, tmp_path / "shards" / "test-00000.parquet", n_generators=2)
    write_class(tmp_path / "real", 2, False, 3)
    data = read_dataset(tmp_path / "shards", real=tmp_path / "real")
    assert data.layout == "parquet"
    assert sorted((s.id, s.label, s.generator) for s in data.samples if s.label == 1) == [
        ("r0/gen0", 1, "sd-1.4"), ("r0/gen1", 1, "if-i-xl"), ("r1/gen0", 1, "sd-1.4"), ("r1/gen1", 1, "if-i-xl")]
