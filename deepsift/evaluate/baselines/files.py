"""How a fitted baseline is stored: a folder with ``baseline.json`` and ``weights.safetensors`` (never a pickle)."""
from __future__ import annotations

FORMAT = "deepsift-baseline"
FORMAT_VERSION = 1
CONFIG_FILE = "baseline.json"
WEIGHTS_FILE = "weights.safetensors"
RUNTIME_OPTIONS = frozenset({"batch_size", "device", "workers", "progress", "url_timeout", "url_policy"})
"""Constructor options that change speed or output only, never the model: not saved."""
