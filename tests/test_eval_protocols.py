"""End-to-end protocols on datasets built on disk: folders, D3 test layout, parquet shards."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from evalkit import d3_test_dataset, folders_dataset, tiny_heads, tiny_model, write_class  # noqa: E402

from deepsift.cli import main  # noqa: E402
from deepsift.evaluate.datasets import Sample, load_eval_set  # noqa: E402
from deepsift.evaluate.detectors import register_detector_loader  # noqa: E402
from deepsift.evaluate.protocols import leave_one_out  # noqa: E402
from deepsift.evaluate.robustness import robustness_sweep  # noqa: E402
from deepsift.evaluate.scoring import head_views, score_samples  # noqa: E402
from deepsift.exceptions import DataError  # noqa: E402
from deepsift.model.detector import Detector, Prediction  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("evalenv")
    model = tiny_model(root / "model")
    folders_dataset(root / "train", 12, seed=1)
    heads = tiny_heads(model, root / "train", root / "heads")
    test = folders_dataset(root / "test", 6, seed=2)
    return SimpleNamespace(root=root, model=model, heads=heads, test=test,
                           det=["--model", str(model), "--heads", str(heads)])


def _json(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_folders_layout_end_to_end_matches_direct_predictions(env, tmp_path: Path) -> None:
    rep = tmp_path / "rep"
    assert main(["eval", "generators", str(env.test), *env.det, "--classifier", "linear", "--classifier", "knn",
                 "--bootstrap", "30", "--unsure", "0.4,0.6", "--report", str(rep)]) == 0
    data = _json(rep)
    assert data["detectors"] == ["CoDE/linear", "CoDE/knn"]
    rows = data["per_generator"]["CoDE/linear"]["all"]
    assert set(rows) == {"all", "gen_a", "gen_b"}
    assert rows["gen_a"]["n_real"] == 6 and rows["gen_a"]["n_fake"] == 6 and rows["all"]["n_fake"] == 12
    # the harness's AUROC equals one computed from the detector's own predictions
    ev = load_eval_set(env.test)
    det = Detector.load(env.model, heads=env.heads, classifier="linear")
    preds = det.predict([s.source for s in ev.samples])
    y = [s.label for s in ev.samples]
    assert rows["all"]["metrics"]["auroc"]["value"] == pytest.approx(roc_auc_score(y, [p.probability for p in preds]))
    assert "ci95" in rows["all"]["metrics"]["auroc"]
    assert set(data["unsure"]) == {"CoDE/linear", "CoDE/knn"}
    html = (rep / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4  # ROC/PR, two histograms, embedding map
    md = (rep / "report.md").read_text()
    assert "| gen_a | CoDE/knn |" in md and (rep / "plots" / "embedding_map.png").stat().st_size > 1000


def test_d3_test_layout_reports_each_split(env, tmp_path: Path) -> None:
    d3 = d3_test_dataset(tmp_path / "d3", n=4)
    rep = tmp_path / "rep"
    assert main(["eval", "generators", str(d3), *env.det, "--report", str(rep)]) == 0
    res = _json(rep)["per_generator"]["CoDE/linear"]
    assert set(res) == {"all", "augm", "no_augm"}
    assert res["augm"]["gen_1"]["n_real"] == 4 and res["all"]["all"]["n_fake"] == 16
    assert _json(rep)["dataset"]["layout"] == "d3-test"


def test_parquet_shards_with_real_folder(env, tmp_path: Path) -> None:
    from deepsift.data.schema import D3Record, Generation
    from deepsift.data.writer import write_shard

    def png(folder: Path, i: int) -> bytes:
        return (folder / f"img_{i:03d}.png").read_bytes()

    recs = [D3Record(f"r{i}", "p", None, None, f"http://x/{i}.jpg",
                     [Generation("sd-1.4", 64, 64, 20, f"a{i}.png", png(env.test / "gen_a", i)),
                      Generation("if-i-xl", 64, 64, 20, f"b{i}.png", png(env.test / "gen_b", i))])
            for i in range(6)]
    shards = tmp_path / "shards"
    write_shard(recs, shards / "test-00000.parquet", n_generators=2)
    rep = tmp_path / "rep"
    assert main(["eval", "generators", str(shards), "--real", str(env.test / "real"), *env.det,
                 "--report", str(rep)]) == 0
    res = _json(rep)["per_generator"]["CoDE/linear"]["all"]
    assert set(res) == {"all", "sd-1.4", "if-i-xl"} and res["sd-1.4"]["n_real"] == 6
    with pytest.raises(DataError, match="the real option"):
        load_eval_set(shards)
    assert main(["eval", "generators", str(shards), *env.det]) == 2  # on the command line: said before any work


def twin_generator_world() -> tuple[list, list, SimpleNamespace]:
    """30 embeddings each of reals and three generators (gen_a and gen_b twins, gen_c opposite), and a detector
    stand-in that only carries heads (the protocols are given the embeddings)."""
    rng = np.random.default_rng(0)
    d = 8
    e0 = np.eye(d)[0]
    centres = {"real": np.zeros(d), "gen_a": 3 * e0, "gen_b": 3 * e0, "gen_c": -3 * e0}
    samples, emb = [], []
    for g, mu in centres.items():
        for i in range(30):
            samples.append(Sample(f"{g}/{i}", f"{g}/{i}", int(g != "real"), g))
            emb.append(mu + rng.normal(0, 0.5, d))
    return samples, emb, SimpleNamespace(embed_iter=None, classify=None, heads={}, backbone=None)


def test_leave_one_out_holds_the_generator_out() -> None:
    samples, emb, fake_det = twin_generator_world()
    res = leave_one_out(fake_det, samples, kinds=("linear", "knn"), embeddings=np.array(emb, np.float32))
    # 1-NN: a held-out gen_a is caught through its twin gen_b (and vice versa)
    assert res["knn"]["gen_a"]["auroc"] > 0.95 and res["knn"]["gen_b"]["auroc"] > 0.95
    for kind in ("linear", "knn"):
        # gen_c lies on the far side of the reals from every generator seen in training: if it
        # leaked into training it would be caught; held out, it looks more real than the reals
        assert res[kind]["gen_c"]["auroc"] < 0.3
        assert res[kind]["gen_c"].n_real == 15 and res[kind]["gen_c"].n_fake == 30


def test_logo_cli(env, tmp_path: Path, capsys) -> None:
    rep = tmp_path / "rep"
    assert main(["eval", "logo", str(env.test), *env.det, "--report", str(rep)]) == 0
    assert set(_json(rep)["leave_one_out"]["linear"]) == {"gen_a", "gen_b"}
    assert "unseen-generator AUROC" in capsys.readouterr().out


def test_robustness_sweep_reuses_clean_embeddings_and_is_deterministic(env, monkeypatch) -> None:
    det = Detector.load(env.model, heads=env.heads, classifier="linear")
    views = head_views(det, ["linear", "knn"])
    samples = load_eval_set(env.test).samples
    cache: dict = {}
    clean = score_samples(views, samples, embeddings=cache)
    calls = []
    original = Detector.embed_iter
    monkeypatch.setattr(Detector, "embed_iter", lambda self, src: calls.append(1) or original(self, src))
    a = robustness_sweep(views, samples, families=["jpeg", "blur"], clean_cache=cache, seed=3)
    assert len(calls) == 6  # one forward per perturbation, shared by both heads, none for clean
    assert a.clean["linear"] == pytest.approx(roc_auc_score([s.label for s in samples], clean["linear"].scores))
    assert [p["strength"] for p in a.curves["jpeg"]["points"]] == [95, 75, 50, 30]
    assert set(a.curves) == {"jpeg", "blur"} and a.timing["forward_s"] > 0
    b = robustness_sweep(views, samples, families=["noise"], seed=3)
    c = robustness_sweep(views, samples, families=["noise"], seed=3)
    assert b.curves == c.curves


def test_robustness_cli_report(env, tmp_path: Path) -> None:
    rep = tmp_path / "rep"
    assert main(["eval", "robustness", str(env.test), *env.det, "--transform", "resize", "--transform", "random_crop",
                 "--metric", "accuracy", "--report", str(rep)]) == 0
    r = _json(rep)["robustness"]
    assert r["metric"] == "accuracy" and len(r["curves"]["resize"]["points"]) == 3
    assert r["timing"]["overhead_ratio"] >= 1.0
    assert (rep / "plots" / "robustness.png").exists()
    assert main(["eval", "robustness", str(env.test), *env.det, "--transform", "vhs"]) == 2


def test_fpr_on_real_photos(env, tmp_path: Path) -> None:
    rep = tmp_path / "rep"
    (tmp_path / "real").mkdir()
    for p in (env.test / "real").iterdir():
        (tmp_path / "real" / p.name).write_bytes(p.read_bytes())
    (tmp_path / "real" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    # one unreadable photo: the rest are scored, the command says so and exits 3 (done, some inputs failed)
    assert main(["eval", "fpr", str(tmp_path / "real"), *env.det, "--bootstrap", "50", "--report", str(rep)]) == 3
    r = _json(rep)["fpr"]["CoDE/linear"]
    det = Detector.load(env.model, heads=env.heads)
    preds = det.predict(sorted(str(p) for p in (env.test / "real").iterdir()))
    assert r["n"] == 6 and r["errors"] == 1
    assert r["fpr"] == pytest.approx(np.mean([p.probability >= 0.5 for p in preds]))
    assert _json(rep)["errors"]["CoDE/linear"][0]["id"] == "broken.jpg"


def test_target_fpr_and_calibration_from_validation(env, tmp_path: Path) -> None:
    val = folders_dataset(tmp_path / "val", 10, seed=7)
    rep = tmp_path / "rep"
    assert main(["eval", "generators", str(env.test), *env.det, "--val", str(val), "--calibrate", "platt",
                 "--target-fpr", "0.1", "--report", str(rep)]) == 0
    op = _json(rep)["operating_point"]
    assert op["calibration"]["CoDE/linear"]["method"] == "platt"
    t = op["thresholds"]["CoDE/linear"]
    assert _json(rep)["per_generator"]["CoDE/linear"]["all"]["all"]["threshold"] == pytest.approx(t)
    assert main(["eval", "generators", str(env.test), *env.det, "--target-fpr", "0.1"]) == 2


class BrightnessDetector:
    """A toy detector-like object: 'fake' score = pixel standard deviation (grids are busier)."""

    def predict(self, sources):
        out = []
        for s in sources:
            arr = np.asarray(Image.open(s).convert("L"), np.float64)
            p = float(min(arr.std() / 100.0, 1.0))
            out.append(Prediction(str(s), int(p >= 0.5), p, p, "toy"))
        return out


def test_any_detector_like_compares_side_by_side(env, tmp_path: Path) -> None:
    register_detector_loader("toy", lambda arg: BrightnessDetector())
    rep = tmp_path / "rep"
    assert main(["eval", "generators", str(env.test), *env.det, "--detector", "busy=toy:x", "--report", str(rep)]) == 0
    res = _json(rep)["per_generator"]
    assert set(res) == {"CoDE/linear", "busy"}
    assert res["busy"]["all"]["all"]["metrics"]["auroc"]["value"] > 0.9
    assert main(["eval", "generators", str(env.test), "--detector", "nope:x"]) == 2


def test_unknown_layout_lists_accepted_ones(tmp_path: Path, capsys) -> None:
    write_class(tmp_path / "cats", 2, False, 0)
    write_class(tmp_path / "dogs", 2, True, 0)
    with pytest.raises(DataError) as err:
        load_eval_set(tmp_path)
    msg = str(err.value)
    assert "unknown dataset layout" in msg and "cats, dogs" in msg
    for layout in ("d3-test", "folders", "parquet"):
        assert layout in msg
    assert main(["eval", "generators", str(tmp_path), "--model", "owner/x"]) == 1
    assert "Accepted layouts" in capsys.readouterr().err


def test_empty_generator_folder(tmp_path: Path) -> None:
    folders_dataset(tmp_path, 2)
    (tmp_path / "gen_empty").mkdir()
    (tmp_path / "gen_empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="gen_empty.*contains no images"):
        load_eval_set(tmp_path)
    d3 = d3_test_dataset(tmp_path / "d3", 2)
    for p in (d3 / "augm" / "real").iterdir():
        p.unlink()
    with pytest.raises(DataError, match="augm/real: real folder 'real' contains no images"):
        load_eval_set(d3)


def test_baseline_and_code_side_by_side_in_one_report(env, tmp_path: Path) -> None:
    """A baseline trained with one command is evaluated by the same harness as CoDE."""
    run = tmp_path / "freq"
    assert main(["baseline", "train", "frequency", "--real", str(env.root / "train" / "real"),
                 "--fake", str(env.root / "train" / "gen_a"), "--fake", str(env.root / "train" / "gen_b"),
                 "--out", str(run)]) == 0
    rep = tmp_path / "rep"
    assert main(["eval", "generators", str(env.test), *env.det, "--detector", f"freq=frequency:{run}",
                 "--report", str(rep)]) == 0
    res = _json(rep)["per_generator"]
    assert set(res) == {"CoDE/linear", "freq"}
    assert res["freq"]["all"]["all"]["n_fake"] == 12
    assert res["freq"]["all"]["all"]["metrics"]["auroc"]["value"] > 0.8  # the grid artefact is a frequency cue
    assert "freq" in (rep / "report.md").read_text()


def test_target_fpr_threshold_is_chosen_on_calibrated_validation_scores(env, tmp_path: Path) -> None:
    # with a saved --calibration, the test scores are calibrated probabilities: the target-FPR
    # threshold must be picked on the validation scores mapped the same way
    from deepsift.evaluate.calibration import Calibrator, threshold_for_fpr

    val = folders_dataset(tmp_path / "val", 10, seed=7)
    cal = Calibrator("platt", {"a": 0.05, "b": -1.0})
    cal.save(tmp_path / "cal.json")
    rep = tmp_path / "rep"
    assert main(["eval", "generators", str(env.test), *env.det, "--calibration", str(tmp_path / "cal.json"),
                 "--val", str(val), "--target-fpr", "0.1", "--report", str(rep)]) == 0
    ev = load_eval_set(val)
    preds = Detector.load(env.model, heads=env.heads, classifier="linear").predict([s.source for s in ev.samples])
    raw = np.array([p.score for p in preds])
    expected = threshold_for_fpr([s.label for s in ev.samples], cal.transform(raw), 0.1)
    assert _json(rep)["operating_point"]["thresholds"]["CoDE/linear"] == pytest.approx(expected)


def test_robustness_cli_bootstrap_gives_intervals(env, tmp_path: Path) -> None:
    # --bootstrap is offered by every eval command; the robustness sweep must honour it too
    rep = tmp_path / "rep"
    assert main(["eval", "robustness", str(env.test), *env.det, "--transform", "jpeg", "--metric", "accuracy",
                 "--bootstrap", "40", "--report", str(rep)]) == 0
    r = _json(rep)["robustness"]
    lo, hi = r["clean_ci95"]["CoDE/linear"]
    assert lo <= r["clean"]["CoDE/linear"] <= hi
    for p in r["curves"]["jpeg"]["points"]:
        lo, hi = p["ci95"]["CoDE/linear"]
        assert lo <= p["values"]["CoDE/linear"] <= hi


def test_logo_refuses_detectors_it_would_silently_drop(env, capsys) -> None:
    # eval logo runs one detector (CoDE heads, or one --detector): an extra one must not vanish
    register_detector_loader("toy", lambda arg: BrightnessDetector())
    assert main(["eval", "logo", str(env.test), *env.det, "--detector", "busy=toy:x"]) == 2
    assert "busy" in capsys.readouterr().err


def test_leave_one_out_keeps_d3_twins_on_one_side(monkeypatch) -> None:
    # the D3 test layout holds every real photo twice (augm/real/x and no_augm/real/x): the
    # real train/test split must keep both copies on the same side, or test reals leak
    from deepsift.model import heads

    rng = np.random.default_rng(0)
    samples, emb = [], []
    photos = {g: rng.normal(0, 1, (10, 6)) for g in ("real", "gen_0", "gen_1")}
    for split in ("augm", "no_augm"):
        for g, vecs in photos.items():
            for i, v in enumerate(vecs):
                samples.append(Sample(f"{split}/{g}/{i}.png", "-", int(g != "real"), g, split))
                emb.append(v)  # twins share the embedding: a leak is visible as a shared row
    seen: dict[str, list[np.ndarray]] = {"fit": [], "test": []}
    make = heads.make_head

    def spying(kind):
        head = make(kind)
        fit, dec = head.fit, head.decision_function
        head.fit = lambda X, y: seen["fit"].append(np.asarray(X)) or fit(X, y)
        head.decision_function = lambda X: seen["test"].append(np.asarray(X)) or dec(X)
        return head

    monkeypatch.setattr(heads, "make_head", spying)
    fake_det = SimpleNamespace(embed_iter=None, classify=None, heads={}, backbone=None)
    for seed in range(3):
        leave_one_out(fake_det, samples, seed=seed, embeddings=np.array(emb, np.float32))
    real_rows = {tuple(v) for v in np.asarray(photos["real"], np.float32)}
    for X_fit, X_test in zip(seen["fit"], seen["test"]):
        train_reals = {tuple(r) for r in X_fit} & real_rows
        test_reals = {tuple(r) for r in X_test} & real_rows
        assert train_reals and test_reals and not train_reals & test_reals


class FittingBrightness(BrightnessDetector):
    """The toy detector with the ``fit(real, fake)`` leave-one-out needs (records what it saw)."""

    def __init__(self) -> None:
        self.fits: list[tuple[int, int]] = []

    def fit(self, real, fake):
        self.fits.append((len(real), len(fake)))
        return self


def test_logo_keys_a_non_code_detector_by_its_display_name(env, tmp_path: Path) -> None:
    det = FittingBrightness()
    register_detector_loader("toyfit", lambda arg: det)
    rep = tmp_path / "rep"
    assert main(["eval", "logo", str(env.test), "--detector", "busy=toyfit:x", "--report", str(rep)]) == 0
    res = _json(rep)["leave_one_out"]
    assert set(res) == {"busy"} and set(res["busy"]) == {"gen_a", "gen_b"}
    # refitted per left-out generator (2), then unseen and seen per generator for the mean drop (2 x 2)
    assert len(det.fits) == 2 + 2 * 2 and all(n_real > 0 and n_fake > 0 for n_real, n_fake in det.fits)
    samples = load_eval_set(env.test).samples
    direct = leave_one_out(FittingBrightness(), samples, name="busy")
    assert set(direct) == {"busy"}
    assert direct["busy"]["gen_a"]["auroc"] == res["busy"]["gen_a"]["metrics"]["auroc"]["value"]


class RecordingDetector(BrightnessDetector):
    """Records every source each fit and predict sees."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list, list]] = []

    def fit(self, real, fake):
        self.calls.append(("fit", list(real), list(fake)))
        return self

    def predict(self, sources):
        sources = list(sources)
        self.calls.append(("predict", sources, []))
        return super().predict(sources)


def test_logo_never_trains_a_non_code_detector_on_the_held_out_generator(env) -> None:
    samples = load_eval_set(env.test).samples
    det = RecordingDetector()
    res = leave_one_out(det, samples, name="rec", seed=3)
    gen_of = {s.source: s.generator for s in samples}
    fits = [c for c in det.calls if c[0] == "fit"]
    predicts = [c for c in det.calls if c[0] == "predict"]
    assert [g for g in res["rec"]] == ["gen_a", "gen_b"] and len(fits) == len(predicts) == 2
    for held_out, (_, real, fake), (_, tested, _) in zip(res["rec"], fits, predicts):
        assert {gen_of[s] for s in fake} == {"gen_a", "gen_b"} - {held_out}  # every other generator, never G
        assert {gen_of[s] for s in real} == {"real"}
        assert {gen_of[s] for s in tested} == {"real", held_out}
        assert not set(real) & set(tested)  # the real test images were not trained on either
        assert sum(gen_of[s] == held_out for s in tested) == sum(g == held_out for g in gen_of.values())


def test_logo_needs_no_heads_folder(env, tmp_path: Path, capsys) -> None:
    """eval logo fits its own heads per fold: a model without any heads folder is enough."""
    import shutil

    bare = tmp_path / "bare_model"
    shutil.copytree(env.model, bare)
    shutil.rmtree(bare / "heads", ignore_errors=True)
    rep = tmp_path / "rep"
    assert main(["eval", "logo", str(env.test), "--model", str(bare), "--classifier", "linear", "--classifier", "knn",
                 "--report", str(rep)]) == 0
    assert set(_json(rep)["leave_one_out"]) == {"linear", "knn"}
    assert "--heads" not in capsys.readouterr().out
    import subprocess

    helptext = subprocess.run([sys.executable, "-m", "deepsift", "eval", "logo", "--help"], capture_output=True,
                              text=True, check=True).stdout
    assert "--heads DIR           ignored: this protocol fits its own heads" in helptext  # never asked for


def test_seen_vs_unseen_compares_the_same_images_and_measures_the_drop() -> None:
    from deepsift.evaluate.seen import seen_vs_unseen

    samples, emb, fake_det = twin_generator_world()
    res = seen_vs_unseen(fake_det, samples, kinds=("knn",), embeddings=np.array(emb, np.float32))["knn"]
    c = res["per_generator"]["gen_c"]
    # half of gen_c in training: 1-NN finds its twins; left out, gen_c looks more real than the reals
    assert c["seen"] > 0.95 and c["unseen"] < 0.3 and c["drop"] == pytest.approx(c["seen"] - c["unseen"])
    assert c["n_fake"] == 15  # the other half, the same test images on both sides
    per = res["per_generator"].values()
    assert res["mean_drop"] == pytest.approx(np.mean([r["drop"] for r in per])) and res["mean_drop"] > 0.2
    assert res["skipped"] == []


def test_logo_report_carries_the_mean_drop_without_a_control(env, tmp_path: Path, capsys) -> None:
    rep = tmp_path / "rep"
    assert main(["eval", "logo", str(env.test), *env.det, "--report", str(rep)]) == 0
    out = capsys.readouterr().out
    sv = _json(rep)["seen_vs_unseen"]["linear"]
    assert set(sv["per_generator"]) == {"gen_a", "gen_b"} and sv["mean_drop"] is not None
    assert sv["mean_drop"] == pytest.approx(sv["mean_seen"] - sv["mean_unseen"])
    line = f"mean drop {sv['mean_drop']:+.3f} over 2 generator(s)"
    assert line in out
    md = (rep / "report.md").read_text()
    glance = md[md.index("## At a glance"):md.index("## Leave-one-generator-out")]
    assert line in glance and "## " not in glance[3:].split("| generator")[0]  # on the first screen, before the table
    assert "### Seen versus unseen" in md


def test_seen_vs_unseen_never_trains_on_the_test_half(env) -> None:
    from deepsift.evaluate.seen import seen_vs_unseen

    samples = load_eval_set(env.test).samples
    det = RecordingDetector()
    res = seen_vs_unseen(det, samples, name="rec", seed=3)["rec"]
    gen_of = {s.source: s.generator for s in samples}
    fits = [c for c in det.calls if c[0] == "fit"]
    predicts = [c for c in det.calls if c[0] == "predict"]
    assert set(res["per_generator"]) == {"gen_a", "gen_b"} and len(fits) == len(predicts) == 4
    for g, k in (("gen_a", 0), ("gen_b", 2)):
        (_, _, unseen_fake), (_, _, seen_fake) = fits[k], fits[k + 1]
        assert predicts[k][1] == predicts[k + 1][1]  # the same test images on both sides
        tested = set(predicts[k][1])
        assert g not in {gen_of[s] for s in unseen_fake}
        seen_g = {s for s in seen_fake if gen_of[s] == g}
        assert seen_g and not seen_g & tested and res["per_generator"][g]["n_fake"] == sum(gen_of[s] == g for s in tested)
