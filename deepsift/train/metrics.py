"""What a run reports: a JSONL log, a PNG plot of loss and head accuracy, TensorBoard when installed."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

LOG_FILE = "train_log.jsonl"
PLOT_FILE = "train_plot.png"


class MetricsLog:
    """Appends one JSON object per event to ``OUT/train_log.jsonl`` (and to TensorBoard if present)."""

    def __init__(self, out: Path, enabled: bool = True, resume_step: int = 0) -> None:
        self.path = out / LOG_FILE
        self.enabled = enabled
        self.tb: Any = None
        if not enabled:
            return
        if resume_step and self.path.exists():  # drop lines past the checkpoint: they will be redone
            kept = [ln for ln in self.path.read_text().splitlines() if _step_of(ln) is not None
                    and _step_of(ln) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard not installed: JSONL and PNG only
            return
        self.tb = SummaryWriter(str(out / "tensorboard"))

    def write(self, event: dict[str, Any]) -> None:
        """Log one event (it must carry ``step``)."""
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event) + "\n")
        if self.tb is not None:
            for k, v in event.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, event["step"])

    def close(self) -> None:
        """Flush TensorBoard."""
        if self.tb is not None:
            self.tb.close()


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def read_log(path: Path) -> list[dict[str, Any]]:
    """The events of a JSONL log (cut lines skipped)."""
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def write_plot(out: Path) -> Path | None:
    """Draw loss per step and head accuracy per epoch into ``OUT/train_plot.png`` (atomically)."""
    events = read_log(out / LOG_FILE)
    steps = [(e["step"], e["loss"]) for e in events if "loss" in e]
    accs = [(e["step"], e["head_accuracy"]) for e in events if e.get("head_accuracy") is not None]
    if not steps and not accs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if steps:
        ax.plot(*zip(*steps), color="tab:blue", lw=1, label="loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss", color="tab:blue")
    if accs:
        ax2 = ax.twinx()
        ax2.plot(*zip(*accs), "o-", color="tab:orange", label="linear head accuracy (held out)")
        ax2.set_ylabel("held-out balanced accuracy", color="tab:orange")
        ax2.set_ylim(0, 1)
    fig.tight_layout()
    tmp = out / f".{PLOT_FILE}.tmp"
    fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    os.replace(tmp, out / PLOT_FILE)
    return out / PLOT_FILE
