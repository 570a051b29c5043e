"""The per-epoch linear probe: embed held-out records, fit the linear head on some, score it on others."""
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


def probe_accuracy(fit_emb: np.ndarray, fit_labels: np.ndarray, eval_emb: np.ndarray,
                   eval_labels: np.ndarray) -> float | None:
    """Balanced accuracy on ``eval_*`` of a linear head fitted on ``fit_*`` (other records); None if a class is missing."""
    if len(set(fit_labels.tolist())) < 2 or len(set(eval_labels.tolist())) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head = make_head("linear").fit(fit_emb, fit_labels)
    pred = decide(head.predict_proba(eval_emb)[:, 1])
    return float(np.mean([np.mean(pred[eval_labels == c] == c) for c in (0, 1)]))


def fit_final_heads(emb: np.ndarray, labels: np.ndarray, generators: list[str]) -> dict:
    """The heads saved with the model: linear and kNN on the given embeddings, plus per-generator linear heads."""
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
