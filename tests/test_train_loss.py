"""The CoDE loss: checked against a loop-based formula (trainkit.reference_loss), derangements, gradients, the L_fake fix."""
from __future__ import annotations

import torch

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
    public.total.backward()
    # with L_real + L_real the local crop of the fake never gets a gradient (it only appears in L_fake)
    assert float(emb.grad[:, 7].abs().sum()) == 0.0
