"""What ``deepsift adapt`` will do: the inputs, the split rule, the targets, and the steps in order."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..exceptions import UsageError

STEPS = ("collect", "embed", "before", "refit-heads", "after", "write-model")
"""The steps, in order; each writes ``OUT/steps/NN-STEP.json`` and is skipped on resume once written."""


@dataclass(frozen=True)
class AdaptPlan:
    """Everything that decides the result of an adaptation (its hash guards ``--resume``)."""

    model: str
    generator: str  # the new generator's name
    images: str  # folder of its images (sub-folders = groups, e.g. one per prompt)
    data: str  # the labelled dataset of the generators the model already knows (real + fake/<gen>/)
    out: str
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
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.test_fraction < 1.0:
            raise UsageError(f"the test fraction must be in (0, 1), got {self.test_fraction}")
        if self.classifier not in self.heads:
            raise UsageError(f"the deciding head {self.classifier!r} must be among the refitted heads {', '.join(self.heads)}")

    def key(self) -> str:
        """A hash of the fields that decide the result (paths, targets, split); runtime options excluded."""
        d = {k: v for k, v in asdict(self).items() if k not in ("device", "batch_size", "workers", "out")}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def describe(self) -> list[str]:
        """The plan in words (``--dry-run``)."""
        return [
            f"adapt {self.model} to the new generator {self.generator!r} ({self.images})",
            f"  known generators and reals: {self.data}",
            f"  split: {self.test_fraction:.0%} of each generator's groups (sub-folders; else images) held out "
            f"for measuring, the rest fits; seed {self.seed}",
            "  1 collect      list the new generator's images and the dataset's, split them (grouped)",
            "  2 embed        embed every image once with the model's backbone",
            f"  3 before       the model as it is: AUROC and TPR@1%FPR (bootstrap {self.bootstrap}) on the new "
            f"generator and on each known one",
            f"  4 refit-heads  fit heads {', '.join(self.heads)} (+ one per generator) on the fitting images, "
            f"new generator included (kNN: the new examples are simply added)",
            f"  5 after        the same figures; target: AUROC >= {self.target_auroc} on the new generator, "
            f"no known generator down by more than {self.forget_tolerance}",
            f"  6 write-model  {Path(self.out) / 'model'}: weights, heads, lineage.json and a model card (README.md)",
            "  if refitting heads misses the target: fine-tune with replay is the next route "
            "(deepsift train --init MODEL, D3 shards of every generator); the report says so",
        ]
