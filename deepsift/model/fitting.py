"""Fit classifier heads from labelled image folders (``deepsift heads fit``)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..decision import decide
from ..exceptions import DeepsiftWarning, UsageError, input_not_found
from ..data.layout import generator_folders as _layout_generator_folders
from ..data.layout import images_under
from .detector import Detector
from .headset import check_heads_folder, save_headset
from .heads import HEAD_KINDS, Head, make_head


def generator_folders(fake_dirs: list[str]) -> dict[str, list[Path]]:
    """Map generator name -> folders: each fake folder, or the sub-folders of a single one (the one layout reader's rule)."""
    for d in map(Path, fake_dirs):
        if not d.is_dir():
            raise input_not_found(d) if not d.exists() else UsageError(f"{d}: not a folder of generated images")
    return _layout_generator_folders(list(fake_dirs))


MIN_PER_CLASS = 2
"""Fewest images of a class (and of a generator, for its own head): the kNN head's leave-one-out calibration
compares each image with the others of its class, so one image alone has nothing to compare with."""


def _count(folders: list[Path], follow_links: bool) -> int:
    return sum(len(images_under(f, follow_links=follow_links)[0]) for f in folders)


def _check_counts(real: int, fakes: dict[str, int], when: str) -> None:
    """One line when a class has fewer than MIN_PER_CLASS images (``when``: 'found' or 'readable')."""
    n_fake = sum(fakes.values())
    for name, n in (("real", real), ("generated", n_fake)):
        if n < MIN_PER_CLASS:
            raise UsageError(f"heads fit needs at least {MIN_PER_CLASS} {name} images ({n} {when}): the heads learn "
                             f"real against generated, and calibrate each image against the others of its class")


def _embed_folders(det: Detector, folders: list[Path], follow_links: bool = False) -> tuple[np.ndarray, int]:
    """Embed every image under ``folders``; returns (embeddings, number of unreadable files)."""
    sources = [s for f in folders for s in images_under(f, follow_links=follow_links)[0]]
    if not sources:
        raise UsageError(f"no images found in {', '.join(map(str, folders))}")
    emb = det.embed(sources)
    ok = np.isfinite(emb).all(axis=1)
    return emb[ok], int((~ok).sum())


def _holdout_accuracy(kind: str, X: np.ndarray, y: np.ndarray, seed: int = 0) -> float | None:
    """Balanced accuracy of ``kind`` on a stratified 20 % hold-out (None when too few samples)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        if len(idx) < 5:
            return None
        test[rng.choice(idx, max(1, len(idx) // 5), replace=False)] = True
    with warnings.catch_warnings():  # a scratch head: only the saved heads' warnings are the user's
        warnings.simplefilter("ignore", DeepsiftWarning)
        head = make_head(kind).fit(X[~test], y[~test])
    pred = decide(head.predict_proba(X[test])[:, 1])  # the one decision rule, as detect labels
    return float(np.mean([np.mean(pred[y[test] == c] == c) for c in (0, 1)]))


def fit_heads_from_folders(real_dirs: list[str], fake_dirs: list[str], model: str | os.PathLike, out: str,
                           kinds: list[str] | tuple[str, ...] = HEAD_KINDS, per_generator: bool = True,
                           follow_links: bool = False, **detector_kwargs: object) -> list[str]:
    """Embed the folders, fit each head kind (and per-generator heads), save them; returns summary lines."""
    bad = [k for k in kinds if k not in HEAD_KINDS]
    if bad or not kinds:
        raise UsageError(f"head kinds must be among {', '.join(HEAD_KINDS)}, got {', '.join(kinds) or 'none'}")
    gens = generator_folders(fake_dirs)
    check_heads_folder(out)  # before the embedding work: an unwritable --out fails in a second, not an hour
    _check_counts(_count([Path(d) for d in real_dirs], follow_links),
                  {g: _count(f, follow_links) for g, f in gens.items()}, "found")  # before any embedding
    det = Detector.load_backbone_only(model, **detector_kwargs)  # type: ignore[arg-type]
    real, real_bad = _embed_folders(det, [Path(d) for d in real_dirs], follow_links)
    fakes = {g: _embed_folders(det, folders, follow_links) for g, folders in gens.items()}
    _check_counts(len(real), {g: len(e) for g, (e, _) in fakes.items()}, "readable")
    lines = [f"real: {len(real)} image(s) ({real_bad} unreadable)"]
    lines += [f"fake/{g}: {len(e)} image(s) ({b} unreadable)" for g, (e, b) in fakes.items()]
    few = [g for g, (e, _) in fakes.items() if len(e) < MIN_PER_CLASS]
    if per_generator and len(fakes) > 1:
        lines += [f"fake/{g}: {len(fakes[g][0])} readable image(s), too few for a head of its own (needs "
                  f"{MIN_PER_CLASS}); it trains the pooled heads only" for g in few]
    all_fake = np.concatenate([e for e, _ in fakes.values()])
    X = np.concatenate([real, all_fake])
    y = np.r_[np.zeros(len(real), np.int64), np.ones(len(all_fake), np.int64)]
    heads: dict[str, Head] = {}
    with warnings.catch_warnings(record=True) as caught:  # the same notice from each per-generator head: say it once
        warnings.simplefilter("always", DeepsiftWarning)
        _fit_all(heads, kinds, X, y, real, fakes, few, per_generator, lines)
    said: dict[str, int] = {}
    for w in caught:
        if issubclass(w.category, DeepsiftWarning):
            said[str(w.message)] = said.get(str(w.message), 0) + 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for text, n in said.items():
        warnings.warn(text + (f" (the same for {n} heads fitted on these real images)" if n > 1 else ""),
                      DeepsiftWarning, stacklevel=2)
    save_headset(heads, out, model=str(model), preprocessing=det.preprocessing, backbone_sha256=det.fingerprint,
                 embedding_dim=int(det.backbone.config.hidden_size))
    lines.append(f"saved {len(heads)} head(s) to {out}: {', '.join(heads)}")
    return lines


def _fit_all(heads: dict[str, Head], kinds: list[str] | tuple[str, ...], X: np.ndarray, y: np.ndarray,
             real: np.ndarray, fakes: dict, few: list[str], per_generator: bool, lines: list[str]) -> None:
    """Fit each head kind on everything, and one per generator (``kind:generator``) with enough images."""
    for kind in kinds:
        heads[kind] = make_head(kind).fit(X, y)
        acc = _holdout_accuracy(kind, X, y)
        lines.append(f"head {kind}: hold-out balanced accuracy {'n/a' if acc is None else f'{acc:.3f}'}")
        if per_generator and len(fakes) > 1:
            for g, (e, _) in fakes.items():
                if g in few:
                    continue
                Xg = np.concatenate([real, e])
                yg = np.r_[np.zeros(len(real), np.int64), np.ones(len(e), np.int64)]
                heads[f"{kind}:{g}"] = make_head(kind).fit(Xg, yg)
