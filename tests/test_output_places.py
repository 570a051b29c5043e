"""Every command that writes, walked with every kind of bad output place (issue 19, items 10 and 12).

One line (exit 1 or 2), before the work, and the place is left exactly as it was: a read-only
folder, a regular file where a folder is due, a folder where a file is due, a FIFO or a device
node. A symbolic link is written through (its target holds the result, the link stays a link).
Results follow the user's umask.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from data_factory import make_shards
from fskit import read_only_folder

from deepsift.cli import main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, labelled_folders, code_model_dir) -> dict:
    root = tmp_path_factory.mktemp("inputs")
    make_shards(root / "d3", 4, per_shard=4, n_gen=1)
    (root / "labels.csv").write_text("id,label\n" + "".join(f"i{i},{i % 2}\n" for i in range(20)))
    (root / "scores.csv").write_text("id,score\n" + "".join(f"i{i},{(i % 2) + i / 100}\n" for i in range(20)))
    return {"root": root, "real": labelled_folders["real"], "fake": labelled_folders["gen_a"],
            "data": labelled_folders["real"].parent, "model": code_model_dir}


FILE_COMMANDS = {  # name -> argv with the output as {out}
    "export onnx": lambda i: ["export", "onnx", "--model", str(i["model"]), "--out", "{out}"],
    "eval calibrate": lambda i: ["eval", "calibrate", "--labels", str(i["root"] / "labels.csv"), "--scores",
                                 str(i["root"] / "scores.csv"), "--out", "{out}"],
}
DIR_COMMANDS = {
    "data export-wds": lambda i: ["data", "export-wds", str(i["root"] / "d3"), "--out", "{out}",
                                  "--allow-missing-real"],
    "baseline train": lambda i: ["baseline", "train", "frequency", "--real", str(i["real"]), "--fake", str(i["fake"]),
                                 "--out", "{out}"],
    "train": lambda i: ["train", "--data", str(i["root"] / "d3"), "--real", str(i["real"]), "--out", "{out}"],
    "heads fit": lambda i: ["heads", "fit", "--real", str(i["real"]), "--fake", str(i["fake"]), "--model",
                            str(i["model"]), "--out", "{out}"],
    "data split": lambda i: ["data", "split", str(i["root"] / "d3"), "--out", "{out}"],
    "data fetch-real": lambda i: ["data", "fetch-real", str(i["root"] / "d3"), "--out", "{out}"],
    "eval audit": lambda i: ["eval", "audit", str(i["data"]), "--report", "{out}"],
}


def _place(tmp_path: Path, kind: str) -> Path:
    """A bad output place of ``kind``, with something in it that must survive."""
    if kind == "fifo":
        os.mkfifo(tmp_path / "out")
    elif kind == "device":
        os.mknod(tmp_path / "out", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null twin
    elif kind == "file":
        (tmp_path / "out").write_text("was here before")
    elif kind == "folder":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "keep.txt").write_text("was here before")
    return tmp_path / "out"


def _same(place: Path, kind: str) -> None:
    mode = os.lstat(place).st_mode
    if kind == "fifo":
        assert stat.S_ISFIFO(mode)
    elif kind == "device":
        assert stat.S_ISCHR(mode)
    elif kind == "file":
        assert stat.S_ISREG(mode) and place.read_text() == "was here before"
    else:
        assert sorted(p.name for p in place.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in place.parent.iterdir()) == ["out"]  # no stray temporary beside it


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepsift: error: "), err
    return err[0]


@pytest.mark.parametrize("name", list(FILE_COMMANDS))
@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_file_outputs_refuse_what_is_not_a_file(inputs, tmp_path, capsys, name, kind) -> None:
    if kind == "device" and os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    place = _place(tmp_path, kind)
    argv = [a.replace("{out}", str(place)) for a in FILE_COMMANDS[name](inputs)]
    assert main(argv) in (1, 2)
    assert "Traceback" not in _one_line(capsys)
    _same(place, kind)


@pytest.mark.parametrize("name", list(DIR_COMMANDS))
@pytest.mark.parametrize("kind", ["file", "fifo", "device"])
def test_folder_outputs_refuse_what_is_not_a_folder(inputs, tmp_path, capsys, name, kind) -> None:
    if kind == "device" and os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    place = _place(tmp_path, kind)
    argv = [a.replace("{out}", str(place)) for a in DIR_COMMANDS[name](inputs)]
    assert main(argv) in (1, 2)
    _one_line(capsys)
    _same(place, kind)


@pytest.fixture
def readonly(tmp_path):
    with read_only_folder(tmp_path / "ro") as folder:
        yield folder


@pytest.mark.parametrize("name", [*FILE_COMMANDS, *DIR_COMMANDS])
def test_every_writing_command_in_a_read_only_folder(inputs, readonly, capsys, name) -> None:
    table = {**FILE_COMMANDS, **DIR_COMMANDS}
    argv = [a.replace("{out}", str(readonly / "sub" / "out")) for a in table[name](inputs)]
    assert main(argv) in (1, 2)
    assert "cannot write" in _one_line(capsys)
    assert list(readonly.iterdir()) == []


def test_out_onto_a_symlink_writes_through_it_with_the_users_umask(inputs, tmp_path, capsys) -> None:
    """eval calibrate and baseline train into links: the link stays, its target holds the result, modes follow
    the umask (0o027 here: files 0640, folders 0750), not mkstemp's 0600 / mkdtemp's 0700."""
    old = os.umask(0o027)
    try:
        target = tmp_path / "real_cal.json"
        target.write_text("{}")
        link = tmp_path / "cal.json"
        link.symlink_to(target)
        assert main(FILE_COMMANDS["eval calibrate"](inputs)[:-1] + [str(link)]) == 0
        assert link.is_symlink() and '"method"' in target.read_text()
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
        folder = tmp_path / "base_target"
        folder.mkdir()
        dlink = tmp_path / "base"
        dlink.symlink_to(folder, target_is_directory=True)
        assert main(DIR_COMMANDS["baseline train"](inputs)[:-1] + [str(dlink)]) == 0
        assert dlink.is_symlink() and (folder / "baseline.json").is_file()
        assert stat.S_IMODE(os.stat(folder / "weights.safetensors").st_mode) == 0o640
        heads = tmp_path / "heads"
        assert main(DIR_COMMANDS["heads fit"](inputs)[:-1] + [str(heads), "--classifier", "linear"]) == 0
        assert stat.S_IMODE(os.stat(heads).st_mode) == 0o750
    finally:
        os.umask(old)
    capsys.readouterr()


@pytest.mark.parametrize("name", ["export onnx", "baseline train", "data export-wds"])
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(inputs, small_disk, capsys, name) -> None:
    """A 64 KiB disk, nearly full: the 22 MB ONNX file, the baseline's weights, the tars do not fit."""
    mnt = small_disk("64k")
    with open(mnt / "filler", "wb") as fh:
        fh.write(b"\0" * (60 * 1024))
    table = {**FILE_COMMANDS, **DIR_COMMANDS}
    argv = [a.replace("{out}", str(mnt / ("model.onnx" if name == "export onnx" else "out"))) for a in table[name](inputs)]
    assert main(argv) == 1
    assert "Traceback" not in _one_line(capsys)
    left = sorted(p.name for p in mnt.rglob("*") if p.is_file())
    assert left == ["filler"], left
