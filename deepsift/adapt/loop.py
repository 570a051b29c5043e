"""The adaptation loop: each step reads what the steps before it wrote, so a re-run resumes where it stopped."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..exceptions import DataError, UsageError
from .plan import STEPS, AdaptPlan

FIGURES = ("auroc", "tpr@1%fpr")
"""The figures measured before and after, per generator (with bootstrap intervals)."""


class Run:
    """One adaptation's folder: ``OUT/plan.json``, ``OUT/steps/NN-STEP.json`` and the big arrays beside them."""

    def __init__(self, plan: AdaptPlan) -> None:
        self.plan = plan
        self.out = Path(plan.out)
        self.steps = self.out / "steps"
        self._detector: Any = None

    def path(self, step: str) -> Path:
        return self.steps / f"{STEPS.index(step) + 1:02d}-{step}.json"

    def done(self, step: str) -> bool:
        return self.path(step).is_file()

    def read(self, step: str) -> dict:
        return json.loads(self.path(step).read_text())

    def write(self, step: str, data: dict) -> None:
        """Write a step's result atomically (a kill mid-write leaves the step undone, never half-done)."""
        tmp = self.path(step).with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path(step))

    def start(self, resume: bool) -> None:
        """Create the folder, or check that an existing one was made by the same plan."""
        stamp = {"key": self.plan.key(), "plan": {k: v for k, v in vars(self.plan).items()}}
        found = self.out / "plan.json"
        if found.is_file():
            old = json.loads(found.read_text())
            if old.get("key") != stamp["key"]:
                raise UsageError(f"{self.out} holds an adaptation with other inputs or targets; use another output "
                                 f"folder (or the same options to resume)")
            if not resume and any(self.done(s) for s in STEPS):
                raise UsageError(f"{self.out} holds a started adaptation: resume it (the resume option) or use another "
                                 f"output folder")
        from ..outplaces import ensure_writable_dir

        ensure_writable_dir(self.out)
        self.steps.mkdir(parents=True, exist_ok=True)
        found.write_text(json.dumps(stamp, indent=1, default=str))

    def read_plan(self) -> dict:
        return json.loads((self.out / "plan.json").read_text())["plan"]

    def portable(self, path: str) -> dict:
        """How a step file records the file ``path``: relative to the folder (``relative``) when inside it, so the
        folder may move; as given otherwise."""
        try:
            return {"source": Path(path).resolve().relative_to(self.out.resolve()).as_posix(), "relative": True}
        except ValueError:
            return {"source": path}

    def source(self, row: dict) -> str:
        """The image file of a collected row, or the parquet shard that holds its image (``row``, ``gen``); one
        recorded inside the folder is resolved against where it is now."""
        return str(self.out / row["source"]) if row.get("relative") else row["source"]

    def inputs(self, rows: list[dict]) -> Iterator[str | bytes]:
        """What to feed a detector for each row, in order: its file, or its image bytes re-read from its shard."""
        from ..data.layout import ShardImages

        shards = ShardImages()
        for r in rows:
            yield shards.get(self.source(r), r["row"], r["gen"], r["id"]) if "row" in r else self.source(r)

    def images(self) -> str:
        """The folder of the new generator's images: the one given, or the build step's."""
        return self.plan.images or str(self.steps / "build" / "images")

    def detector(self) -> Any:
        """The model as it is (backbone + its own heads), loaded once."""
        if self._detector is None:
            from ..model.detector import Detector

            p = self.plan
            self._detector = Detector.load(p.model, classifier=p.classifier, device=p.device,
                                           batch_size=p.batch_size, workers=p.workers)
        return self._detector


# -- the steps ------------------------------------------------------------------------------------
def assign_sides(rows: list[dict], seed: int, test_fraction: float) -> None:
    """Set each row's ``side`` (``fit`` or ``test``): per generator (reals too), its groups (else its images) in
    a seeded hash order, the first ``test_fraction`` of them held out, at least one group on each side when
    there are two or more. A group never straddles the sides; the split does not depend on other generators."""
    by_gen: dict[str, list[str]] = {}
    for r in rows:
        keys = by_gen.setdefault(r["generator"], [])
        key = r["group"] or r["id"]
        if key not in keys:
            keys.append(key)
    test_keys: dict[str, set[str]] = {}
    for gen, keys in by_gen.items():
        order = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}|{gen}|{k}".encode()).digest())
        n = round(test_fraction * len(order))
        if len(order) >= 2:
            n = min(max(n, 1), len(order) - 1)
        test_keys[gen] = set(order[:n])
    for r in rows:
        r["side"] = "test" if (r["group"] or r["id"]) in test_keys[r["generator"]] else "fit"


def step_collect(run: Run) -> dict:
    """The samples of the known generators and of the new one, each with its side (fit or test)."""
    from ..data.layout import images_under, read_dataset

    p = run.plan
    known = read_dataset(p.data, real=p.real or None, follow_links=p.follow_links)
    gens = sorted({s.generator for s in known.samples if s.label == 1})
    if p.generator in gens:
        raise UsageError(f"{p.generator!r} is already a generator of {p.data}: name the new one differently")
    if not gens or not any(s.label == 0 for s in known.samples):
        raise DataError(f"{p.data}: needs real images and at least one known generator's images")
    files, _errors = images_under(run.images(), follow_links=p.follow_links)
    if not files:
        raise DataError(f"{run.images()}: no images of the new generator {p.generator!r}")
    root = Path(run.images())
    rows = [{"id": s.id, **_known_source(run, s), "label": s.label, "generator": s.generator, "group": s.group}
            for s in known.samples]
    for f in files:
        rel = Path(f).relative_to(root)
        rows.append({"id": f"{p.generator}/{rel.as_posix()}", **run.portable(f), "label": 1, "generator": p.generator,
                     "group": rel.parts[0] if len(rel.parts) > 1 else None})
    assign_sides(rows, p.seed, p.test_fraction)
    new_test = sum(r["generator"] == p.generator and r["side"] == "test" for r in rows)
    new_fit = sum(r["generator"] == p.generator and r["side"] == "fit" for r in rows)
    if new_test < p.min_test_images or new_fit < 1:
        raise DataError(f"too few images of {p.generator!r} to measure an adaptation: {new_fit} to fit and {new_test} "
                        f"held out (at least 1 and {p.min_test_images}; {len(files)} in all, split by group)")
    for side in ("fit", "test"):
        if not any(r["label"] == 0 and r["side"] == side for r in rows):
            raise DataError(f"no real image on the {side} side of the split: add real images (or other groups)")
    return {"generators": gens, "new": p.generator, "samples": rows}


def _known_source(run: Run, s: Any) -> dict:
    """Where a step file finds a known sample: its file, or (an image held in a parquet shard, never its bytes)
    the shard with the row and generation that hold it."""
    if s.shard is not None:
        path, row, gen = s.shard
        return {**run.portable(path), "row": row, "gen": gen}
    if not isinstance(s.source, str):
        raise DataError(f"{run.plan.data}: sample {s.id} has no file or shard to record")
    return run.portable(s.source)


def step_embed(run: Run) -> dict:
    """Embed every image once with the model's backbone (``OUT/steps/embeddings.npy``)."""
    return embed_rows(run, run.detector(), 1)


EMBEDDINGS = {1: "embeddings.npy", 2: "embeddings-2.npy"}
"""The embeddings of each round: the model as given (1) and the fine-tuned one (2)."""
ROUND_STEPS = {1: ("embed", "refit-heads", "heads"), 2: ("embed-2", "refit-heads-2", "heads-2")}
"""Per round: its embed step, its refit step and its heads folder under ``OUT/steps``."""


def embed_rows(run: Run, det: Any, round_: int) -> dict:
    """Embed every collected image with ``det``'s backbone into round ``round_``'s array."""
    from ..output import progress

    rows = run.read("collect")["samples"]
    emb = np.full((len(rows), int(det.backbone.config.hidden_size)), np.nan, np.float32)
    errors = []
    items = det.embed_iter(run.inputs(rows))
    for i, (_, e, err) in enumerate(progress(items, desc="embed", total=len(rows))):
        if e is None:
            errors.append({"id": rows[i]["id"], "source": rows[i]["source"], "error": err})
        else:
            emb[i] = e
    final = run.steps / EMBEDDINGS[round_]
    tmp = final.with_name(final.stem + ".tmp.npy")
    np.save(tmp, emb)
    os.replace(tmp, final)
    return {"n": len(rows), "errors": errors, "backbone_sha256": det.fingerprint}


def _arrays(run: Run, round_: int = 1) -> tuple[list[dict], np.ndarray, np.ndarray]:
    rows = run.read("collect")["samples"]
    emb = np.load(run.steps / EMBEDDINGS[round_])
    ok = np.isfinite(emb).all(axis=1)
    return rows, emb, ok


def measure(rows: list[dict], emb: np.ndarray, ok: np.ndarray, head: Any, generators: list[str],
            bootstrap: int, seed: int) -> dict[str, dict]:
    """Per generator (held-out reals vs its held-out images): AUROC and TPR@1%FPR with intervals, and counts.

    A figure too uncertain to rely on carries ``unreliable`` (why), by the evaluation report's ⚠ rule
    (:mod:`deepsift.evaluate.reliability`: its own interval, real images for its FPR, groups per class).
    """
    from ..evaluate.metrics import compute_metrics

    test = np.array([r["side"] == "test" for r in rows]) & ok
    gen = np.array([r["generator"] for r in rows], dtype=object)
    labels = np.array([r["label"] for r in rows])
    groups = np.array([r["group"] or r["id"] for r in rows], dtype=object)
    probs = np.full(len(rows), np.nan)
    probs[test] = head.predict_proba(emb[test])[:, 1]
    out = {}
    for g in generators:
        m = test & ((labels == 0) | (gen == g))
        met = compute_metrics(labels[m], probs[m], bootstrap=bootstrap, seed=seed, groups=groups[m])
        d = met.to_dict()
        out[g] = {k: d[k] for k in ("n_real", "n_fake", "n_real_groups", "n_fake_groups") if k in d}
        out[g].update({f: d["metrics"][f] for f in FIGURES})
    return out


def _known_heads(run: Run) -> dict:
    det = run.detector()
    return det.heads


def step_before(run: Run) -> dict:
    """The model as it is, on the new generator and on each known one."""
    rows, emb, ok = _arrays(run)
    c = run.read("collect")
    head = _known_heads(run)[run.plan.classifier]
    return {"head": run.plan.classifier,
            "figures": measure(rows, emb, ok, head, c["generators"] + [c["new"]], run.plan.bootstrap, run.plan.seed)}


def step_refit(run: Run) -> dict:
    """Fit each head kind on the fitting side (new generator included), and one head per generator."""
    return refit_heads(run, 1)


def refit_heads(run: Run, round_: int) -> dict:
    """Round ``round_``'s heads, fitted on its embeddings of the fitting side, saved in its heads folder."""
    from ..model.headset import save_headset
    from ..model.heads import make_head

    embed_step, _, folder = ROUND_STEPS[round_]
    rows, emb, ok = _arrays(run, round_)
    c = run.read("collect")
    fit = np.array([r["side"] == "fit" for r in rows]) & ok
    labels = np.array([r["label"] for r in rows])
    gen = np.array([r["generator"] for r in rows], dtype=object)
    heads = {}
    for kind in run.plan.heads:
        heads[kind] = make_head(kind).fit(emb[fit], labels[fit])
        for g in c["generators"] + [c["new"]]:
            m = fit & ((labels == 0) | (gen == g))
            if (labels[m] == 1).sum() >= 2:  # a generator with one fitting image gets no head of its own
                heads[f"{kind}:{g}"] = make_head(kind).fit(emb[m], labels[m])
    fp = run.read(embed_step)["backbone_sha256"]
    save_headset(heads, run.steps / folder, model=run.plan.model, backbone_sha256=fp,
                 embedding_dim=int(emb.shape[1]))
    return {"heads": sorted(heads), "n_fit": int(fit.sum())}


def step_after(run: Run) -> dict:
    """The refitted heads on the same held-out images; forgetting = the drop on each known generator."""
    return measure_round(run, 1, "refit heads")


def measure_round(run: Run, round_: int, route: str) -> dict:
    """Round ``round_``'s heads on the held-out images: figures, forgetting against BEFORE, target reached or not."""
    from ..model.headset import load_headset

    rows, emb, ok = _arrays(run, round_)
    c = run.read("collect")
    heads, _ = load_headset(run.steps / ROUND_STEPS[round_][2])
    after = measure(rows, emb, ok, heads[run.plan.classifier], c["generators"] + [c["new"]],
                    run.plan.bootstrap, run.plan.seed)
    before = run.read("before")["figures"]
    drops = {g: _value(before[g]) - _value(after[g]) for g in c["generators"]}
    new_after = _value(after[c["new"]])
    reached = new_after >= run.plan.target_auroc
    kept = all(d <= run.plan.forget_tolerance for d in drops.values())
    return {"route": route, "figures": after, "forgetting": drops, "target_reached": bool(reached),
            "forgetting_ok": bool(kept), "method": route if reached and kept else None}


def _value(fig: dict) -> float:
    v = fig["auroc"]["value"]
    return float("nan") if v is None else float(v)


def shortfall(after: dict, new: str, target: float, tolerance: float) -> float:
    """How far a route is from the target: AUROC missing on the new generator plus drops beyond the tolerance."""
    missing = max(target - _value(after["figures"][new]), 0.0)
    return missing + sum(max(d - tolerance, 0.0) for d in after["forgetting"].values())


def choose_route(mode: str, refit: dict, fine: dict | None, misses: tuple[float, float] = (0.0, 0.0)) -> tuple[int, bool]:
    """(round written, target reached): the cheapest route that reached the target (with ``always``: the
    fine-tuned one when it did); when none did, the one closest to it (``misses``: each route's shortfall)."""
    ok1 = bool(refit.get("method"))
    ok2 = fine is not None and bool(fine.get("method"))
    if mode == "always" and ok2:
        return 2, True
    if ok1:
        return 1, True
    if ok2:
        return 2, True
    return (2 if fine is not None and misses[1] < misses[0] else 1), False


def step_write(run: Run) -> dict:
    """``OUT/model``: the chosen route's weights and heads, ``lineage.json`` and the model card."""
    from .. import __version__
    from ..model.backbone import resolve_model_dir
    from ..evaluate.reliability import RULE_SHORT
    from ..model.card import write_card

    p = run.plan
    refit, fine = run.read("after"), run.read("after-2")
    fine = None if fine.get("skipped") else fine
    c = run.read("collect")
    misses = tuple(shortfall(r, c["new"], p.target_auroc, p.forget_tolerance) if r else 0.0 for r in (refit, fine))
    round_, reached = choose_route(p.fine_tune, refit, fine, misses)
    after = refit if round_ == 1 else fine
    src = resolve_model_dir(p.model) if round_ == 1 else run.steps / "fine-tune"  # inside the folder, wherever it is
    embed_step, _, heads = ROUND_STEPS[round_]
    stage = run.out / ".model.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        if (src / name).is_file():
            shutil.copy2(src / name, stage / name)
    shutil.copytree(run.steps / heads, stage / "heads")
    route = after["route"] + ("" if reached else " (target not reached)")
    routes = {r["route"]: {"reached": bool(r["method"]), "auroc_new": _value(r["figures"][c["new"]]),
                           "largest_drop": max(r["forgetting"].values(), default=0.0), "shortfall": miss}
              for r, miss in zip((refit, fine), misses) if r}
    lineage = {"base_model": p.model, "backbone_sha256": run.read(embed_step)["backbone_sha256"],
               "added_generator": p.generator, "known_generators": c["generators"], "data": p.data,
               "images": run.images(), "method": route, "route": after["route"], "target_reached": reached,
               "routes": routes, "fine_tune": None if fine is None else run.read("fine-tune"),
               "plan": run.read_plan(), "deepsift": __version__}
    (stage / "lineage.json").write_text(json.dumps(lineage, indent=1, default=str))
    write_card(stage, lineage=lineage, before=run.read("before")["figures"], after=after, plan=p, rule=RULE_SHORT)
    final = run.out / "model"
    if final.exists():
        shutil.rmtree(final)
    os.replace(stage, final)
    return {"model": str(final), "route": after["route"], "target_reached": reached}
