"""deepsift adapt, second route: when refitting the heads misses the target, fine-tune the backbone
(train --init) on the new generator's fitting images with replay of the known generators and the reals,
embed again, refit, measure again (forgetting against BEFORE); the model written is the fine-tuned
backbone with its heads; an interrupted fine-tune resumes from its checkpoint to the same weights."""
from __future__ import annotations

import json

import numpy as np
import pytest

from adaptkit import save_images, tiny_world
from conftest import smooth_image
from deepsift.adapt.loop import choose_route
from deepsift.adapt.runner import run_adapt
from deepsift.adapt.plan import STEPS, AdaptPlan
from deepsift.cli import main
from deepsift.model.card import head_generators, read_card

TRAIN = {"batch_size": 4, "precision": "fp32", "holdout": 8, "warmup_steps": 1, "log_every": 1}


def faint(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """The new generator: a real-looking smooth field with stripes too faint for the untrained backbone's heads."""
    base = smooth_image(rng, w, h).astype(np.int16)
    xx = np.arange(w)[None, :, None]
    return np.clip(base + ((xx // 2) % 2) * 6 - 3, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny base network with heads fitted on gen_a; the known data (real + gen_a); a faint new generator."""
    root = tiny_world(tmp_path_factory.mktemp("adapt-ft"))
    save_images(root / "new", faint, 24, np.random.default_rng(12), groups=8)
    return root


def plan_for(world, out, **kw) -> AdaptPlan:
    kw = {"fine_tune_steps": 6, "fine_tune_epochs": 3, "fine_tune_lr": 1e-3, "train_config": TRAIN, **kw}
    return AdaptPlan(model=str(world / "base"), generator="faint", images=str(world / "new"),
                     data=str(world / "known"), out=str(out), bootstrap=50, workers=1, **kw)


def _steps(out) -> dict:
    return {s: json.loads(next((out / "steps").glob(f"[0-9][0-9]-{s}.json")).read_text()) for s in STEPS}


@pytest.fixture(scope="module")
def tuned(world):
    """--fine-tune auto: the head refit misses the target on the faint generator, so the fine-tune runs."""
    out = world / "run"
    run_adapt(plan_for(world, out), say=lambda _: None)
    return out


@pytest.fixture(scope="module")
def always(world):
    """--fine-tune always with a target every route reaches: the fine-tuned backbone is the model written."""
    out = world / "always"
    run_adapt(plan_for(world, out, fine_tune="always", target_auroc=0.0, forget_tolerance=1.0), say=lambda _: None)
    return out


def _sources(out, side):
    rows = _steps(out)["collect"]["samples"]
    return {r["source"] for r in rows if r["side"] == side}


def test_a_missed_head_refit_goes_on_to_fine_tune_with_replay_and_measures_forgetting(tuned):
    steps = _steps(tuned)
    assert steps["after"]["method"] is None  # the faint generator: refitting the heads misses the target
    ft = steps["fine-tune"]
    assert not ft.get("skipped") and ft["steps"] == 6 and ft["config"]["init"].endswith("base")
    for step in ("embed-2", "refit-heads-2", "after-2"):
        assert not steps[step].get("skipped"), step
    assert steps["embed-2"]["backbone_sha256"] != steps["embed"]["backbone_sha256"]  # the backbone moved
    before, after2 = steps["before"]["figures"], steps["after-2"]["figures"]
    assert set(after2) == {"gen_a", "faint"}
    drop = before["gen_a"]["auroc"]["value"] - after2["gen_a"]["auroc"]["value"]
    assert steps["after-2"]["forgetting"] == {"gen_a": pytest.approx(drop)}  # forgetting against BEFORE
    # the route written: the cheapest that reached the target, else the one closest to it (figures in the card)
    routes = read_card(tuned / "model")[0]["adaptation"]["routes"]
    assert set(routes) == {"refit heads", "fine-tune with replay"}
    for step, name in (("after", "refit heads"), ("after-2", "fine-tune with replay")):
        fig = steps[step]
        assert routes[name]["reached"] is False
        assert routes[name]["auroc_new"] == pytest.approx(fig["figures"]["faint"]["auroc"]["value"])
        want = max(0.95 - fig["figures"]["faint"]["auroc"]["value"], 0) + max(fig["forgetting"]["gen_a"] - 0.02, 0)
        assert routes[name]["shortfall"] == pytest.approx(want)
    closest = min(routes, key=lambda n: (routes[n]["shortfall"], n != "refit heads"))
    assert steps["write-model"] == {"model": str(tuned / "model"), "route": closest, "target_reached": False}
    sha = steps["embed-2" if closest != "refit heads" else "embed"]["backbone_sha256"]
    assert json.loads((tuned / "model" / "lineage.json").read_text())["backbone_sha256"] == sha


def test_replay_holds_every_generator_s_fitting_images_and_no_held_out_one(tuned):
    import pyarrow.parquet as pq

    replay = tuned / "steps" / "replay"
    info = json.loads((replay / "replay.json").read_text())
    fit, test = _sources(tuned, "fit"), _sources(tuned, "test")
    used = set()
    for shard in sorted((replay / "shards").glob("*.parquet")):
        t = pq.read_table(shard).to_pydict()
        for k in range(2):
            used |= set(t[f"filepath_gen{k}"])
        assert sorted(t["generator_gen0"][:1] + t["generator_gen1"][:1]) == ["faint", "gen_a"]  # one of each
    assert used <= fit and not used & test  # the new generator and the replayed gen_a: fitting images only
    rows = _steps(tuned)["collect"]["samples"]
    for g in ("gen_a", "faint"):  # every fitting image of every generator is replayed
        assert {r["source"] for r in rows if r["generator"] == g and r["side"] == "fit"} <= used
        assert info["images"][g] == sum(r["generator"] == g and r["side"] == "fit" for r in rows)
    real_bytes = {p.read_bytes() for p in (replay / "real").iterdir()}
    fit_reals = {open(s, "rb").read() for s in fit if "/real/" in s}
    test_reals = {open(s, "rb").read() for s in test if "/real/" in s}
    assert real_bytes == fit_reals and not real_bytes & test_reals  # the reals too: fitting side only


def test_the_fine_tuned_model_is_written_with_its_heads_and_loads_in_detect(always, capsys):
    from deepsift.evaluate.metrics import compute_metrics
    from deepsift.model.backbone import load_backbone, weights_fingerprint
    from deepsift.model.detector import Detector

    steps = _steps(always)
    assert steps["after"]["method"] == "refit heads" and steps["after-2"]["method"] == "fine-tune with replay"
    assert steps["write-model"]["route"] == "fine-tune with replay" and steps["write-model"]["target_reached"]
    model = always / "model"
    sha = weights_fingerprint(load_backbone(str(model)))
    assert sha == steps["embed-2"]["backbone_sha256"] != steps["embed"]["backbone_sha256"]
    assert json.loads((model / "heads" / "heads.json").read_text())["backbone_sha256"] == sha
    lineage = json.loads((model / "lineage.json").read_text())
    assert lineage["route"] == "fine-tune with replay" and lineage["base_model"].endswith("base")
    assert lineage["fine_tune"]["replay"]["images"]["gen_a"] >= 1 and lineage["data"].endswith("known")
    meta, body = read_card(model)
    assert meta["adaptation"]["route"] == "fine-tune with replay" and "fine-tune with replay" in body
    assert meta["generators_seen"] == head_generators(model) == ["faint", "gen_a"]
    rows = steps["collect"]["samples"]
    test = [r for r in rows if r["side"] == "test" and r["generator"] in ("real", "faint")]
    det = Detector.load(model)  # the heads' fingerprint matches the fine-tuned backbone
    probs = np.array([p.probability for p in det.predict_iter([r["source"] for r in test])])
    auroc = compute_metrics(np.array([r["label"] for r in test]), probs)["auroc"]
    card = next(m["value"] for res in meta["model-index"][0]["results"] if res["dataset"]["type"] == "faint"
                for m in res["metrics"] if m["type"] == "roc_auc")
    assert card == pytest.approx(auroc, abs=1e-9)
    assert main(["detect", test[0]["source"], "--model", str(model), "--format", "jsonl"]) == 0
    capsys.readouterr()
    assert main(["model", "info", str(model)]) == 0
    assert "adapted by: fine-tune with replay (target reached)" in capsys.readouterr().out


def test_an_interrupted_fine_tune_resumes_from_its_checkpoint_to_the_same_weights(world, tuned, tmp_path, monkeypatch):
    """Ctrl-C lands right after the fine-tune's first checkpoint; the resumed run continues from it (not from
    step 0) and ends with the uninterrupted run's weights; each later step resumes too."""
    import deepsift.train.loop as loop
    from safetensors.torch import load_file

    real_save, calls = loop.save_checkpoint, []

    def save_then_interrupt(*args, **kwargs):
        path = real_save(*args, **kwargs)
        calls.append(args[3]["step"])
        if len(calls) == 1:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(loop, "save_checkpoint", save_then_interrupt)
    plan = plan_for(world, tmp_path / "r")
    with pytest.raises(KeyboardInterrupt):
        run_adapt(plan, say=lambda _: None)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert calls[0] == 2 and not list((tmp_path / "r" / "steps").glob("*-fine-tune.json"))
    for stop in ("fine-tune", "embed-2", "refit-heads-2", "after-2", "write-model"):
        said: list[str] = []
        run_adapt(plan, resume=True, say=said.append, stop_after=stop)
        assert said[-1] == f"{stop}: done" and "after: done earlier (kept)" in said
    steps = _steps(tmp_path / "r")
    assert steps["fine-tune"]["resumed_at"] == 2 and steps["fine-tune"]["steps"] == 6
    a = load_file(str(tuned / "steps" / "fine-tune" / "model.safetensors"))
    b = load_file(str(tmp_path / "r" / "steps" / "fine-tune" / "model.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    assert steps["after-2"]["figures"] == _steps(tuned)["after-2"]["figures"]


def test_fine_tune_never_keeps_the_head_refit_and_the_report_says_no_route_reached(world, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["adapt", "--model", str(world / "base"), "--data", str(world / "known"), "--new",
                 f"faint={world / 'new'}", "--out", str(out), "--bootstrap", "50", "--workers", "1",
                 "--fine-tune", "never"]) == 0
    err = capsys.readouterr().err
    steps = _steps(out)
    assert steps["fine-tune"] == {"skipped": "fine-tuning is off (never)"}
    assert all(steps[s]["skipped"].startswith("no fine-tune") for s in ("embed-2", "refit-heads-2", "after-2"))
    assert steps["write-model"]["route"] == "refit heads" and not steps["write-model"]["target_reached"]
    assert "no route reached AUROC >= 0.95 on faint" in err and "--fine-tune auto runs it" in err


@pytest.mark.parametrize("mode, ok1, ok2, misses, want", [
    ("auto", True, None, (0, 0), (1, True)),  # the cheapest route that reaches is enough
    ("always", True, True, (0, 0), (2, True)),  # always: the fine-tuned one when it reaches
    ("always", True, False, (0, 0.1), (1, True)),  # ... else the refit that did
    ("auto", False, True, (0.1, 0), (2, True)),
    ("auto", False, False, (0.1, 0.3), (1, False)),  # none: the closest to the target
    ("auto", False, False, (0.3, 0.1), (2, False)),
    ("never", False, None, (0.3, 0), (1, False)),
])
def test_the_route_written(mode, ok1, ok2, misses, want):
    refit = {"method": "refit heads" if ok1 else None}
    fine = None if ok2 is None else {"method": "fine-tune with replay" if ok2 else None}
    assert choose_route(mode, refit, fine, misses) == want


def test_bad_adapt_options_are_one_line_errors(world, tmp_path, capsys):
    base = ["adapt", "--model", str(world / "base"), "--data", str(world / "known"), "--out", str(tmp_path / "o")]
    bad_cfg = tmp_path / "t.yaml"
    bad_cfg.write_text("batch_sise: 4\n")
    for argv, words in ((["--new", f"x={world / 'new'}", "--prompts", str(world)], "--prompts goes with --generate"),
                        (["--generate", "x=t2i:/nowhere"], "--generate needs --prompts"),
                        (["--new", f"x={world / 'new'}", "--train-config", str(bad_cfg)], "unknown key 'batch_sise'"),
                        (["--new", f"x={world / 'new'}", "--fine-tune", "sometimes"], "invalid choice")):
        code = main(base + argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and words in err[0] and "Traceback" not in err[0], (argv, err)
    assert not (tmp_path / "o").exists()
