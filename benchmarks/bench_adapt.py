"""Few-shot adaptation (issue 22): what refitting heads buys on a new generator, and what it costs.

Tiny synthetic generators made here (no download): reals are smooth colour fields, the known
generator adds a checkerboard, the new one vertical stripes. A base model (random ViT-Tiny weights
in the published layout, or ``--model`` for a real one, e.g. aimagelab/CoDE with ``--real DIR``)
gets heads fitted on the known generator; then ``deepsift adapt`` runs with 8, 32 and 128 images of
the new generator, once per refitted head kind (linear, kNN). For each run it prints AUROC on the
new generator before and after (held-out images), the drop on the known generator (forgetting), and
the seconds of the refit step and of the whole run (embedding included). A third run per size takes
the second route, ``--fine-tune always`` (``train --init`` on the new generator's fitting images with
replay of the known generator and the reals, then the heads refitted on the new embeddings): its
AUROC after, its forgetting and the seconds of the fine-tune step.

    python benchmarks/bench_adapt.py                 # 8, 32, 128 new images, 30 fine-tune steps
    python benchmarks/bench_adapt.py --sizes 8 32 --fine-tune-steps 10    # quicker
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def _field(rng: np.random.Generator, n: int = 96) -> np.ndarray:
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((n, n), Image.BICUBIC)).astype(np.int16)


def _make(folder: Path, kind: str, n: int, rng: np.random.Generator, groups: int = 1) -> None:
    yy, xx = np.mgrid[0:96, 0:96]
    for i in range(n):
        a = _field(rng)
        if kind == "checker":
            a = a + ((((yy // 4) + (xx // 4)) % 2) * 60 - 30)[..., None]
        elif kind == "stripes":
            a = a + (((xx // 3) % 2) * 16 - 8)[..., None]  # faint: the known heads barely see it
        d = folder / f"p{i % groups}" if groups > 1 else folder
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(d / f"{i:04d}.png")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128], help="new-generator images per run")
    ap.add_argument("--model", default=None, help="base model (default: a random ViT-Tiny made here)")
    ap.add_argument("--known", type=int, default=64, help="real and known-generator images")
    ap.add_argument("--fine-tune-steps", type=int, default=30, help="optimiser steps of the fine-tune route (0: skip)")
    ap.add_argument("--batch", type=int, default=8, help="records per fine-tune step")
    args = ap.parse_args()

    from deepsift.adapt.runner import run_adapt
    from deepsift.adapt.plan import STEPS, AdaptPlan
    from deepsift.cli import main as cli
    from deepsift.model.backbone import create_backbone, save_backbone

    root = Path(tempfile.mkdtemp(prefix="bench-adapt-"))
    try:
        rng = np.random.default_rng(0)
        _make(root / "known" / "real", "smooth", args.known, rng)
        _make(root / "known" / "fake" / "checker", "checker", args.known, rng)
        base = root / "base"
        if args.model:
            base = Path(args.model)
        else:
            save_backbone(create_backbone(seed=0), base)
        if cli(["-q", "heads", "fit", "--real", str(root / "known" / "real"), "--fake", str(root / "known" / "fake"),
                "--model", str(base), "--out", str(root / "heads0"), "--classifier", "linear", "--classifier", "knn"]):
            return 1
        if not args.model:
            shutil.copytree(root / "heads0", base / "heads")
        print(f"{'new imgs':>8} {'route':>16} {'AUROC new before':>16} {'after':>7} {'forget':>7} {'fit s':>8} "
              f"{'run s':>7}")
        runs = [("linear", "refit heads", "never"), ("knn", "refit heads", "never")]
        if args.fine_tune_steps:
            runs.append(("linear", "fine-tune", "always"))
        for n in args.sizes:
            _make(root / f"new{n}", "stripes", n, np.random.default_rng(n), groups=max(2, n // 4))
            for head, route, mode in runs:
                out = root / f"run-{n}-{head}-{mode}"
                plan = AdaptPlan(model=str(base), generator="stripes", images=str(root / f"new{n}"),
                                 data=str(root / "known"), out=str(out), heads=(head,), classifier=head,
                                 bootstrap=0, min_test_images=min(4, n // 2), workers=2, fine_tune=mode,
                                 fine_tune_steps=max(args.fine_tune_steps, 1), fine_tune_epochs=1,
                                 train_config={"batch_size": args.batch, "holdout": 8, "precision": "fp32"})
                t0 = time.perf_counter()
                times = {}
                last = t0
                for step in STEPS:
                    run_adapt(plan, resume=True, stop_after=step, say=lambda _: None)
                    now = time.perf_counter()
                    times[step], last = now - last, now
                name = "after" if mode == "never" else "after-2"
                after = json.loads(next((out / "steps").glob(f"[0-9][0-9]-{name}.json")).read_text())
                before = json.loads(next((out / "steps").glob("*-before.json")).read_text())["figures"]
                b, a = before["stripes"]["auroc"]["value"], after["figures"]["stripes"]["auroc"]["value"]
                f = after["forgetting"]["checker"]
                fit_s = times["refit-heads"] if mode == "never" else times["fine-tune"]
                print(f"{n:>8} {route + ' ' + head:>16} {b:>16.3f} {a:>7.3f} {f:>+7.3f} {fit_s:>8.2f} "
                      f"{time.perf_counter() - t0:>7.1f}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
