"""``backend="auto"``: the fastest exact engine for this model, machine and precision, measured once and cached.

The candidates are torch fp32 and ONNX Runtime (fp32, within :data:`~deepsift.model.onnx.ONNX_TOLERANCE`
of torch), and torch bf16 only when bf16 precision was asked for *and* every head that labels
(the classifier and its per-generator heads) keeps bf16's labels equal to fp32's on at least
:data:`BF16_MIN_AGREEMENT` of the benchmark's images (:data:`BF16_LABEL_AGREEMENT`). fp32 is exact
within bf16's tolerance, so a bf16 request may run fp32 when fp32 is faster here; an fp32 request
never runs bf16. A few forward passes of a synthetic batch time each candidate (a second or two);
a candidate that fails to load (onnxruntime missing, the export failing) or is not exact is
skipped. The choice is cached in ``$DEEPSIFT_HOME/backends.json`` (``~/.cache``
without it), keyed by the weights' fingerprint, the batch size, the precision and the machine
(CPU model and flags, torch and onnxruntime versions, thread count); a corrupt cache is measured
again and an unwritable one is simply not written. Off the CPU (CUDA, several devices) auto is torch.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..exceptions import DeepsiftWarning, ModelError

BF16_LABEL_AGREEMENT: dict[str, float] = {"linear": 1.000, "knn": 0.992, "svm": 0.953,
                                          "linear:*": 0.998, "knn:*": 0.996, "svm:*": 0.996}
"""Share of images whose bf16 label equals the fp32 label, per head kind (``kind:*``: its per-generator heads, the
lowest of them), measured by ``benchmarks/bench_detect.py`` on its random model: the lowest figure of the machines
measured (benchmarks/README.md). A per-generator head counts at most its kind's pooled figure."""

BF16_MIN_AGREEMENT = 0.995
"""bf16 stays opt-in (never chosen by auto, a warning when asked for) for heads below this label agreement."""

CACHE_VERSION = 1
MEASURE_IMAGES = 8
"""Images per timed pass (at most the batch size)."""
MEASURE_PASSES = 3
"""Timed passes per candidate after one untimed warm-up pass (fewer when the budget runs out)."""
MEASURE_BUDGET_S = 0.6
"""Seconds of timed passes per candidate at most (a slow candidate stops early: it is losing)."""

Forward = Callable[[np.ndarray], np.ndarray]
Measure = Callable[[str, Forward, np.ndarray], float]


@dataclass
class Choice:
    """What auto runs: ``backend`` (torch/onnx) at ``precision``, why, and whether it was measured now."""

    backend: str
    precision: str
    why: str
    measured: bool = False
    rates: dict[str, float] = field(default_factory=dict)  # images/s per candidate ("onnx/fp32": 151.2)
    skipped: dict[str, str] = field(default_factory=dict)  # candidate -> why it was not measured
    cache: str | None = None  # the cache file, when there is one

    def line(self) -> str:
        """One line for ``-v``: the choice, the figures behind it, measured now or cached."""
        figures = ", ".join(f"{k} {v:.1f} img/s" for k, v in sorted(self.rates.items(), key=lambda kv: -kv[1]))
        skipped = "".join(f"; {k} skipped ({v})" for k, v in self.skipped.items())
        how = "measured now" if self.measured else "cached measurement"
        where = f" ({how}{', ' + self.cache if self.cache else ''})" if self.rates else ""
        return (f"deepsift: backend auto chose {self.backend} {self.precision}: {self.why}"
                f"{': ' + figures if figures else ''}{skipped}{where}")


def head_kind_key(name: str) -> str:
    """The :data:`BF16_LABEL_AGREEMENT` key of head ``name`` (``linear:sd21`` -> ``linear:*``)."""
    kind, sep, _ = name.partition(":")
    return f"{kind}:*" if sep else kind


def bf16_agreement(name: str) -> float | None:
    """The bf16 label agreement known for head ``name`` (a per-generator head: at most its kind's); None: unmeasured."""
    kind = name.partition(":")[0]
    known = [BF16_LABEL_AGREEMENT[k] for k in {kind, head_kind_key(name)} if k in BF16_LABEL_AGREEMENT]
    return min(known) if len(known) == len({kind, head_kind_key(name)}) else None


def bf16_unsafe_heads(names: Iterable[str]) -> list[str]:
    """The heads among ``names`` whose bf16 labels agree with fp32 on fewer than :data:`BF16_MIN_AGREEMENT`."""
    return [n for n in names if (bf16_agreement(n) or 0.0) < BF16_MIN_AGREEMENT]


def labelling_heads(heads: Iterable[str], classifier: str) -> list[str]:
    """The heads that label with ``classifier``: the head itself and its per-generator heads."""
    return [n for n in heads if n == classifier or n.startswith(classifier + ":")]


def backend_kwargs(backend: str, backbone: Any, model: str | os.PathLike, fingerprint: str, kwargs: dict,
                   heads: Iterable[str] = ()) -> dict:
    """``Detector`` keyword arguments for ``backend``: the ONNX file for onnx; auto's measured choice on the CPU.

    ``heads`` are the heads that label (bf16 is a candidate only when they all keep fp32's labels).
    The choice is said on stderr at ``-v``; it is also ``kwargs["choice"]``.
    """
    from .backbone import resolve_model_dir

    out = dict(kwargs)
    if backend == "onnx":
        from .onnx import onnx_for

        out["onnx_path"] = str(onnx_for(backbone, resolve_model_dir(model), fingerprint))
        return out
    if backend != "auto":
        return out
    precision = str(out.get("precision", "fp32"))
    device = next(backbone.parameters()).device
    if device.type != "cpu" or len(out.get("devices") or []) > 1:
        choice = Choice("torch", precision, f"the network runs on {device} (ONNX Runtime here is CPU only)")
    else:
        choice = choose_backend(backbone, resolve_model_dir(model), fingerprint, precision,
                                int(out.get("batch_size", 32)), heads)
    from ..output import console_level, note

    if console_level() >= 1:
        note(choice.line())
    out["precision"] = choice.precision
    if choice.backend == "onnx":
        from .onnx import onnx_for

        out["onnx_path"] = str(onnx_for(backbone, resolve_model_dir(model), fingerprint))
    out["choice"] = choice
    return out


def bf16_warning(names: Iterable[str]) -> str | None:
    """The warning for running ``names`` heads in bf16, or None when they are all safe."""
    bad = bf16_unsafe_heads(names)
    if not bad:
        return None
    worst = {head_kind_key(n): bf16_agreement(n) for n in bad}
    said = ", ".join(f"{k} {100 * v:.1f} %" if v is not None else f"{k} unmeasured" for k, v in worst.items())
    return (f"bf16 changes labels of the head(s) {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}: bf16 "
            f"agrees with fp32 on fewer than {100 * BF16_MIN_AGREEMENT:.1f} % of the benchmark's images ({said}); "
            f"fp32 precision keeps the published labels")


def cache_file() -> Path:
    """The measurement cache: ``$DEEPSIFT_HOME/backends.json`` (``~/.cache/deepsift/...`` without it), beside the ONNX exports."""
    from .headset import deepsift_home

    return deepsift_home() / "backends.json"


def machine() -> dict[str, Any]:
    """What makes a measurement valid on this machine: CPU model and flags, library versions, threads."""
    import torch

    model, flags = "unknown", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = " ".join(sorted(line.split(":", 1)[1].split()))
                if flags and model != "unknown":
                    break
    except OSError:
        import platform

        model = platform.processor() or platform.machine()
    try:
        import onnxruntime as ort

        ort_version = ort.__version__
    except ImportError:
        ort_version = None
    return {"cpu": model, "flags": hashlib.sha256(flags.encode()).hexdigest()[:16], "torch": torch.__version__,
            "onnxruntime": ort_version, "threads": torch.get_num_threads(), "cpus": os.cpu_count()}


def cache_key(fingerprint: str, precision: str, batch_size: int, candidates: list[str]) -> str:
    """The cache entry of one model, precision, batch size and candidate set on this machine."""
    what = {"fingerprint": fingerprint, "precision": precision, "batch": batch_size, "candidates": candidates,
            **machine()}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def read_cache(path: Path) -> dict[str, Any]:
    """The cached entries (empty when the file is missing, unreadable, corrupt or of another version)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def write_cache(path: Path, entries: dict[str, Any]) -> bool:
    """Write the entries atomically; False (and nothing written) when the place is not writable."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=1), encoding="utf-8")
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return False


def time_forward(name: str, forward: Forward, batch: np.ndarray) -> float:
    """Images/s of ``forward`` on ``batch``: one warm-up pass, then the best of a few timed passes.

    A warm-up pass slower than the whole budget ends it there (that candidate is losing anyway).
    """
    t0 = time.perf_counter()
    forward(batch)
    first = time.perf_counter() - t0
    if first > MEASURE_BUDGET_S:
        return len(batch) / first
    best, spent = float("inf"), 0.0
    for _ in range(MEASURE_PASSES):
        t0 = time.perf_counter()
        forward(batch)
        secs = time.perf_counter() - t0
        best, spent = min(best, secs), spent + secs
        if spent > MEASURE_BUDGET_S:
            break
    return len(batch) / best if best > 0 else float("inf")


def _forwards(backbone: Any, model_dir: Path | None, wanted: list[str],
              fingerprint: str | None = None) -> tuple[dict[str, Forward], dict[str, str]]:
    """A forward callable per loadable candidate, and why each other one was skipped."""
    import torch

    from .devices import Runner

    cpu = torch.device("cpu")
    out: dict[str, Forward] = {}
    skipped: dict[str, str] = {}
    for name in wanted:
        try:
            if name == "torch/fp32":
                out[name] = Runner(backbone, cpu, "fp32")
            elif name == "torch/bf16":
                out[name] = Runner(copy.deepcopy(backbone).to(torch.bfloat16).eval(), cpu, "bf16")
            elif name == "onnx/fp32":
                if model_dir is None:
                    raise ModelError("no model folder to export from")
                import onnxruntime  # noqa: F401 - fails fast, before the export

                from ..images import normalize_batch
                from .onnx import onnx_for
                from .onnx import OnnxEmbedder

                embedder = OnnxEmbedder(onnx_for(backbone, model_dir, fingerprint))
                out[name] = lambda batch, _e=embedder: _e(normalize_batch(batch))
        except ImportError as exc:
            skipped[name] = f"{exc.name or 'a library'} cannot be imported (not installed?)"
        except Exception as exc:  # noqa: BLE001 - any candidate that cannot load is skipped, never fatal
            skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else 'failed'}"
    return out, skipped


def candidates(precision: str, heads: Iterable[str]) -> tuple[list[str], str | None]:
    """The candidates for ``precision`` given the heads that label, and why bf16 is left out (when asked for)."""
    wanted = ["torch/fp32", "onnx/fp32"]
    if precision != "bf16":
        return wanted, None
    if bf16_unsafe_heads(heads):
        return wanted, bf16_warning(heads)
    return wanted + ["torch/bf16"], None


def choose_backend(backbone: Any, model_dir: Path | None, fingerprint: str, precision: str = "fp32",
                   batch_size: int = 32, heads: Iterable[str] = (), measure: Measure | None = None,
                   use_cache: bool = True) -> Choice:
    """Measure (or read from the cache) the fastest exact backend for ``backbone`` on this CPU.

    ``measure(name, forward, batch) -> images/s`` replaces :func:`time_forward` (tests inject one).
    """
    from .onnx import ONNX_TOLERANCE

    heads = list(heads)
    wanted, no_bf16 = candidates(precision, heads)
    if no_bf16:
        warnings.warn(no_bf16 + "; the auto backend runs fp32", DeepsiftWarning, stacklevel=3)
    path = cache_file()
    key = cache_key(fingerprint, precision, batch_size, wanted)
    entries = read_cache(path) if use_cache else {}
    hit = entries.get(key)
    if isinstance(hit, dict) and hit.get("backend") in ("torch", "onnx") and hit.get("precision") in ("fp32", "bf16") \
            and f"{hit['backend']}/{hit['precision']}" in wanted:
        return Choice(hit["backend"], hit["precision"], str(hit.get("why", "")), False,
                      {str(k): float(v) for k, v in dict(hit.get("rates") or {}).items()},
                      {str(k): str(v) for k, v in dict(hit.get("skipped") or {}).items()}, str(path))
    forwards, skipped = _forwards(backbone, model_dir, wanted, fingerprint)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (max(1, min(batch_size, MEASURE_IMAGES)), 224, 224, 3), dtype=np.uint8)
    rates: dict[str, float] = {}
    reference = forwards["torch/fp32"](batch) if "torch/fp32" in forwards else None
    for name, forward in forwards.items():
        try:
            if name == "onnx/fp32" and reference is not None:
                diff = float(np.abs(forward(batch) - reference).max())
                if diff > ONNX_TOLERANCE:
                    skipped[name] = f"differs from torch fp32 by {diff:.1e} (> {ONNX_TOLERANCE})"
                    continue
            rates[name] = float((measure or time_forward)(name, forward, batch))
        except Exception as exc:  # noqa: BLE001 - a candidate failing to run is skipped like one failing to load
            skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else 'failed'}"
    if not rates:
        return Choice("torch", precision, "no candidate could be measured", True, rates, skipped)
    best = max(rates, key=lambda k: rates[k])
    backend, prec = best.split("/")
    why = "fastest here" if len(rates) > 1 else "the only candidate that loaded"
    choice = Choice(backend, prec, why, True, rates, skipped, str(path))
    if use_cache:
        entries[key] = {k: v for k, v in asdict(choice).items() if k not in ("measured", "cache")}
        if not write_cache(path, entries):
            choice.cache = None
    return choice
