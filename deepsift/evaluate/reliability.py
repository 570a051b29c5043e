"""When a figure is unreliable: the rule behind the report's ⚠ mark, from the figure's own uncertainty.

A figure is marked unreliable when one of these holds (checked in this order):

1. its samples come in groups (sources, prompts) and a class has fewer than :data:`MIN_GROUPS`
   groups: no interval can show how much another choice of groups would move it;
2. a TPR at a false-positive rate needs at least ``1 / rate`` real images (100 for 1 %, 20 for
   5 %): with fewer, the threshold rests on no real image above it;
3. its 95 % interval is wider than :data:`MAX_WIDTH`. The width is that of the bootstrap interval
   (whole groups resampled when samples come in groups) when one was computed, else an analytic
   one: Hanley & McNeil (1982) for AUROC, a Wilson score interval on the figure's value over the
   count it rests on for the others (see :data:`WILSON_N`). Neither can be narrower than the
   Wilson interval of a perfect score on that count, ``z^2 / (n + z^2)``: a resample of a handful
   of perfectly separated images shows no spread, yet 1.0 on 8 images is not a reliable 1.0.
   With :data:`MAX_WIDTH` 0.2 this floor alone marks every figure resting on fewer than 16 images.
   When images come in groups and no bootstrap was run, the analytic interval counts groups, not
   images (the groups are the independent units; images of one source are not).

A large set with clear figures carries no mark; a mark names its reason in ``metrics.json``.
"""
from __future__ import annotations

import math

MAX_WIDTH = 0.2  # a 95% interval wider than this (about +-0.1) marks the figure unreliable
MIN_GROUPS = 20  # fewer groups of a class than this: no interval shows the spread between groups
MIN_REALS = {"tpr@1%fpr": 100, "tpr@5%fpr": 20}  # a TPR at FPR r needs at least 1/r real images
Z95 = 1.959963984540054
# the count each figure rests on (its Wilson interval and floor; AUROC's analytic interval is Hanley-McNeil)
WILSON_N = {"auroc": "smaller class", "eer": "smaller class", "ap": "fake", "acc_fake": "fake", "f1": "fake",
            "tpr@1%fpr": "fake", "tpr@5%fpr": "fake", "acc_real": "real", "accuracy": "all",
            "balanced_accuracy": "both", "ece": "all"}

RULE_SHORT = (f"A ⚠ marks an unreliable figure: its 95% interval is wider than {MAX_WIDTH:.2f}, or it rests on too "
              f"few real images for its false-positive rate or on fewer than {MIN_GROUPS} groups of a class.")
RULE_TEXT = (f"A ⚠ marks an unreliable figure: its 95% interval is wider than {MAX_WIDTH:.2f} (the bootstrap "
             "interval when one was run, else Hanley-McNeil for AUROC and a Wilson interval for the rates, counting "
             "groups when images come in groups; never "
             "narrower than that of a perfect score on the images it rests on, so any figure on fewer than 16 "
             "images of its class is marked), or a TPR at 1% (5%) FPR rests on fewer than 100 (20) real images, "
             f"or images come in groups and a class has fewer than {MIN_GROUPS} of them.")


def wilson_width(p: float, n: float) -> float:
    """Width of the 95% Wilson score interval of a proportion ``p`` observed over ``n`` trials (1.0 when n < 1)."""
    if n < 1:
        return 1.0
    p = min(max(p, 0.0), 1.0)
    z2 = Z95 * Z95
    return 2 * Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)


def hanley_mcneil_width(auroc: float, n_fake: int, n_real: int) -> float:
    """Width of the 95% normal interval of an AUROC from its Hanley & McNeil (1982) standard error."""
    if n_fake < 1 or n_real < 1:
        return 1.0
    a = min(max(auroc, 0.0), 1.0)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_fake - 1) * (q1 - a * a) + (n_real - 1) * (q2 - a * a)) / (n_fake * n_real)
    return 2 * Z95 * math.sqrt(max(var, 0.0))


def wilson_count(name: str, n_real: int, n_fake: int) -> float:
    """The count a figure rests on, for its Wilson interval and floor (see :data:`WILSON_N`)."""
    kind = WILSON_N.get(name, "smaller class")
    if kind == "fake":
        return n_fake
    if kind == "real":
        return n_real
    if kind == "all":
        return n_real + n_fake
    if kind == "both":  # mean of two rates: variance p(1-p)/4 * (1/n_real + 1/n_fake)
        return 4 / (1 / n_real + 1 / n_fake) if n_real and n_fake else 0
    return min(n_real, n_fake)


def interval_width(name: str, value: float, low: float | None, high: float | None, n_real: int, n_fake: int) -> float:
    """The width the rule judges: bootstrap or analytic, never below a perfect score's Wilson width on its count."""
    n = wilson_count(name, n_real, n_fake)
    if low is not None and high is not None:
        width = high - low
    elif name == "auroc":
        width = hanley_mcneil_width(value, n_fake, n_real)
    else:
        width = wilson_width(value, n)
    return max(width, wilson_width(1.0, n))


def unreliable_reason(name: str, value: float | None, low: float | None, high: float | None, n_real: int,
                      n_fake: int, n_real_groups: int | None = None, n_fake_groups: int | None = None) -> str | None:
    """Why the figure ``name`` is unreliable by the module's rule, or None when it is not (or is undefined)."""
    if value is None:
        return None
    groups = [g for g, n in ((n_real_groups, n_real), (n_fake_groups, n_fake)) if g is not None and n]
    if groups and min(groups) < MIN_GROUPS:
        return f"fewer than {MIN_GROUPS} groups of a class ({n_real_groups} real, {n_fake_groups} generated)"
    need = MIN_REALS.get(name)
    if need and n_real < need:
        return f"{n_real} real images, fewer than the {need} this false-positive rate needs"
    if groups and (low is None or high is None):  # no cluster bootstrap: the analytic interval counts groups
        n_real, n_fake = n_real_groups or n_real, n_fake_groups or n_fake
    width = interval_width(name, value, low, high, n_real, n_fake)
    if width > MAX_WIDTH:
        return f"95% interval {width:.2f} wide, over {MAX_WIDTH:.2f}"
    return None
