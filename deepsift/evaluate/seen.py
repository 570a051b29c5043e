"""Seen versus unseen: how much a detector loses on a generator it was not trained on.

For every generator G, G's fakes are split in two halves (whole groups: prompts, sources). On the
same test images (the held-out reals and one half of G) two detectors are compared: one fitted
without G (as leave-one-generator-out does) and one fitted with the other half of G. The mean of
``seen - unseen`` over the generators is the drop the leave-one-out report carries.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .datasets import REAL, Sample
from .metrics import compute_metrics
from .protocols import fit_and_score, head_scores, split_reals
from .report import Report
from .scoring import embed_samples, is_code_detector


def _halves(samples: Sequence[Sample], idx: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a generator's fakes in two halves, whole groups (or single images) on one side."""
    keys = np.array([samples[i].group or f"image:{samples[i].id}" for i in idx], dtype=object)
    uniq = list(dict.fromkeys(keys))
    if len(uniq) < 2:
        return idx[:0], idx[:0]
    perm = np.random.default_rng(seed).permutation(len(uniq))
    train_keys = {uniq[k] for k in perm[: len(uniq) // 2]}
    in_train = np.array([k in train_keys for k in keys])
    return idx[in_train], idx[~in_train]


def seen_vs_unseen(detector: Any, samples: list[Sample], *, kinds: Sequence[str] = ("linear",),
                   real_train_fraction: float = 0.5, seed: int = 0, embeddings: np.ndarray | None = None,
                   name: str | None = None) -> dict[str, dict[str, Any]]:
    """Per kind (or detector ``name``): AUROC per generator seen and unseen on the same images, and their means.

    Returns ``{kind: {"per_generator": {G: {"seen", "unseen", "drop", "n_fake"}}, "mean_seen", "mean_unseen",
    "mean_drop", "skipped": [G with fewer than two images or groups]}}``.
    """
    gens = list(dict.fromkeys(s.generator for s in samples if s.label == 1))
    real_train, real_test = split_reals(samples, real_train_fraction, seed)
    gen_of = np.array([s.generator for s in samples], dtype=object)
    labels = np.array([s.label for s in samples], np.int64)
    code = is_code_detector(detector)
    ok = np.ones(len(samples), bool)
    if code:
        if embeddings is None:
            embeddings, _ = embed_samples(detector, [s.source for s in samples], desc="embedding (seen vs unseen)")
        ok = np.isfinite(embeddings).all(axis=1)
    keys = list(kinds) if code else [name or getattr(detector, "name", None) or type(detector).__name__]
    out: dict[str, dict[str, Any]] = {k: {"per_generator": {}, "skipped": []} for k in keys}
    for g in gens:
        seen_half, test_half = _halves(samples, np.flatnonzero((gen_of == g) & ok), seed)
        if not seen_half.size:
            for k in keys:
                out[k]["skipped"].append(g)
            continue
        others = np.flatnonzero((gen_of != g) & (gen_of != REAL) & ok)
        reals = real_train[ok[real_train]]
        test = np.concatenate([real_test[ok[real_test]], test_half])
        for k in keys:
            if code:
                unseen = head_scores(k, embeddings, labels, np.concatenate([reals, others]), test)
                seen = head_scores(k, embeddings, labels, np.concatenate([reals, others, seen_half]), test)
            else:
                unseen = fit_and_score(detector, samples, reals, others, test)
                seen = fit_and_score(detector, samples, reals, np.concatenate([others, seen_half]), test)
            keep = np.isfinite(unseen) & np.isfinite(seen)
            a = compute_metrics(labels[test][keep], seen[keep])["auroc"]
            b = compute_metrics(labels[test][keep], unseen[keep])["auroc"]
            if a is None or b is None:
                out[k]["skipped"].append(g)
                continue
            out[k]["per_generator"][g] = {"seen": a, "unseen": b, "drop": a - b, "n_fake": int(test_half.size)}
    for res in out.values():
        rows = list(res["per_generator"].values())
        res.update({f"mean_{f}": (float(np.mean([r[f] for r in rows])) if rows else None)
                    for f in ("seen", "unseen", "drop")})
    return out


def seen_words(kind: str, res: dict[str, Any]) -> str | None:
    """One sentence on the mean seen-vs-unseen drop of ``kind`` (None when no generator could be compared)."""
    if res["mean_drop"] is None:
        return None
    n, d = len(res["per_generator"]), res["mean_drop"]
    how = (f"falls by {d:.3f} on a generator left out of training" if d >= 0.02 else
           f"rises by {-d:.3f} on a generator left out of training" if d <= -0.02 else "barely moves when a "
           "generator is left out of training")
    return (f"Unseen generators: {kind} mean AUROC {res['mean_seen']:.3f} seen, {res['mean_unseen']:.3f} unseen, "
            f"{how} (mean drop {d:+.3f} over {n} generator(s), the same held-out images on both sides).")


def seen_block(report: Report, seen: dict[str, dict[str, Any]]) -> None:
    """Seen versus unseen AUROC per generator, on the same held-out images, with the mean drop."""
    report.heading("Seen versus unseen", 3)
    report.text("Each generator's images split in two halves (whole groups); on the held-out reals and one half, a "
                "detector fitted without the generator (unseen) against one fitted with the other half (seen). "
                "The unseen figure here is on half the images, so it differs a little from the table above.")
    rows = [[g, k, f"n={r['n_fake']}", _f(r["seen"]), _f(r["unseen"]), f"{r['drop']:+.3f}"]
            for k, res in seen.items() for g, r in res["per_generator"].items()]
    rows += [["mean", k, "", _f(res["mean_seen"]), _f(res["mean_unseen"]),
              "n/a" if res["mean_drop"] is None else f"{res['mean_drop']:+.3f}"] for k, res in seen.items()]
    report.table(["generator", "detector", "n fake (test half)", "AUROC seen", "AUROC unseen", "drop"], rows)
    skipped = sorted({g for res in seen.values() for g in res["skipped"]})
    if skipped:
        report.text(f"Not compared (fewer than two images or groups to split, or one class left): {', '.join(skipped)}.")


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
