"""Bad input in the newer commands (issue 19, items 7-12): one line, nothing lost, nothing hangs."""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from deepsift.cli import main  # noqa: E402

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))


def _fails_within(seconds: float, fn) -> object:
    """Run ``fn`` in a thread; the test fails (instead of hanging) when it has not returned in time."""
    box: dict = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn()
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(seconds), "still running: it hangs"
    return box.get("value")


@pytest.mark.parametrize("case", ["aliases", "huge", "fifo"])
def test_a_config_file_is_bounded(tmp_path: Path, capsys, case: str) -> None:
    """A 700-byte YAML of nested aliases, a 2 MiB file and a FIFO: one usage line each, at once."""
    cfg = tmp_path / "c.yaml"
    if case == "aliases":
        cfg.write_text(LAUGHS)
        assert len(LAUGHS) < 800
    elif case == "huge":
        cfg.write_text("# padding\n" * 220_000)
    else:
        os.mkfifo(cfg)
    out = tmp_path / "out"
    rc = _fails_within(20, lambda: main(["train", "--data", str(tmp_path), "--real", str(tmp_path), "--out", str(out),
                                         "--config", str(cfg)]))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert {"aliases": "aliases", "huge": "larger than 1024 KiB", "fifo": "not a regular file"}[case] in err[0]
    assert not out.exists()


@pytest.fixture()
def fifo_dataset(tmp_path: Path) -> Path:
    """A folders-layout dataset with a FIFO named like an image among the reals and among the fakes."""
    from evalkit import folders_dataset

    root = folders_dataset(tmp_path / "ds", 6)
    os.mkfifo(root / "real" / "zz_pipe.png")
    os.mkfifo(root / "gen_a" / "zz_pipe.jpg")
    return root


def test_a_fifo_in_a_dataset_hangs_no_reader(fifo_dataset: Path, tmp_path: Path, capsys) -> None:
    """eval audit, eval generators and data split --group camera read headers/EXIF through the one safe opener."""
    from eval_toys import FormatReader

    from deepsift.evaluate.detectors import register_detector_loader

    register_detector_loader("format", lambda arg: FormatReader())
    assert _fails_within(60, lambda: main(["eval", "audit", str(fifo_dataset)])) == 3  # counted, left out
    assert "2 image(s) could not be read" in capsys.readouterr().err
    assert _fails_within(60, lambda: main(["eval", "generators", str(fifo_dataset), "--detector", "fmt=format:x"])) == 3
    capsys.readouterr()
    rc = _fails_within(60, lambda: main(["data", "split", str(fifo_dataset), "--out", str(tmp_path / "split"),
                                         "--group", "camera", "--val-fraction", "0", "--test-fraction", "0.5"]))
    assert rc == 0 and (tmp_path / "split" / "splits.csv").is_file()


def test_heads_fit_with_a_one_image_generator_or_class(tmp_path: Path, capsys) -> None:
    """A one-image generator gets no head of its own (and a line saying so); a one-image class is refused before
    any embedding."""
    import json

    from evalkit import tiny_model, write_class

    model = tiny_model(tmp_path / "model")
    write_class(tmp_path / "real", 6, False, seed=1)
    write_class(tmp_path / "fake" / "sd", 6, True, seed=2)
    write_class(tmp_path / "fake" / "lonely", 1, True, seed=3)
    out = tmp_path / "heads"
    assert main(["heads", "fit", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                 "--model", str(model), "--out", str(out), "--classifier", "knn", "--classifier", "linear"]) == 0
    err = capsys.readouterr().err
    assert "fake/lonely: 1 readable image(s), too few for a head of its own" in err and "Traceback" not in err
    assert set(json.loads((out / "heads.json").read_text())["heads"]) == {"knn", "linear", "knn:sd", "linear:sd"}
    write_class(tmp_path / "one_real", 1, False, seed=4)
    rc = main(["heads", "fit", "--real", str(tmp_path / "one_real"), "--fake", str(tmp_path / "fake"),
               "--model", str(model), "--out", str(tmp_path / "h2"), "--classifier", "knn"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "at least 2 real images (1 found)" in err[0]


def _train(tmp_path: Path, shards: Path, reals: Path, name: str, capsys, **cfg) -> tuple[int, list[str], Path]:
    from trainkit import tiny_config, write_yaml

    out = tmp_path / name
    capsys.readouterr()
    rc = main(["train", "--data", str(shards), "--real", str(reals), "--out", str(out), "--config",
               str(write_yaml(tmp_path / f"{name}.yaml", tiny_config(**cfg)))])
    return rc, capsys.readouterr().err.strip().splitlines(), out


def test_train_skips_and_counts_undecodable_records(tmp_path: Path, capsys) -> None:
    """5 of 24 reals torn: skipped, counted and logged (the run finishes, and a resumed run too); past
    max_bad_share it stops in one line; every image bad: one line, not a worker's traceback."""
    import json

    from trainkit import make_dataset

    shards, reals = make_dataset(tmp_path / "d", 24)
    bad = {f"rec{i:05d}" for i in (1, 5, 9, 13, 17)}
    for rid in bad:
        (reals / f"{rid}.png").write_bytes(b"\x89PNG\r\n\x1a\n torn")
    rc, err, out = _train(tmp_path, shards, reals, "ok", capsys, steps=6, holdout=4, max_bad_share=0.3)
    assert rc == 0, err
    logged = {i for line in (out / "train_log.jsonl").read_text().splitlines()
              if (e := json.loads(line)).get("event") == "skipped" for i in e["ids"]}
    assert logged and logged <= bad
    assert any(f"skipped {len(logged)} training record(s) whose image cannot be decoded" in line for line in err)
    assert main(["train", "--resume", str(out), "--steps", "8"]) == 0  # the same records are skipped again
    rc, err, _ = _train(tmp_path, shards, reals, "strict", capsys, steps=6, holdout=4, max_bad_share=0.05)
    assert rc == 1 and len(err) == 1 and "more than the max_bad_share 0.05" in err[0], err
    for p in reals.iterdir():
        p.write_bytes(b"not an image")
    rc, err, _ = _train(tmp_path, shards, reals, "allbad", capsys, steps=2, holdout=4)
    assert rc == 1 and len(err) == 1 and "could be decoded" in err[0] and "Traceback" not in err[0], err
