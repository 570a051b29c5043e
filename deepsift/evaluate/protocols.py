"""Evaluation protocols: per generator, leave-one-generator-out, false positives on real photos."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..decision import DEFAULT_THRESHOLD
from ..exceptions import EvaluationError
from .datasets import REAL, Sample
from .metrics import Metrics, compute_metrics
from .scoring import ScoreTable, embed_samples, is_code_detector

ALL = "all"


def _metrics(labels: np.ndarray, scores: np.ndarray, threshold: float, bootstrap: int, seed: int,
             groups: np.ndarray | None = None) -> Metrics:
    return compute_metrics(labels, scores, threshold=threshold, bootstrap=bootstrap, seed=seed, groups=groups)


def sample_groups(samples: Sequence[Sample]) -> np.ndarray | None:
    """Each sample's group (None: alone) when any sample has one, for a cluster bootstrap; else None."""
    if not any(s.group for s in samples):
        return None
    return np.array([s.group for s in samples], dtype=object)


def per_generator(table: ScoreTable, *, bootstrap: int = 0, seed: int = 0) -> dict[str, dict[str, Metrics]]:
    """Metrics for real vs each generator and real vs all, per D3 split (key ``all`` = pooled).

    Returns ``{split: {generator or "all": Metrics}}``; the split key is ``all`` for the whole
    set, and ``augm`` / ``no_augm`` as well when the samples carry a D3 split.
    """
    ok = table.ok
    if not ok.any():
        raise EvaluationError(f"detector {table.name!r} could not score any image ({len(table.errors)} errors)")
    labels, gens, scores = table.labels[ok], table.generators[ok], table.scores[ok]
    groups = sample_groups(table.samples)
    groups = groups[ok] if groups is not None else None
    splits = np.array([s.split or "" for s in table.samples], dtype=object)[ok]
    out: dict[str, dict[str, Metrics]] = {}
    split_names = [ALL] + [s for s in dict.fromkeys(splits) if s]
    generators = list(dict.fromkeys(g for g, y in zip(gens, labels) if y == 1))
    for split in split_names:
        in_split = np.ones(labels.size, bool) if split == ALL else splits == split
        rows: dict[str, Metrics] = {}
        for gen in [ALL] + generators:
            mask = in_split & ((gens == REAL) | (gens == gen) if gen != ALL else True)
            if mask.any():
                rows[gen] = _metrics(labels[mask], scores[mask], table.threshold, bootstrap, seed,
                                     groups[mask] if groups is not None else None)
        out[split] = rows
    return out


def fpr_on_real(table: ScoreTable, *, bootstrap: int = 0, seed: int = 0, top: int = 10) -> dict[str, Any]:
    """False-positive rate of a detector on real photos only, with the most 'fake' files listed."""
    ok = table.ok
    if np.any(table.labels[ok] != 0):
        raise EvaluationError("the false-positive protocol takes real images only")
    if not ok.any():
        raise EvaluationError(f"detector {table.name!r} could not score any image ({len(table.errors)} errors)")
    scores = table.scores[ok]
    m = compute_metrics(np.zeros(scores.size, np.int8), scores, threshold=table.threshold,
                        bootstrap=bootstrap, seed=seed)
    acc = m.values["acc_real"]
    order = np.argsort(-scores, kind="stable")[:top]
    ids = [s.id for s, k in zip(table.samples, ok) if k]
    return {
        "n": int(scores.size), "errors": len(table.errors), "threshold": table.threshold,
        "fpr": 1.0 - acc.value if acc.value is not None else None,
        "fpr_ci95": [1.0 - acc.high, 1.0 - acc.low] if acc.low is not None else None,
        "score_quantiles": {q: float(np.quantile(scores, float(q))) for q in ("0.5", "0.9", "0.99")},
        "most_fake": [{"id": ids[i], "score": float(scores[i])} for i in order],
    }  # fmt: skip


def split_reals(samples: Sequence[Sample], train_fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the real samples that train and that test: whole groups on one side, never split per image.

    A real image's group (its source: folder, camera, group column) goes to one side whole, and a
    real photo's copies in the D3 splits (augm/real/x, no_augm/real/x) go to the same side.
    """
    photos: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        if s.label == 0:
            key = s.id[len(s.split) + 1:] if s.split and s.id.startswith(s.split + "/") else s.id
            photos.setdefault(f"group:{s.group}" if s.group else f"image:{key}", []).append(i)
    groups = list(photos.values())
    if len(groups) < 2:
        raise EvaluationError("leave-one-generator-out needs at least 2 real images or real groups (train and test); "
                              f"found {len(groups)}")
    perm = np.random.default_rng(seed).permutation(len(groups))
    n_train = min(max(1, int(round(len(groups) * train_fraction))), len(groups) - 1)
    real_train = np.array([i for g in perm[:n_train] for i in groups[g]], np.int64)
    real_test = np.array([i for g in perm[n_train:] for i in groups[g]], np.int64)
    return real_train, real_test


def leave_one_out(detector: Any, samples: list[Sample], *, kinds: Sequence[str] = ("linear",),
                  real_train_fraction: float = 0.5, seed: int = 0, bootstrap: int = 0,
                  embeddings: np.ndarray | None = None, name: str | None = None) -> dict[str, dict[str, Metrics]]:
    """Leave-one-generator-out: fit without generator G, test on G (and held-out reals), for every G.

    A CoDE detector is embedded once and a fresh head of each kind is fitted per G; any other
    detector-like object needs ``fit(real_sources, fake_sources)`` and is refitted per G.
    Returns ``{kind: {G: Metrics}}``; for another detector the key is its display ``name``
    (default: its ``name`` attribute or class name).
    """
    gens = list(dict.fromkeys(s.generator for s in samples if s.label == 1))
    if len(gens) < 2:
        raise EvaluationError(f"leave-one-generator-out needs at least 2 generators, found {gens or 'none'}")
    real_train, real_test = split_reals(samples, real_train_fraction, seed)
    gen_of = np.array([s.generator for s in samples], dtype=object)
    if is_code_detector(detector):
        return _logo_embeddings(detector, samples, gens, gen_of, real_train, real_test, kinds, bootstrap, seed,
                                embeddings)
    if not hasattr(detector, "fit"):
        raise EvaluationError("leave-one-generator-out needs a CoDE detector or an object with fit(real, fake)")
    out: dict[str, Metrics] = {}
    for g in gens:
        fake_train = np.flatnonzero((gen_of != g) & (gen_of != REAL))
        test = np.concatenate([real_test, np.flatnonzero(gen_of == g)])
        s = fit_and_score(detector, samples, real_train, fake_train, test)
        y = np.array([samples[i].label for i in test])
        keep = np.isfinite(s)
        grp = sample_groups([samples[i] for i in test])
        out[g] = _metrics(y[keep], s[keep], DEFAULT_THRESHOLD, bootstrap, seed, grp[keep] if grp is not None else None)
    return {name or getattr(detector, "name", None) or type(detector).__name__: out}


def _logo_embeddings(det: Any, samples: list[Sample], gens: list[str], gen_of: np.ndarray, real_train: np.ndarray,
                     real_test: np.ndarray, kinds: Sequence[str], bootstrap: int, seed: int,
                     emb: np.ndarray | None) -> dict[str, dict[str, Metrics]]:
    if emb is None:
        emb, _ = embed_samples(det, [s.source for s in samples], desc="embedding (leave-one-out)")
    ok = np.isfinite(emb).all(axis=1)
    labels = np.array([s.label for s in samples], np.int64)
    out: dict[str, dict[str, Metrics]] = {k: {} for k in kinds}
    for g in gens:
        fake_train = np.flatnonzero((gen_of != g) & (gen_of != REAL) & ok)
        train = np.concatenate([real_train[ok[real_train]], fake_train])
        test = np.concatenate([real_test[ok[real_test]], np.flatnonzero((gen_of == g) & ok)])
        for kind in kinds:
            probs = head_scores(kind, emb, labels, train, test)
            out[kind][g] = _metrics(labels[test], probs, DEFAULT_THRESHOLD, bootstrap, seed,
                                    sample_groups([samples[i] for i in test]))
    return out


def fit_and_score(detector: Any, samples: Sequence[Sample], real_train: np.ndarray, fake_train: np.ndarray,
                  test: np.ndarray) -> np.ndarray:
    """Fit a ``fit(real, fake)`` detector on the given samples and score ``test`` (probability when it has one)."""
    detector.fit([samples[i].source for i in real_train], [samples[i].source for i in fake_train])
    preds = detector.predict([samples[i].source for i in test])
    return np.array([p.probability if getattr(p, "probability", None) is not None else p.score for p in preds],
                    np.float64)


def head_scores(kind: str, emb: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """A fresh head of ``kind`` fitted on the ``train`` embeddings: P(fake) of the ``test`` ones."""
    from ..model.heads import make_head

    head = make_head(kind).fit(emb[train], labels[train])
    return head.probability(head.decision_function(emb[test]))
