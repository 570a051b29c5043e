"""Run an adaptation's steps in order (``deepsift adapt``): each is skipped on resume once its result is written."""
from __future__ import annotations

from typing import Callable

from .build import step_build
from .finetune import step_after2, step_embed2, step_fine_tune, step_refit2
from .loop import Run, step_after, step_before, step_collect, step_embed, step_refit, step_write
from .plan import STEPS, AdaptPlan

STEP_FUNCS: dict[str, Callable[[Run], dict]] = {
    "build": step_build, "collect": step_collect, "embed": step_embed, "before": step_before,
    "refit-heads": step_refit, "after": step_after, "fine-tune": step_fine_tune, "embed-2": step_embed2,
    "refit-heads-2": step_refit2, "after-2": step_after2, "write-model": step_write,
}
"""Each step's function, by name (:data:`~deepsift.adapt.plan.STEPS` gives the order)."""


def run_adapt(plan: AdaptPlan, *, resume: bool = False, say: Callable[[str], None] = print,
              stop_after: str | None = None) -> Run:
    """Run (or resume) every step of ``plan``; ``stop_after`` ends after that step (tests, staged runs)."""
    run = Run(plan)
    run.start(resume)
    for step in STEPS:
        if run.done(step):
            say(f"{step}: done earlier (kept)")
        else:
            result = STEP_FUNCS[step](run)
            run.write(step, result)
            say(f"{step}: skipped ({result['skipped']})" if result.get("skipped") else f"{step}: done")
        if step == stop_after:
            break
    return run
