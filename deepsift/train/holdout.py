"""The held-out records of a run and their three roles: fit the probe, choose the epoch, score the report.

The records kept out of training (:func:`deepsift.train.data.split_holdout`) are split, by the
run's seed, into disjoint sets so that no figure is scored on a record that shaped it:

* ``fit``: the per-epoch linear probe is fitted on them (and the saved heads, with ``select``);
* ``select``: the per-epoch probe is scored on them: that accuracy picks the best epoch and drives
  early stopping;
* ``report``: only with ``--leave-out``: the leave-out report scores them (never fitted on, never
  used to choose anything).

Without ``--leave-out`` the held-out records are split in halves (fit, select) and ``report`` is empty.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import TrainConfig
from .data import Record, TrainIndex, split_holdout


@dataclass
class HeldOut:
    """The held-out records by role (disjoint lists)."""

    fit: list[Record] = field(default_factory=list)
    select: list[Record] = field(default_factory=list)
    report: list[Record] = field(default_factory=list)

    @property
    def heads(self) -> list[Record]:
        """The records the saved heads are fitted on: ``fit`` and ``select`` (never ``report``)."""
        return self.fit + self.select


def split_roles(held: list[Record], seed: int, report: bool) -> HeldOut:
    """Split ``held`` by ``seed`` into fit / select (/ report when ``report``), each at least one record."""
    order = np.random.default_rng([seed, 6007]).permutation(len(held)).tolist()
    parts = 3 if report else 2
    if len(held) < parts:
        raise ValueError(f"{len(held)} held-out record(s) cannot be split {parts} ways")
    n_fit = -(-len(held) // parts)  # ceil: the probe gets the larger share
    n_sel = (len(held) - n_fit) // (parts - 1) if report else len(held) - n_fit
    pick = [held[i] for i in order]
    roles = HeldOut(fit=pick[:n_fit], select=pick[n_fit:n_fit + n_sel], report=pick[n_fit + n_sel:])
    by_id = {id(r): k for k, r in enumerate(held)}  # keep each role in index order (reads stay local)
    for name in ("fit", "select", "report"):
        setattr(roles, name, sorted(getattr(roles, name), key=lambda r: by_id[id(r)]))
    return roles


def held_out(index: TrainIndex, cfg: TrainConfig) -> tuple[list[Record], HeldOut]:
    """(training records, held-out records by role) of a run: the one place both training and the report read."""
    train_recs, held = split_holdout(index, cfg.holdout, cfg.seed)
    return train_recs, split_roles(held, cfg.seed, report=bool(cfg.leave_out))
