"""deepsift adapt: a new generator measured before and after, heads refitted, forgetting measured, a model
folder with its card that loads in detect; resumable at every step; refused when there is too little to measure."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import checker_image, smooth_image
from deepsift.model.card import head_generators, read_card
from deepsift.adapt.runner import run_adapt
from deepsift.adapt.plan import STEPS, AdaptPlan
from deepsift.cli import main
from deepsift.exceptions import DataError, UsageError


def stripes(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """The 'new generator': a smooth field with strong vertical stripes (unlike gen_a's checkerboard)."""
    base = smooth_image(rng, w, h).astype(np.int16)
    xx = np.arange(w)[None, :, None]
    return np.clip(base + ((xx // 3) % 2) * 90 - 45, 0, 255).astype(np.uint8)


def _save(folder, maker, n, rng, groups=1):
    for i in range(n):
        d = folder / f"p{i % groups}" if groups > 1 else folder
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(maker(rng, 96, 96)).save(d / f"{i:03d}.png")


@pytest.fixture(scope="module")
def world(code_model_dir, tmp_path_factory):
    """A base model with heads fitted on gen_a; the known data (real + gen_a); a new generator in 6 prompt folders."""
    root = tmp_path_factory.mktemp("adapt")
    rng = np.random.default_rng(5)
    _save(root / "known" / "real", smooth_image, 24, rng)
    _save(root / "known" / "fake" / "gen_a", checker_image, 24, rng)
    _save(root / "new", stripes, 30, rng, groups=6)
    base = root / "base"
    shutil.copytree(code_model_dir, base)
    assert main(["heads", "fit", "--real", str(root / "known" / "real"), "--fake", str(root / "known" / "fake"),
                 "--model", str(base), "--out", str(base / "heads"), "--classifier", "linear",
                 "--classifier", "knn"]) == 0
    return root


def plan_for(world, out, **kw) -> AdaptPlan:
    return AdaptPlan(model=str(world / "base"), generator="stripes", images=str(world / "new"),
                     data=str(world / "known"), out=str(out), bootstrap=50, workers=2, **kw)


@pytest.fixture(scope="module")
def adapted(world):
    out = world / "run"
    rc = main(["adapt", "--model", str(world / "base"), "--data", str(world / "known"),
               "--new", f"stripes={world / 'new'}", "--out", str(out), "--bootstrap", "50", "--workers", "2"])
    assert rc == 0
    return out


def test_the_loop_measures_before_and_after_and_forgetting(adapted):
    steps = {s: json.loads(next((adapted / "steps").glob(f"*-{s}.json")).read_text()) for s in STEPS}
    before, after = steps["before"]["figures"], steps["after"]["figures"]
    assert set(before) == set(after) == {"gen_a", "stripes"}
    assert after["stripes"]["n_fake"] >= 8 and after["stripes"]["n_real"] >= 1
    assert after["stripes"]["auroc"]["value"] > before["stripes"]["auroc"]["value"]  # it learned the new one
    assert "ci95" in after["stripes"]["auroc"]
    assert set(steps["after"]["forgetting"]) == {"gen_a"}
    # refitting the heads reached the target: the fine-tune route is not run, and the model says which route
    assert steps["after"]["method"] == "refit heads" and steps["fine-tune"]["skipped"]
    assert steps["write-model"]["route"] == "refit heads" and steps["write-model"]["target_reached"]
    drop = before["gen_a"]["auroc"]["value"] - after["gen_a"]["auroc"]["value"]
    assert steps["after"]["forgetting"]["gen_a"] == pytest.approx(drop)
    # no image is both fitted and measured; the new generator's prompt folders stay on one side
    rows = steps["collect"]["samples"]
    sides = {}
    for r in rows:
        if r["generator"] == "stripes":
            sides.setdefault(r["group"], set()).add(r["side"])
    assert all(len(s) == 1 for s in sides.values()) and {"fit", "test"} <= set().union(*sides.values())


def test_the_model_folder_loads_in_detect_and_its_card_matches_a_separate_evaluation(adapted, capsys):
    from deepsift.evaluate.metrics import compute_metrics
    from deepsift.model.detector import Detector

    model = adapted / "model"
    meta, body = read_card(model)
    assert meta["base_model"].endswith("base") and meta["generators_seen"] == head_generators(model)
    assert head_generators(model) == ["gen_a", "stripes"]
    rows = json.loads(next((adapted / "steps").glob("*-collect.json")).read_text())["samples"]
    test = [r for r in rows if r["side"] == "test" and r["generator"] in ("real", "stripes")]
    det = Detector.load(model)  # the backbone's fingerprint matches the refitted heads
    probs = np.array([p.probability for p in det.predict_iter([r["source"] for r in test])])
    auroc = compute_metrics(np.array([r["label"] for r in test]), probs)["auroc"]
    card_auroc = next(m["value"] for res in meta["model-index"][0]["results"] if res["dataset"]["type"] == "stripes"
                      for m in res["metrics"] if m["type"] == "roc_auc")
    assert card_auroc == pytest.approx(auroc, abs=1e-9)
    assert main(["detect", str(test[0]["source"]), "--model", str(model), "--format", "jsonl"]) == 0
    capsys.readouterr()
    assert main(["model", "info", str(model)]) == 0
    out = capsys.readouterr().out
    assert "generators seen: gen_a, stripes" in out and "stripes: AUROC" in out


def test_a_run_interrupted_after_each_step_resumes_to_the_same_result(world, adapted, tmp_path):
    """Stopped after every step in turn (and once mid-write), each resume keeps what was done."""
    plan = plan_for(world, tmp_path / "r")
    run = run_adapt(plan, stop_after="collect", say=lambda _: None)
    with pytest.raises(UsageError, match="resume it"):
        run_adapt(plan, say=lambda _: None)  # a started run is never silently redone or mixed
    (run.steps / "03-embed.tmp").write_text("{half")  # killed while writing the embed step's result
    for done, stop in zip(STEPS[1:], STEPS[2:]):
        said: list[str] = []
        run_adapt(plan, resume=True, say=said.append, stop_after=stop)
        assert f"{done}: done earlier (kept)" in said
        assert f"{stop}: done" in said or f"{stop}: skipped (" in said[-1]  # the fine-tune route is not needed here
    ref = json.loads(next((adapted / "steps").glob("*-after.json")).read_text())
    got = json.loads(next((tmp_path / "r" / "steps").glob("*-after.json")).read_text())
    assert got["figures"] == ref["figures"] and got["forgetting"] == ref["forgetting"]
    assert head_generators(tmp_path / "r" / "model") == ["gen_a", "stripes"]


def test_other_inputs_in_the_same_folder_are_refused(world, tmp_path):
    run_adapt(plan_for(world, tmp_path / "r"), stop_after="collect", say=lambda _: None)
    with pytest.raises(UsageError, match="other inputs"):
        run_adapt(plan_for(world, tmp_path / "r", target_auroc=0.5), resume=True, say=lambda _: None)


def test_too_few_new_images_are_refused_before_any_work(world, tmp_path, capsys):
    few = tmp_path / "few"
    _save(few, stripes, 5, np.random.default_rng(0))
    with pytest.raises(DataError, match="too few images"):
        run_adapt(AdaptPlan(model=str(world / "base"), generator="stripes", images=str(few),
                            data=str(world / "known"), out=str(tmp_path / "o")), say=lambda _: None)
    assert main(["adapt", "--model", str(world / "base"), "--data", str(world / "known"), "--new", f"stripes={few}",
                 "--out", str(tmp_path / "o2")]) == 1
    assert "too few images" in capsys.readouterr().err


def test_a_known_generator_name_is_refused_and_dry_run_writes_nothing(world, tmp_path, capsys):
    with pytest.raises(UsageError, match="already a generator"):
        run_adapt(AdaptPlan(model=str(world / "base"), generator="gen_a", images=str(world / "new"),
                            data=str(world / "known"), out=str(tmp_path / "o")), say=lambda _: None)
    assert main(["adapt", "--data", str(world / "known"), "--new", f"x={world / 'new'}", "--out",
                 str(tmp_path / "dry"), "--dry-run"]) == 0
    assert "refit-heads" in capsys.readouterr().out and not (tmp_path / "dry").exists()


def test_sides_keep_groups_together_and_both_sides_get_some():
    from deepsift.adapt.loop import assign_sides

    rows = [{"id": f"g/{i}", "generator": "g", "group": f"p{i % 3}"} for i in range(9)]
    rows += [{"id": f"real/{i}", "generator": "real", "group": None} for i in range(10)]
    assign_sides(rows, seed=0, test_fraction=0.5)
    by_group: dict = {}
    for r in rows[:9]:
        by_group.setdefault(r["group"], set()).add(r["side"])
    assert all(len(s) == 1 for s in by_group.values())  # a prompt folder stays on one side
    assert {"fit", "test"} == set().union(*by_group.values())  # 3 groups: both sides get one
    assert sum(r["side"] == "test" for r in rows[9:]) == 5  # 10 reals alone: half held out
    again = [dict(r) for r in rows]
    assign_sides(again, seed=0, test_fraction=0.5)
    assert [r["side"] for r in again] == [r["side"] for r in rows]  # deterministic


def test_the_demo_says_which_generators_the_loaded_model_has_seen(adapted, tmp_path):
    """The demo page lists the model card's generators_seen (an adapted model: the known one and the new one)."""
    from demokit import demo_settings
    from fastapi.testclient import TestClient

    from deepsift.server.app import create_app

    model = adapted / "model"
    app = create_app(demo_settings(f"sqlite:///{tmp_path / 'd.db'}", tmp_path / "data", model, model / "heads"))
    try:
        with TestClient(app, base_url="http://127.0.0.1") as client:
            page = client.get("/").text
    finally:
        app.state.db.dispose()
    assert "This detector has seen" in page and "gen a, stripes" in page  # names as visitors read them


def _separable(n_real: int, n_fake: int, groups: int | None, seed: int = 0):
    """Held-out rows and embeddings of a perfectly separable set (``groups`` prompt groups per class; None: none)."""
    rng = np.random.default_rng(seed)
    emb = np.r_[rng.normal(-3, 1, (n_real, 8)), rng.normal(3, 1, (n_fake, 8))]
    rows = [{"side": "test", "generator": "real" if i < n_real else "gen", "label": int(i >= n_real), "id": f"i{i}",
             "group": None if groups is None else f"{'r' if i < n_real else 'f'}{i % groups}"}
            for i in range(n_real + n_fake)]
    return rows, emb


def test_adapt_judges_a_figure_by_the_reports_uncertainty_rule_not_by_n_under_30():
    """Where the old rule (fewer than 30 images of a class: 'small') and the report's ⚠ rule disagree, adapt follows
    the report's: 25 + 25 clear images are a reliable AUROC; 40 + 40 images from 5 prompt groups per class are not."""
    from deepsift.adapt.loop import measure
    from deepsift.evaluate.metrics import SMALL_SAMPLE, compute_metrics
    from deepsift.model.heads import make_head

    rows, emb = _separable(25, 25, None)
    labels = np.array([r["label"] for r in rows])
    head = make_head("linear").fit(emb, labels)
    figs = measure(rows, emb, np.ones(len(rows), bool), head, ["gen"], bootstrap=200, seed=0)["gen"]
    assert figs["n_real"] == figs["n_fake"] == 25 < SMALL_SAMPLE and "small" not in figs
    assert figs["auroc"]["value"] == 1.0 and "unreliable" not in figs["auroc"]  # its own interval is narrow
    assert "fewer than the 100" in figs["tpr@1%fpr"]["unreliable"]  # a TPR at 1 % FPR needs 100 reals

    rows, emb = _separable(40, 40, 5, seed=1)
    labels = np.array([r["label"] for r in rows])
    figs = measure(rows, emb, np.ones(len(rows), bool), make_head("linear").fit(emb, labels), ["gen"], 200, 0)["gen"]
    assert min(figs["n_real"], figs["n_fake"]) >= SMALL_SAMPLE  # not 'small' by the count
    assert figs["n_real_groups"] == figs["n_fake_groups"] == 5
    assert "fewer than 20 groups" in figs["auroc"]["unreliable"]
    # the very reason the evaluation report gives for the same figures
    met = compute_metrics(labels, make_head("linear").fit(emb, labels).predict_proba(emb)[:, 1], bootstrap=200,
                          seed=0, groups=[r["group"] for r in rows])
    assert figs["auroc"]["unreliable"] == met.unreliable("auroc")


def test_the_report_and_the_card_mark_the_uncertain_figures_and_say_the_rule(world, adapted):
    from deepsift.adapt.cli import report
    from deepsift.adapt.loop import Run
    from deepsift.evaluate.reliability import RULE_SHORT

    steps = {s: json.loads(next((adapted / "steps").glob(f"*-{s}.json")).read_text()) for s in ("before", "after")}
    after = steps["after"]["figures"]
    marked = {g for g, f in after.items() if f["auroc"].get("unreliable")}
    assert marked, "the test world's held-out sets are small: some AUROC must be marked"
    lines = report(Run(plan_for(world, adapted)))
    for g, fig in after.items():
        line = next(ln for ln in lines if ln.strip().startswith(f"{g}: AUROC"))
        assert (g in marked) == ("⚠" in line.split("->")[1]), line
        if g in marked:
            assert fig["auroc"]["unreliable"] in line
    assert RULE_SHORT in lines
    _, body = read_card(adapted / "model")
    assert RULE_SHORT in body
    for g, fig in after.items():
        row = next(ln for ln in body.splitlines() if ln.startswith(f"| {g} |"))
        auroc_after = row.split("|")[4]
        assert ("⚠" in auroc_after) == (g in marked), row
        assert ("⚠" in row.split("|")[5]) == bool(fig["tpr@1%fpr"].get("unreliable")), row
        if g in marked:
            assert f"{g} AUROC after: {fig['auroc']['unreliable']}" in body
