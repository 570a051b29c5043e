"""Training settings: one dataclass, a YAML file and command-line flags that name the same keys.

Every key of :class:`TrainConfig` is a YAML key (``--config train.yaml``) and a flag
(``batch_size`` <-> ``--batch-size``); a flag given on the command line wins over the file, the
file over the defaults. The defaults are the public training recipe (reference section 2):
AdamW, lr 2e-3, 5 warm-up epochs from 1e-6, cosine to 0, weight decay 2e-5 (not on biases,
norms, position embedding, CLS token), 256 records per step per process, 1,700 steps per
epoch, 150 epochs, patience 6, seed 42 (+ rank). Deviations, on purpose: the LR follows the
schedule per step (the public code steps it per epoch) and autocast is bf16 (no GradScaler).

A file with an unknown key or a value of the wrong type is refused before any work, naming the key.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..choices import TRAIN_KEEP
from ..exceptions import UsageError

PRECISIONS = ("bf16", "fp32")


@dataclass
class TrainConfig:
    """Every setting of one training run (see the module docstring for where each comes from)."""

    steps: int = 255_000  # optimiser steps in all (150 epochs x 1,700)
    steps_per_epoch: int = 1_700
    schedule_steps: int = 0  # length of the LR schedule; 0 = steps (a larger value lets a run stop early on purpose)
    warmup_steps: int = 8_500  # 5 epochs
    lr: float = 2e-3
    warmup_lr: float = 1e-6
    min_lr: float = 0.0
    weight_decay: float = 2e-5
    batch_size: int = 256  # records per optimiser step per process (8 views each)
    grad_accum: int = 1  # micro-batches per step (each holds batch_size / grad_accum records)
    clip_grad: float = 0.0  # max gradient norm; 0 = no clipping (the public recipe)
    precision: str = "bf16"
    seed: int = 42
    workers: int | str = "auto"  # DataLoader worker processes per training process; auto: this machine's CPUs shared
    device: str = "cpu"
    tau: float = 0.1
    global_negatives: bool = False
    aug_max_ops: int = 2  # augmentation A: 0..aug_max_ops families per image
    holdout: int = 512  # records kept out of training to refit the linear head each epoch
    patience: int = 6  # epochs without a new best head accuracy before stopping; 0 = never stop early
    keep: str = "best"  # the model folder's weights: the best epoch's (held-out head accuracy) or the last step's
    log_every: int = 10
    max_bad_share: float = 0.05  # stop when more than this share of the training records cannot be decoded
    leave_out: list[str] = field(default_factory=list)
    init: str = ""  # a model folder or hub id to fine-tune; "" = from scratch
    hidden_size: int = 192
    num_hidden_layers: int = 12
    num_attention_heads: int = 3
    intermediate_size: int = 768
    patch_size: int = 16

    def check(self) -> "TrainConfig":
        """Range checks across keys; raises :class:`UsageError` naming the key."""
        positive = ("steps", "steps_per_epoch", "batch_size", "grad_accum", "log_every", "hidden_size",
                    "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size", "holdout")
        for key in positive:
            if getattr(self, key) < 1:
                raise UsageError(f"config key {key!r} must be >= 1, got {getattr(self, key)}")
        if self.workers != "auto" and not (isinstance(self.workers, int) and self.workers >= 1):
            raise UsageError(f"config key 'workers' must be 'auto' or an integer >= 1, got {self.workers!r}")
        for key in ("warmup_steps", "patience", "aug_max_ops", "seed", "schedule_steps"):
            if getattr(self, key) < 0:
                raise UsageError(f"config key {key!r} must be >= 0, got {getattr(self, key)}")
        for key in ("lr", "tau"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise UsageError(f"config key {key!r} must be a positive number, got {getattr(self, key)}")
        if not (math.isfinite(self.max_bad_share) and 0 <= self.max_bad_share <= 1):
            raise UsageError(f"config key 'max_bad_share' must be in [0, 1], got {self.max_bad_share}")
        for key in ("warmup_lr", "min_lr", "weight_decay", "clip_grad"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                raise UsageError(f"config key {key!r} must be a number >= 0, got {getattr(self, key)}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"config key 'precision' must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.keep not in TRAIN_KEEP:
            raise UsageError(f"config key 'keep' must be one of {', '.join(TRAIN_KEEP)}, got {self.keep!r}")
        if self.aug_max_ops > 19:
            raise UsageError(f"config key 'aug_max_ops' must be <= 19 (the families), got {self.aug_max_ops}")
        if self.batch_size % self.grad_accum or self.batch_size // self.grad_accum < 2:
            raise UsageError(f"config keys 'batch_size' ({self.batch_size}) and 'grad_accum' ({self.grad_accum}): "
                             f"each micro-batch needs a whole number of records, at least 2 (a positive is "
                             f"another image of the same class)")
        if self.hidden_size % self.num_attention_heads:
            raise UsageError(f"config key 'hidden_size' ({self.hidden_size}) must be a multiple of "
                             f"'num_attention_heads' ({self.num_attention_heads})")
        if 224 % self.patch_size:
            raise UsageError(f"config key 'patch_size' must divide 224, got {self.patch_size}")
        return self

    def loader_workers(self) -> int:
        """DataLoader worker processes: ``workers``, or for ``auto`` this machine's CPUs shared by its training processes."""
        if self.workers != "auto":
            return int(self.workers)
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        return max(1, (os.cpu_count() or 1) // max(local, 1))

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-able values."""
        return dataclasses.asdict(self)

    def model_overrides(self) -> dict[str, int]:
        """The ViT shape keys, for :func:`deepsift.model.backbone.build_code_config`."""
        return {k: getattr(self, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                              "intermediate_size", "patch_size")}


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in fields(TrainConfig)}


def field_kind(name: str) -> type:
    """The Python type of key ``name``: bool, int, float, str or list."""
    default = TrainConfig().__getattribute__(name)
    return type(default)


def _coerce(key: str, value: Any, where: str) -> Any:
    """``value`` checked against the type of ``key``; :class:`UsageError` naming the key otherwise."""
    if key == "workers":  # 'auto' or an integer >= 1, as everywhere in deepsift
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise UsageError(f"{where}: key 'workers' must be 'auto' or an integer, got {value!r} ({type(value).__name__})")
    kind = field_kind(key)
    ok = (isinstance(value, bool) if kind is bool else
          isinstance(value, int) and not isinstance(value, bool) if kind is int else
          isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
          isinstance(value, str) if kind is str else
          isinstance(value, list) and all(isinstance(v, str) for v in value) or isinstance(value, str))
    if not ok:
        want = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                list: "a list of strings"}[kind]
        raise UsageError(f"{where}: key {key!r} must be {want}, got {value!r} ({type(value).__name__})")
    if kind is float:
        return float(value)
    if kind is list and isinstance(value, str):
        return [value]
    return value


def from_mapping(data: dict, where: str = "config") -> dict[str, Any]:
    """Checked settings from a mapping (a YAML file's content): unknown keys and wrong types refused."""
    if not isinstance(data, dict):
        raise UsageError(f"{where}: must be a mapping of keys to values, got {type(data).__name__}")
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            raise UsageError(f"{where}: unknown key {key!r} (known: {', '.join(FIELDS)})")
        out[name] = _coerce(name, value, where)
    return out


MAX_CONFIG_BYTES = 1 << 20
"""Largest config file read (1 MiB); with anchors and aliases refused, parsing costs what the file holds."""


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The settings of a YAML (or JSON) file, checked key by key (a regular file of at most 1 MiB, no aliases)."""
    import stat

    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """safe_load without anchors and aliases: a few bytes can never expand into gigabytes."""

        def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102
            if self.check_event(yaml.AliasEvent):
                raise yaml.YAMLError("aliases (*name) are not accepted in a config file")
            return super().compose_node(parent, index)

    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise UsageError(f"{p}: the config file is not a regular file")
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise UsageError(f"{p}: the config file is larger than {MAX_CONFIG_BYTES // 1024} KiB; it holds a few "
                             f"settings")
        data = yaml.load(raw.decode("utf-8"), Loader=NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except OSError as exc:
        raise UsageError(f"{p}: cannot read the config file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{p}: the config file is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{p}: not a valid YAML file ({str(exc).splitlines()[0]})") from None
    return from_mapping(data or {}, str(p))


def make_config(file: str | os.PathLike | None = None, **flags: Any) -> TrainConfig:
    """Defaults, then ``file``, then the ``flags`` that are not None; checked."""
    values = read_config_file(file) if file else {}
    values.update(from_mapping({k: v for k, v in flags.items() if v is not None}, "options"))
    return TrainConfig(**values).check()
