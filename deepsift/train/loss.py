"""The CoDE objective as a function of embeddings (reference section 2, with the fix L = L_real + L_fake).

A batch of ``B`` records gives ``B x 8`` embeddings in :data:`VIEWS` order: for the real image
``r`` and the fake ``x`` of each record, the untouched view, an augmented copy ``A``, a global
crop ``G`` and a local crop ``L`` (both also augmented). With ``s`` the cosine similarity and
``pi, pi'`` derangements of the batch (the positive is a DIFFERENT image of the SAME class)::

    L_real = 1/2 [NCE(r_i, A(r_pi(i)), {A(x_j)}) + NCE(L(r_i), G(r_i), {G(x_j)})]
    L_fake = 1/2 [NCE(x_i, A(x_pi'(i)), {A(r_j)}) + NCE(L(x_i), G(x_i), {G(r_j)})]
    L      = L_real + L_fake            (the public code trains on L_real + L_real)

Negatives are the other class's views in the batch; ``negatives`` may pass larger (gathered)
sets of them for ``--global-negatives``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

VIEWS: tuple[str, ...] = ("real", "real_aug", "real_global", "real_local",
                          "fake", "fake_aug", "fake_global", "fake_local")
"""The 8 views of a record, in the order of the second axis of the embeddings."""

TEMPERATURE = 0.1


def derangement(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly drawn permutation of ``range(n)`` with no fixed point (rejection sampling; n >= 2)."""
    if n < 2:
        raise ValueError(f"a permutation without fixed points needs at least 2 items, got {n}")
    idx = torch.arange(n)
    while True:  # P(derangement) -> 1/e: about 2.7 draws on average
        perm = torch.randperm(n, generator=generator)
        if not bool((perm == idx).any()):
            return perm


def info_nce(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, tau: float = TEMPERATURE) -> torch.Tensor:
    """Mean over rows of -log(e^{s(q,k)/tau} / (e^{s(q,k)/tau} + sum_j e^{s(q,n_j)/tau})); inputs L2-normalised."""
    pos = (query * key).sum(dim=-1, keepdim=True)
    neg = query @ negatives.t()
    logits = torch.cat([pos, neg], dim=1) / tau
    return -F.log_softmax(logits, dim=1)[:, 0].mean()


def _wide(t: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision embeddings (autocast), the dtype as given otherwise."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


@dataclass
class LossParts:
    """The loss and its two halves (tensors; ``total`` carries the gradient)."""

    total: torch.Tensor
    real: torch.Tensor
    fake: torch.Tensor


def code_loss(emb: torch.Tensor, perm_real: torch.Tensor, perm_fake: torch.Tensor, tau: float = TEMPERATURE,
              negatives: torch.Tensor | None = None, include_fake: bool = True) -> LossParts:
    """L_real + L_fake for embeddings ``emb`` of shape (B, 8, D) in :data:`VIEWS` order.

    ``negatives`` (N, 8, D), when given, replaces the batch as the source of negatives (the
    embeddings of every rank for ``--global-negatives``). ``include_fake=False`` gives the public
    code's L_real + L_real (kept for the test that shows the difference).
    """
    if emb.ndim != 3 or emb.shape[1] != len(VIEWS):
        raise ValueError(f"embeddings must have shape (B, {len(VIEWS)}, D), got {tuple(emb.shape)}")
    z = F.normalize(_wide(emb), dim=-1)
    n = z if negatives is None else F.normalize(_wide(negatives), dim=-1)
    r, ra, rg, rl, x, xa, xg, xl = z.unbind(dim=1)
    nra, nrg, nxa, nxg = n[:, 1], n[:, 2], n[:, 5], n[:, 6]
    l_real = 0.5 * (info_nce(r, ra[perm_real], nxa, tau) + info_nce(rl, rg, nxg, tau))
    l_fake = 0.5 * (info_nce(x, xa[perm_fake], nra, tau) + info_nce(xl, xg, nrg, tau))
    total = l_real + l_fake if include_fake else l_real + l_real
    return LossParts(total=total, real=l_real.detach(), fake=l_fake.detach())
