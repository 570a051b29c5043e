"""Speed of the evaluation toolkit (prints figures and ratios against baselines in this process).

    python benchmarks/bench_eval.py            # full: 1 M scores, 1,000 x 100 k bootstrap, sweep on 48 images
    python benchmarks/bench_eval.py --quick    # smaller sweep

Targets (issue 4): all metrics on 1 M scores <= 2 s; 1,000 bootstrap resamples on 100 k scores
<= 10 s; the robustness sweep adds no more than perturbation + forward (ratio ~1.0 against
perturbing and running ``Detector.predict`` alone on the perturbed images).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def bench_metrics(n: int) -> None:
    from sklearn import metrics as skm

    from deepsift.evaluate.metrics import compute_metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    t = time.perf_counter()
    m = compute_metrics(y, s)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    pred = s >= 0.5
    skm.roc_auc_score(y, s), skm.average_precision_score(y, s), skm.roc_curve(y, s), skm.f1_score(y, pred)
    skm.balanced_accuracy_score(y, pred), skm.accuracy_score(y, pred)
    sk = time.perf_counter() - t
    print(f"metrics, all 11 on {n:,} scores: {ours:.2f} s (target <= 2 s); "
          f"scikit-learn for AUROC+AP+ROC+F1+accuracies only: {sk:.2f} s; ratio ours/sklearn {ours / sk:.2f}"
          f"  [auroc {m['auroc']:.4f}]")


def bench_bootstrap(n: int, b: int) -> None:
    from sklearn import metrics as skm

    from deepsift.evaluate.metrics import compute_metrics

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    t = time.perf_counter()
    compute_metrics(y, s, bootstrap=b)
    ours = time.perf_counter() - t
    k = 20
    t = time.perf_counter()
    for _ in range(k):
        i = rng.integers(0, n, n)
        skm.roc_auc_score(y[i], s[i])
        skm.average_precision_score(y[i], s[i])
    naive = (time.perf_counter() - t) / k * b
    print(f"bootstrap, {b:,} resamples x {n:,} scores, all 11 metrics: {ours:.2f} s (target <= 10 s); "
          f"naive loop (sklearn AUROC+AP only, {k} resamples extrapolated): {naive:.1f} s; speed-up x{naive / ours:.1f}")


def bench_sweep(n_images: int, families: list[str] | None) -> None:
    from deepsift.data.augment import robustness_perturbations
    from deepsift.evaluate.datasets import Sample
    from deepsift.evaluate.robustness import robustness_sweep
    from deepsift.images import decode_image
    from deepsift.model.backbone import create_backbone
    from deepsift.model.detector import Detector
    from deepsift.model.heads import LinearHead

    rng = np.random.default_rng(2)
    with tempfile.TemporaryDirectory() as tmp:
        paths, labels = [], []
        for i in range(n_images):
            arr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            im = Image.fromarray(arr).resize((256, 256), Image.BICUBIC)
            if i % 2:
                a = np.asarray(im).astype(np.int16)
                a[::4, ::4] += 40
                im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
            p = Path(tmp) / f"{i}.png"
            im.save(p)
            paths.append(str(p))
            labels.append(i % 2)
        det = Detector(create_backbone(seed=0), None, batch_size=32)  # full-size ViT-Tiny, random weights
        X = det.embed(paths)
        det = Detector(det.backbone, {"linear": LinearHead().fit(X, np.array(labels))}, "linear", batch_size=32)
        samples = [Sample(str(i), p, y, "gen" if y else "real") for i, (p, y) in enumerate(zip(paths, labels))]
        t = time.perf_counter()
        res = robustness_sweep({"CoDE": det}, samples, families=families)
        sweep_total = time.perf_counter() - t
        # baseline: decode once, then for every transform perturb and run detect alone
        t = time.perf_counter()
        images = [decode_image(p) for p in paths]
        for j, pert in enumerate(robustness_perturbations(families)):
            perturbed = [pert(im, np.random.default_rng([0, j, i])) for i, im in enumerate(images)]
            det.predict(perturbed)
        det.predict(paths)  # the clean point
        alone = time.perf_counter() - t
    tm = res.timing
    print(f"robustness sweep, {n_images} images x {int(tm['n_transforms'])} transforms: {sweep_total:.1f} s total "
          f"(perturb {tm['perturb_s']:.1f} s, forward {tm['forward_s']:.1f} s, clean {tm['clean_s']:.1f} s); "
          f"perturb + detect alone: {alone:.1f} s; overhead ratio {sweep_total / alone:.2f} "
          f"(internal sweep/(perturb+forward) {res.overhead_ratio:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sweep (16 images, 3 families)")
    args = ap.parse_args()
    bench_metrics(1_000_000)
    bench_bootstrap(100_000, 1000)
    if args.quick:
        bench_sweep(16, ["jpeg", "blur", "resize"])
    else:
        bench_sweep(48, None)


if __name__ == "__main__":
    main()
