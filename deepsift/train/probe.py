"""The per-epoch linear probe: embed held-out records, refit the linear head, score it on the other half."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..decision import decide
from ..exceptions import DeepsiftWarning
from ..images import normalize_batch
from ..model.heads import make_head


@torch.no_grad()
def embed_uint8(model: torch.nn.Module, pixels: np.ndarray, device: torch.device, batch: int = 64,
                bf16: bool = False) -> np.ndarray:
    """CLS embeddings (float32, CPU) of (N, 224, 224, 3) uint8 images, the model put in eval mode meanwhile."""
    was = model.training
    model.eval()
    out = []
    try:
        for s in range(0, len(pixels), batch):
            x = normalize_batch(pixels[s:s + batch]).to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                h = model(pixel_values=x).last_hidden_state[:, 0]
            out.append(h.float().cpu().numpy())
    finally:
        model.train(was)
    return np.concatenate(out) if out else np.empty((0, 0), np.float32)


def split_halves(labels: np.ndarray, seed: int) -> np.ndarray:
    """A boolean mask: True for the fitting half, stratified by label (seeded)."""
    rng = np.random.default_rng([seed, 31337])
    fit = np.zeros(len(labels), bool)
    for c in (0, 1):
        idx = np.flatnonzero(labels == c)
        fit[rng.permutation(idx)[: (len(idx) + 1) // 2]] = True
    return fit


def probe_accuracy(emb: np.ndarray, labels: np.ndarray, seed: int) -> float | None:
    """Balanced accuracy of a linear head fitted on one half and scored on the other (None if too few)."""
    if len(labels) < 4 or len(set(labels.tolist())) < 2:
        return None
    fit = split_halves(labels, seed)
    if len(set(labels[fit].tolist())) < 2 or len(set(labels[~fit].tolist())) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head = make_head("linear").fit(emb[fit], labels[fit])
    pred = decide(head.predict_proba(emb[~fit])[:, 1])
    y = labels[~fit]
    return float(np.mean([np.mean(pred[y == c] == c) for c in (0, 1)]))


def fit_final_heads(emb: np.ndarray, labels: np.ndarray, generators: list[str]) -> dict:
    """The heads saved with the model: linear and kNN on every held-out embedding, plus per-generator linear heads."""
    heads = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeepsiftWarning)
        for kind in ("linear", "knn"):
            heads[kind] = make_head(kind).fit(emb, labels)
        gens = sorted({g for g, y in zip(generators, labels) if y == 1})
        if len(gens) > 1:
            g_arr = np.asarray(generators)
            for g in gens:
                keep = (labels == 0) | (g_arr == g)
                heads[f"linear:{g}"] = make_head("linear").fit(emb[keep], labels[keep])
    return heads
