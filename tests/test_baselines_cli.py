"""``deepsift baseline train | predict | list``, in-process and as a subprocess."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from deepsift.cli import main
from deepsift.evaluate.baselines.synthetic import write_synthetic_folders


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    real, fake = write_synthetic_folders(root / "train", 30, 30, seed=0)
    # a second fake folder, nested one level, to check repeated --fake and recursion
    _, fake2 = write_synthetic_folders(root / "more", 0, 10, seed=2)
    (fake2 / "nested").mkdir()
    (fake2 / "00000.png").rename(fake2 / "nested" / "00000.png")
    test_real, test_fake = write_synthetic_folders(root / "test", 10, 10, seed=1)
    return root, real, fake, fake2, test_real, test_fake


@pytest.fixture(scope="module")
def trained(folders):
    root, real, fake, fake2, *_ = folders
    out = root / "freq"
    rc = main(["baseline", "train", "frequency", "--real", str(real), "--fake", str(fake), "--fake", str(fake2),
               "--out", str(out), "--crop-size", "64", "--holdout", "0.2", "--seed", "3"])
    assert rc == 0
    return out


def test_train_saves_and_reports_holdout(trained, capsys):
    meta = json.loads((trained / "baseline.json").read_text())
    train = meta["train"]
    assert train["n_real"] == 24 and train["n_fake"] == 32  # 80 % of 30 and of 40 (both folders, recursive)
    assert train["holdout"]["n"] == 14 and train["holdout"]["accuracy"] >= 0.8


def test_predict_csv_and_json(folders, trained, capsys):
    *_, test_real, test_fake = folders
    capsys.readouterr()
    assert main(["baseline", "predict", str(trained), str(test_real), str(test_fake), "--format", "csv"]) == 0
    out = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out.out)))
    assert len(rows) == 20 and rows[0]["head"] == "frequency"
    correct = sum((r["verdict"] == "fake") == ("fake" in r["source"].split("/")[-2]) for r in rows)
    assert correct >= 17
    assert "20 input(s)" in out.err and "0 failed" in out.err
    target = trained.parent / "scores.json"
    assert main(["baseline", "predict", str(trained), str(test_real), "--format", "json", "--out", str(target)]) == 0
    data = json.loads(target.read_text())
    assert len(data) == 10 and {"score", "probability", "label", "error"} <= set(data[0])


def test_predict_with_a_bad_file_exits_3_and_keeps_the_rest(folders, trained, tmp_path, capsys):
    *_, test_real, _ = folders
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    first = sorted(test_real.glob("*.png"))[0]
    capsys.readouterr()
    assert main(["baseline", "predict", str(trained), str(first), str(bad), "--format", "jsonl"]) == 3
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["verdict"] for r in rows] == [rows[0]["verdict"], "error"] and rows[0]["verdict"] != "error"
    assert str(bad) in rows[1]["error"]


def test_train_npr_one_command(folders, tmp_path, capsys):
    _, real, fake, *_ = folders
    out = tmp_path / "npr"
    assert main(["baseline", "train", "npr", "--real", str(real), "--fake", str(fake), "--out", str(out),
                 "--crop-size", "64", "--width", "8", "--epochs", "2", "--batch-size", "16"]) == 0
    err = capsys.readouterr().err
    assert "training loss" in err and "trained npr on 30 real + 30 fake" in err
    assert (out / "weights.safetensors").is_file()


@pytest.mark.parametrize("argv, code, message", [
    (["baseline", "train", "nope", "--real", "{real}", "--fake", "{fake}", "--out", "{tmp}/o"], 2,
     "unknown baseline 'nope'"),
    (["baseline", "train", "frequency", "--real", "{tmp}/missing", "--fake", "{fake}", "--out", "{tmp}/o"], 2,
     "argument --real: {tmp}/missing: no such file or folder"),
    (["baseline", "train", "frequency", "--real", "{empty}", "--fake", "{fake}", "--out", "{tmp}/o"], 1,
     "--real {empty}: no images found"),
    (["baseline", "train", "frequency", "--real", "{real}", "--fake", "{fake}", "--out", "{tmp}/o", "--epochs", "3"],
     2, "--epochs does not apply to the frequency baseline"),
    (["baseline", "train", "frequency", "--real", "{real}", "--fake", "{fake}", "--out", "{tmp}/o", "--holdout", "1"],
     2, "argument --holdout: must be a number in [0, 1), got '1'"),
    (["baseline", "predict", "{tmp}", "{real}"], 1, "not a saved baseline"),
])
def test_cli_errors(folders, tmp_path, capsys, argv, code, message):
    _, real, fake, *_ = folders
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    fill = dict(real=real, fake=fake, tmp=tmp_path, empty=empty)
    assert main([a.format(**fill) for a in argv]) == code
    assert message.format(**fill) in capsys.readouterr().err


def test_baseline_list_as_a_subprocess_and_help(capsys):
    done = subprocess.run([sys.executable, "-m", "deepsift", "baseline", "list"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0
    assert all(name in done.stdout for name in ("frequency", "npr", "univfd"))
    assert main(["baseline", "train", "--help"]) == 0
    assert "--holdout" in capsys.readouterr().out
