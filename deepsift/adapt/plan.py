"""What ``deepsift adapt`` will do: the inputs, the split rule, the targets, the routes and the steps in order."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..exceptions import UsageError

STEPS = ("build", "collect", "embed", "before", "refit-heads", "after", "fine-tune", "embed-2", "refit-heads-2",
         "after-2", "write-model")
"""The steps, in order; each writes ``OUT/steps/NN-STEP.json`` (a skipped one says why) and is kept on resume."""

FINE_TUNE_MODES = ("never", "auto", "always")
"""When adapt fine-tunes: never, only when refitting the heads misses the target (auto), or always."""

RUNTIME = ("device", "batch_size", "workers", "out", "ray", "threads")
"""Plan fields that change how, never what, is computed: left out of the resume key."""


@dataclass(frozen=True)
class AdaptPlan:
    """Everything that decides the result of an adaptation (its hash guards ``--resume``)."""

    model: str
    generator: str  # the new generator's name
    images: str  # folder of its images (sub-folders = groups, e.g. one per prompt); "" when built (generate)
    data: str  # the labelled dataset of the generators the model already knows (real + fake/<gen>/)
    out: str
    real: str = ""  # a folder of real images beside ``data`` (D3 parquet shards hold none); "" when data has its own
    heads: tuple[str, ...] = ("linear", "knn")
    classifier: str = "linear"  # the head whose figures decide (and that detect uses by default)
    target_auroc: float = 0.95  # on held-out images of the new generator
    forget_tolerance: float = 0.02  # largest AUROC drop allowed on any old generator
    test_fraction: float = 0.5  # share of each generator's (and the reals') groups kept for measuring
    bootstrap: int = 200
    seed: int = 0
    min_test_images: int = 8  # fewer held-out images of the new generator: refused (nothing to measure)
    follow_links: bool = False
    device: str = "auto"
    batch_size: int = 32
    workers: str | int = "auto"
    fine_tune: str = "auto"  # never | auto (only when the head refit misses) | always
    fine_tune_steps: int = 500  # optimiser steps of the fine-tune (train --init MODEL --steps N)
    fine_tune_epochs: int = 5  # epochs in those steps: a checkpoint and a held-out head score at the end of each
    fine_tune_lr: float = 1e-4
    train_config: dict = field(default_factory=dict)  # further train keys (a train YAML file's content)
    generate: str = ""  # NAME=KIND:SOURCE: build the new generator's images (data build) instead of a folder
    prompts: str = ""  # the D3 shards / JSONL / CSV prompts the build uses
    count: int = 0  # prompts built (the first N records); 0 = all
    ray: str | None = None  # the build runs on Ray (auto or an address)
    threads: int | None = None  # torch CPU threads of the build (the same value gives the same image bytes)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.test_fraction < 1.0:
            raise UsageError(f"the test fraction must be in (0, 1), got {self.test_fraction}")
        if self.classifier not in self.heads:
            raise UsageError(f"the deciding head {self.classifier!r} must be among the refitted heads {', '.join(self.heads)}")
        if self.fine_tune not in FINE_TUNE_MODES:
            raise UsageError(f"the fine-tune mode must be one of {', '.join(FINE_TUNE_MODES)}, got {self.fine_tune!r}")
        if self.fine_tune_steps < 1 or self.fine_tune_epochs < 1 or not self.fine_tune_lr > 0:
            raise UsageError("the fine-tune steps and epochs must be >= 1 and its learning rate > 0")
        if bool(self.generate) == bool(self.images):
            raise UsageError("give the new generator's images (a folder) or a generator spec to build them"
                             + (", not both" if self.images else ""))
        if self.generate and not self.prompts:
            raise UsageError("building the new generator's images needs the prompts (D3 shards, JSONL or CSV)")

    def key(self) -> str:
        """A hash of the fields that decide the result (paths, targets, split, routes); runtime options excluded."""
        d = {k: v for k, v in asdict(self).items() if k not in RUNTIME and not (k == "real" and not v)}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def describe(self) -> list[str]:
        """The plan in words (``--dry-run``)."""
        src = (f"built by {self.generate} from {self.prompts}" + (f" (first {self.count} records)" if self.count else "")
               + (f" on Ray ({self.ray})" if self.ray else "")) if self.generate else self.images
        ft = {"never": "never", "auto": "only when refitting the heads misses the target",
              "always": "always (both routes measured)"}[self.fine_tune]
        return [
            f"adapt {self.model} to the new generator {self.generator!r} ({src})",
            f"  known generators and reals: {self.data}" + (f" (reals: {self.real})" if self.real else ""),
            f"  split: {self.test_fraction:.0%} of each generator's groups (sub-folders, prompts; else images) held "
            f"out for measuring, the rest fits; seed {self.seed}",
            "   1 build          " + (f"data build -g {self.generate} on the prompts (resumable; images in "
                                       f"steps/build/)" if self.generate else "skipped: the images are given"),
            "   2 collect        list the new generator's images and the dataset's, split them (grouped)",
            "   3 embed          embed every image once with the model's backbone",
            f"   4 before         the model as it is: AUROC and TPR@1%FPR (bootstrap {self.bootstrap}) on the new "
            f"generator and on each known one",
            f"   5 refit-heads    fit heads {', '.join(self.heads)} (+ one per generator) on the fitting images, "
            f"new generator included (kNN: the new examples are simply added)",
            f"   6 after          the same figures; target: AUROC >= {self.target_auroc} on the new generator, "
            f"no known generator down by more than {self.forget_tolerance}",
            f"   7 fine-tune      {ft}: train --init MODEL ({self.fine_tune_steps} steps, {self.fine_tune_epochs} "
            f"epochs, lr {self.fine_tune_lr:g}) on the fitting images of the new generator with replay of every "
            f"known generator's and the reals' fitting images",
            "   8 embed-2        embed every image with the fine-tuned backbone",
            "   9 refit-heads-2  the heads again, on the fine-tuned embeddings",
            "  10 after-2        the same figures and the same target, forgetting against step 4",
            f"  11 write-model    {Path(self.out) / 'model'}: the cheapest route that reached the target, else "
            f"the one closest to it; weights, heads, lineage.json and a model card (README.md)",
        ]
