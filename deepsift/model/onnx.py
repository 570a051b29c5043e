"""ONNX export of the embedding network, and an onnxruntime backend with the same interface.

The exported graph takes ``pixel_values`` (N, 3, 224, 224) float32, normalised as in
:func:`deepsift.images.normalize_batch`, and returns ``embedding`` (N, hidden) float32.
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from transformers import ViTModel

from ..exceptions import ModelError
from ..images import normalize_batch

ONNX_TOLERANCE = 1e-4


class _EmbeddingOnly(torch.nn.Module):
    """Wrap a ViTModel so its single output is the CLS embedding."""

    def __init__(self, net: ViTModel) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=pixel_values).last_hidden_state[:, 0]


def export_onnx(net: ViTModel, out_path: str | os.PathLike, opset: int = 18) -> Path:
    """Export ``net`` to ONNX with a dynamic batch axis, writing atomically to ``out_path``."""
    from ..outplaces import output_file, umask_mode

    out = output_file(out_path)  # a folder, a device or an unwritable place: one line, nothing replaced
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    wrapper = _EmbeddingOnly(net.float().eval())
    example = torch.zeros(2, 3, 224, 224)
    try:
        torch.onnx.export(
            wrapper, (example,), str(tmp), input_names=["pixel_values"], output_names=["embedding"],
            dynamic_axes={"pixel_values": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=opset, dynamo=False,
        )
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) or isinstance(exc.__cause__, OSError):
            from ..exceptions import DataError

            raise DataError(f"cannot write {out_path}: {getattr(exc, 'strerror', None) or exc}; nothing was "
                            f"written there") from None
        raise ModelError(f"ONNX export failed ({type(exc).__name__}: {exc})") from None
    try:
        os.chmod(tmp, umask_mode())
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        from ..exceptions import DataError

        raise DataError(f"cannot write {out_path}: {exc.strerror or exc}; nothing was written there") from None
    return out


class OnnxEmbedder:
    """Run an exported embedding network with onnxruntime (CPU)."""

    # Whether the engine runs it as per-core streams (one-thread sessions). Off: on the idle 2-core benchmark
    # machine ONNX Runtime's own pool of two scales as well as two one-thread sessions (model-only 48-53 img/s
    # either way) and detect ran as fast or up to 7 % faster on the team (benchmarks/README.md, issue 23);
    # benchmarks turn streams on.
    streamable = False

    def __init__(self, path: str | os.PathLike, threads: int | None = None, spin_between_runs: bool = False) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        # ORT's pool threads spin-wait after each run (its default): ~45 ms of core time in the 100 ms after
        # a batch of 32 on 2 cores, taken from the decoding that runs between the passes. They still spin
        # inside a run (off altogether, one image took ~38 ms instead of ~25); benchmarks/README.md, issue 23
        opts.add_session_config_entry("session.force_spinning_stop", "0" if spin_between_runs else "1")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.path, self.threads, self.spin_between_runs = str(path), threads, spin_between_runs
        self._single: OnnxEmbedder | None = None
        self._lock = threading.Lock()

    def single_threaded(self) -> "OnnxEmbedder":
        """This network in a session with one intra-op thread (built once): for per-core streams."""
        if self.threads == 1:
            return self
        with self._lock:
            if self._single is None:
                self._single = OnnxEmbedder(self.path, threads=1, spin_between_runs=self.spin_between_runs)
            return self._single

    def __call__(self, pixels: torch.Tensor | np.ndarray) -> np.ndarray:
        """Embed a normalised NCHW float32 batch."""
        x = pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


class OnnxRunner:
    """uint8 NHWC batches through an :class:`OnnxEmbedder` (table normalisation): the engine's ONNX forward."""

    def __init__(self, embedder: OnnxEmbedder) -> None:
        self.embedder = embedder
        self.streamable = embedder.streamable  # per-core streams (deepsift.model.streams): one-thread sessions

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Embed one NHWC uint8 batch."""
        return self.embedder(normalize_batch(batch))

    @contextlib.contextmanager
    def streams(self) -> Iterator[Callable[[], Callable[[np.ndarray], np.ndarray]]]:
        """A factory of the streams' forward: one shared one-thread session (``run`` is thread-safe)."""
        single = self.embedder.single_threaded()
        yield lambda: (lambda batch: single(normalize_batch(batch)))


def check_onnx(net: ViTModel, path: str | os.PathLike, batch: int = 3, seed: int = 0) -> float:
    """Max absolute difference between torch and onnxruntime embeddings on a random batch."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 224, 224, generator=g)
    with torch.inference_mode():
        ref = net.float().eval()(pixel_values=x).last_hidden_state[:, 0].numpy()
    return float(np.abs(OnnxEmbedder(path)(x) - ref).max())


def onnx_for(backbone: ViTModel, model_dir: Path, fingerprint: str | None = None) -> Path:
    """The cached ONNX export of the model in ``model_dir`` (exported and checked on first use).

    With the weights' ``fingerprint`` the export is keyed by content (weights and config), so the
    same weights in another folder reuse it; without, by the weights file's path, size and time.
    """
    import hashlib

    from .headset import deepsift_home

    if fingerprint is not None:
        key = hashlib.sha256(f"{fingerprint}:{backbone.config.to_json_string()}".encode()).hexdigest()[:16]
    else:
        weights = model_dir / "model.safetensors"
        st = weights.stat()
        key = hashlib.sha256(f"{weights.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    path = deepsift_home() / "onnx" / f"{key}.onnx"
    if not path.is_file():
        export_onnx(backbone, path)
        diff = check_onnx(backbone, path)
        if diff > ONNX_TOLERANCE:
            path.unlink()
            raise ModelError(f"ONNX export differs from torch by {diff:.2e} (> {ONNX_TOLERANCE})")
    return path
