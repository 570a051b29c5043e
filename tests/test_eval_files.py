"""Label/score files: formats, every bad-input case, and ``deepsift eval scores`` / ``calibrate``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from deepsift.cli import main
from deepsift.evaluate.calibration import Calibrator
from deepsift.evaluate.scorefiles import join, read_labels, read_scores
from deepsift.exceptions import EvaluationError


def _labels(tmp_path: Path, n: int = 40) -> tuple[Path, np.ndarray]:
    y = np.array([i % 2 for i in range(n)])
    lines = ["id,label,generator"] + [f"img{i}.png,{'fake' if y[i] else 'real'},{['real', 'sd', 'dalle'][y[i] * (1 + i % 4 // 2)]}"
                                      for i in range(n)]
    p = tmp_path / "labels.csv"
    p.write_text("\n".join(lines))
    return p, y


def test_formats_join_in_label_order(tmp_path: Path) -> None:
    lab, y = _labels(tmp_path, 10)
    scores = {f"img{i}.png": float(i) / 10 for i in reversed(range(10))}
    (tmp_path / "s.json").write_text(json.dumps(scores))
    (tmp_path / "s.jsonl").write_text("\n".join(json.dumps({"source": k, "probability": v}) for k, v in scores.items()))
    (tmp_path / "s.csv").write_text("file,score\n" + "\n".join(f"{k},{v}" for k, v in scores.items()))
    table = read_labels(lab)
    assert table.generators["img1.png"] in ("sd", "dalle") and table.generators["img0.png"] == "real"
    for name in ("s.json", "s.jsonl", "s.csv"):
        ids, yy, ss = join(table, read_scores(tmp_path / name))
        assert ids[:3] == ["img0.png", "img1.png", "img2.png"]
        np.testing.assert_array_equal(yy, y)
        np.testing.assert_allclose(ss, np.arange(10) / 10)


def test_unknown_and_missing_ids_are_listed(tmp_path: Path) -> None:
    lab, _ = _labels(tmp_path, 6)
    scores = {f"img{i}.png": 0.5 for i in range(2, 6)} | {"ghost.png": 0.1, "other.png": 0.2}
    (tmp_path / "s.json").write_text(json.dumps(scores))
    with pytest.raises(EvaluationError) as err:
        join(read_labels(lab), read_scores(tmp_path / "s.json"), "s.json")
    msg = str(err.value)
    assert "2 id(s) not in the labels" in msg and "'ghost.png'" in msg and "'other.png'" in msg
    assert "2 labelled id(s) missing" in msg and "'img0.png'" in msg and "'img1.png'" in msg


def test_duplicate_ids(tmp_path: Path) -> None:
    p = tmp_path / "s.csv"
    p.write_text("id,score\na,0.1\nb,0.2\na,0.3\nc,0.1\nc,0.9\n")
    with pytest.raises(EvaluationError, match=r"s\.csv: duplicate ids 'a', 'c'"):
        read_scores(p)
    j = tmp_path / "dup.json"
    j.write_text('{"x": 1, "y": 0, "x": 0}')
    with pytest.raises(EvaluationError, match="duplicate ids 'x'"):
        read_labels(j)


def test_non_numeric_and_nan_scores(tmp_path: Path) -> None:
    p = tmp_path / "s.csv"
    p.write_text("id,score\na,0.1\nb,high\nc,nan\nd,\n")
    with pytest.raises(EvaluationError) as err:
        read_scores(p)
    msg = str(err.value)
    assert "3 non-numeric or NaN" in msg and "b (line 3): 'high'" in msg and "c (line 4)" in msg and "d (line 5)" in msg
    j = tmp_path / "s.json"
    j.write_text('{"a": 0.2, "b": NaN, "c": "x"}')
    with pytest.raises(EvaluationError, match="2 non-numeric or NaN"):
        read_scores(j)


def test_bad_labels_and_columns(tmp_path: Path) -> None:
    p = tmp_path / "l.csv"
    p.write_text("id,label\na,0\nb,maybe\n")
    with pytest.raises(EvaluationError, match="b \\(line 3\\): 'maybe'"):
        read_labels(p)
    q = tmp_path / "l2.csv"
    q.write_text("name,label\na,0\n")
    with pytest.raises(EvaluationError, match="needs an id column"):
        read_labels(q)
    (tmp_path / "x.txt").write_text("a 0.5")
    with pytest.raises(EvaluationError, match="unsupported file type .txt"):
        read_scores(tmp_path / "x.txt")


def test_cli_scores_side_by_side_report(tmp_path: Path, capsys) -> None:
    lab, y = _labels(tmp_path)
    rng = np.random.default_rng(1)
    good = y + rng.normal(0, 0.4, y.size)
    bad = rng.random(y.size)
    (tmp_path / "good.csv").write_text("id,score\n" + "\n".join(f"img{i}.png,{v}" for i, v in enumerate(good)))
    (tmp_path / "bad.json").write_text(json.dumps({f"img{i}.png": v for i, v in enumerate(bad)}))
    rc = main(["eval", "scores", "--labels", str(lab), "--scores", str(tmp_path / "good.csv"), "--scores",
               str(tmp_path / "bad.json"), "--bootstrap", "50", "--report", str(tmp_path / "rep")])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.count("auroc") == 2 and "report:" in out
    data = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert data["scores"]["good"]["all"]["metrics"]["auroc"]["value"] == pytest.approx(roc_auc_score(y, good))
    assert set(data["scores"]["good"]) >= {"all", "sd", "dalle"}
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "data:image/png;base64," in html and "good" in html and "bad" in html


def test_cli_scores_bad_input_is_one_line_error(tmp_path: Path, capsys) -> None:
    lab, _ = _labels(tmp_path, 4)
    (tmp_path / "s.json").write_text(json.dumps({"img0.png": 0.1, "zzz.png": 0.3}))
    rc = main(["eval", "scores", "--labels", str(lab), "--scores", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert rc == 1 and "zzz.png" in err and "img3.png" in err and "Traceback" not in err


def test_cli_calibrate_then_apply(tmp_path: Path) -> None:
    lab, y = _labels(tmp_path, 200)
    raw = np.random.default_rng(2).normal(3.0 * (2 * y - 1), 2.0)
    (tmp_path / "val.csv").write_text("id,score\n" + "\n".join(f"img{i}.png,{v}" for i, v in enumerate(raw)))
    out = tmp_path / "cal.json"
    assert main(["eval", "calibrate", "--labels", str(lab), "--scores", str(tmp_path / "val.csv"),
                 "--method", "isotonic", "--target-fpr", "0.05", "--out", str(out)]) == 0
    cal = Calibrator.load(out)
    p = cal.transform(raw)
    assert np.mean(p[y == 0] >= cal.params["threshold"]) <= 0.05
    assert np.all(np.diff(p[np.argsort(raw)]) >= 0)  # monotone


def test_malformed_rows_are_errors_not_silently_read(tmp_path: Path) -> None:
    # an unquoted comma in the file name 'b,1' shifts the columns: 'b' must not be scored 1
    p = tmp_path / "s.csv"
    p.write_text("id,score\na.png,0.1\nb,1,0.9\nc.png,0.3\n")
    with pytest.raises(EvaluationError, match=r"s\.csv.*line 3.*3 fields.*header has 2"):
        read_scores(p)
    q = tmp_path / "l.csv"
    q.write_text("id,label\na,0\nb,1,extra\n")
    with pytest.raises(EvaluationError, match=r"l\.csv.*line 3"):
        read_labels(q)
    e = tmp_path / "e.csv"
    e.write_text("id,score\na,0.1\n,0.7\n")
    with pytest.raises(EvaluationError, match=r"e\.csv.*line 3.*empty id"):
        read_scores(e)
    for name, text in (("rows.json", "[0.5, 0.7]"), ("rows.jsonl", '{"id": "a", "score": 0.1}\n[1, 2]\n')):
        (tmp_path / name).write_text(text)
        with pytest.raises(EvaluationError, match=rf"{name}.*line \d.*not an object"):
            read_scores(tmp_path / name)


def test_cli_calibrate_fits_the_raw_score_of_a_detect_csv(tmp_path: Path) -> None:
    # `deepsift detect` CSV has both a probability and a raw score; a saved calibration is applied
    # to the raw score (eval generators --calibration), so it must be fitted on the raw score too
    lab, y = _labels(tmp_path, 200)
    raw = np.random.default_rng(3).normal(2.0 * (2 * y - 1), 2.0)
    prob = 1 / (1 + np.exp(-4.0 * raw))
    (tmp_path / "det.csv").write_text("source,verdict,label,probability,score\n" + "\n".join(
        f"img{i}.png,x,{int(p >= 0.5)},{p},{r}" for i, (p, r) in enumerate(zip(prob, raw))))
    out = tmp_path / "cal.json"
    assert main(["eval", "calibrate", "--labels", str(lab), "--scores", str(tmp_path / "det.csv"),
                 "--out", str(out)]) == 0
    expected = Calibrator("platt").fit(y, raw)
    np.testing.assert_allclose(Calibrator.load(out).transform(raw), expected.transform(raw), atol=1e-6)


def test_cli_calibrate_on_separable_scores_prints_a_readable_mid_gap_threshold(tmp_path: Path, capsys) -> None:
    lab, y = _labels(tmp_path, 60)
    raw = np.where(y == 1, 5.0, -5.0) + np.random.default_rng(4).uniform(-1, 1, y.size)  # fully separable
    (tmp_path / "val.csv").write_text("id,score\n" + "\n".join(f"img{i}.png,{v}" for i, v in enumerate(raw)))
    out = tmp_path / "cal.json"
    assert main(["eval", "calibrate", "--labels", str(lab), "--scores", str(tmp_path / "val.csv"),
                 "--method", "isotonic", "--target-fpr", "0.05", "--out", str(out)]) == 0
    t = Calibrator.load(out).params["threshold"]
    assert 0.01 < t < 0.99  # mid-gap, not a denormal just above the reals' 0.0
    assert f"threshold {t:g} for FPR" in capsys.readouterr().out and "e-" not in f"{t:g}"
