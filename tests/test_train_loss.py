"""The CoDE loss: checked against a loop-based formula (trainkit.reference_loss), derangements, gradients, the L_fake fix."""
from __future__ import annotations

import torch

import pytest

from deepsift.train.loss import code_loss, derangement
from trainkit import reference_loss as _reference


def test_loss_matches_a_loop_formula():
    g = torch.Generator().manual_seed(3)
    for B, D in ((2, 3), (5, 7), (8, 16)):
        emb = torch.randn(B, 8, D, generator=g, dtype=torch.float64)
        pr, pf = derangement(B, g), derangement(B, g)
        got = code_loss(emb, pr, pf).total.item()
        want = _reference(emb.tolist(), pr.tolist(), pf.tolist())
        assert abs(got - want) < 1e-6, (B, got, want)


def test_derangement_has_no_fixed_point_and_covers_all():
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(2000):
        p = derangement(3, g)
        assert sorted(p.tolist()) == [0, 1, 2]
        assert all(p[i] != i for i in range(3))
        seen.add(tuple(p.tolist()))
    assert seen == {(1, 2, 0), (2, 0, 1)}  # both derangements of 3 items are drawn
    for n in (2, 4, 17, 64):
        p = derangement(n, g)
        assert not bool((p == torch.arange(n)).any()) and sorted(p.tolist()) == list(range(n))


def test_gradient_reaches_every_view():
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(6, 8, 10, generator=g, requires_grad=True)
    code_loss(emb, derangement(6, g), derangement(6, g)).total.backward()
    norms = emb.grad.norm(dim=-1)  # (B, 8)
    assert bool((norms > 0).all()), norms


def test_public_code_defect_gives_another_value_and_no_gradient_to_fake_positives():
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(4, 8, 6, generator=g, requires_grad=True)
    pr, pf = derangement(4, g), derangement(4, g)
    fixed = code_loss(emb, pr, pf)
    public = code_loss(emb, pr, pf, include_fake=False)
    assert abs(fixed.total.item() - public.total.item()) > 1e-3
    assert abs(fixed.total.item() - (fixed.real + fixed.fake).item()) < 1e-6
    assert abs(public.total.item() - 2 * public.real.item()) < 1e-6  # the public code's value: L_real twice
    public.total.backward()
    # with L_real + L_real the local crop of the fake never gets a gradient (it only appears in L_fake)
    assert float(emb.grad[:, 7].abs().sum()) == 0.0


def test_global_negatives_are_normalised_like_the_batch_and_extend_it():
    g = torch.Generator().manual_seed(4)
    emb = torch.randn(4, 8, 6, generator=g, dtype=torch.float64)
    other = torch.randn(3, 8, 6, generator=g, dtype=torch.float64)
    pr, pf = derangement(4, g), derangement(4, g)
    scale = torch.rand(4, 8, 1, generator=g, dtype=torch.float64) * 5 + 0.1  # cosine similarity ignores length
    same = code_loss(emb, pr, pf, negatives=emb * scale).total.item()
    assert abs(same - code_loss(emb, pr, pf).total.item()) < 1e-9
    # the embeddings of other ranks are extra negatives: the loop formula with every row as a negative
    got = code_loss(emb, pr, pf, negatives=torch.cat([emb, other * scale[:3]])).total.item()
    want = _reference_with_negatives(emb.tolist(), (torch.cat([emb, other])).tolist(), pr.tolist(), pf.tolist())
    assert abs(got - want) < 1e-9, (got, want)


def _reference_with_negatives(emb: list, negs: list, pr: list[int], pf: list[int], tau: float = 0.1) -> float:
    """trainkit.reference_loss with the negatives drawn from ``negs`` instead of the batch."""
    from trainkit import _nce

    B = len(emb)
    real = fake = 0.0
    for i in range(B):
        real += 0.5 * (_nce(emb[i][0], emb[pr[i]][1], [n[5] for n in negs], tau)
                       + _nce(emb[i][3], emb[i][2], [n[6] for n in negs], tau))
        fake += 0.5 * (_nce(emb[i][4], emb[pf[i]][5], [n[1] for n in negs], tau)
                       + _nce(emb[i][7], emb[i][6], [n[2] for n in negs], tau))
    return real / B + fake / B


@pytest.mark.parametrize("shape", [(4, 7, 6), (4, 9, 6), (8, 6), (2, 4, 8, 6)])
def test_embeddings_of_the_wrong_shape_are_refused(shape):
    g = torch.Generator().manual_seed(5)
    with pytest.raises(ValueError, match=r"must have shape \(B, 8, D\)"):
        code_loss(torch.randn(*shape, generator=g), derangement(4, g), derangement(4, g))
