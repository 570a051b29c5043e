"""Where the network runs and how batches reach it: device choice, exact fp32, the feeding pipeline.

* :func:`resolve_device`: ``auto`` is CUDA when present, else the CPU; a CUDA device this machine
  lacks (``cuda`` without CUDA, ``cuda:7`` with one GPU) is one :class:`DeviceError` line, exit 1.
* :func:`exact_fp32`: with ``--precision fp32`` on CUDA, TF32 is off for matmul and cuDNN while
  the network runs (cuDNN's patch-embedding convolution would otherwise round to TF32, 8e-4 off
  the CPU), and the caller's settings come back afterwards.
* :class:`Runner`: batches travel as uint8 (a quarter of float32's bytes); on CUDA each is staged
  in pinned memory, copied on a side stream without blocking, normalised on the device with the
  CPU's exact float32 arithmetic, and the next batch's copy runs while the current one is in the
  network (:meth:`Runner.launch` queues, :meth:`Runner.collect` waits; the engine keeps one batch
  in flight). On the CPU the same calls run the bit-identical table normalisation, and
  :meth:`Runner.streams` gives the engine one-thread forwards for its per-core streams.
* :class:`MultiRunner`: several devices (``--devices cuda:0,cuda:1``) share every batch, each its
  contiguous slice of rows at the same time, the rows joined back in input order.
"""
from __future__ import annotations

import contextlib
import copy
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..exceptions import DeviceError
from ..images import IMAGENET_MEAN, IMAGENET_STD, normalize_batch


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The torch device for ``name`` (``auto``/None: CUDA when present); an unusable one is a :class:`DeviceError`."""
    text = "auto" if name is None else str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise DeviceError(f"device {str(name)!r} is not usable here (not a torch device name: use auto, cpu, "
                          f"cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceError(f"device {str(name)!r} is not usable here ({why}); use the device 'cpu' or 'auto'")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {str(name)!r} is not usable here (this machine has {count} CUDA GPU(s): "
                              f"cuda:0..cuda:{count - 1})")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceError(f"device {str(name)!r} is not usable here (no Apple MPS device); use the device 'cpu' or 'auto'")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {str(name)!r} is not usable here (deepsift runs on cpu, cuda or mps)")
    return device


def _tf32_switches() -> list[tuple[Any, str, Any]]:
    """``(object, attribute, value that turns TF32 off)`` for matmul and cuDNN, in this torch's API."""
    conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    if conv is not None and hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9: the new API only
        switches = [(torch.backends.cuda.matmul, "fp32_precision", "ieee"),
                    (torch.backends.cudnn.conv, "fp32_precision", "ieee")]
        rnn = getattr(torch.backends.cudnn, "rnn", None)
        if rnn is not None and hasattr(rnn, "fp32_precision"):
            switches.append((rnn, "fp32_precision", "ieee"))
        return switches
    return [(torch.backends.cuda.matmul, "allow_tf32", False), (torch.backends.cudnn, "allow_tf32", False)]


@contextlib.contextmanager
def exact_fp32(device: torch.device, precision: str = "fp32") -> Iterator[None]:
    """TF32 off for matmul and cuDNN while inside, on CUDA in fp32; the previous settings are restored after."""
    if device.type != "cuda" or precision != "fp32":
        yield
        return
    switches = _tf32_switches()
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in switches]
    try:
        for obj, attr, off in switches:
            setattr(obj, attr, off)
        yield
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)


def normalize_on_device(batch: torch.Tensor) -> torch.Tensor:
    """NHWC uint8 on any device -> normalised NCHW float32 there, with exactly :func:`normalize_batch`'s arithmetic."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    return batch.permute(0, 3, 1, 2).to(torch.float32).div(255).sub(mean).div(std)


class Runner:
    """Runs uint8 batches through ``net`` on its device: ``launch`` queues a batch, ``collect`` returns its rows.

    ``net`` maps a normalised NCHW tensor on the device to (N, D) rows (the CLS embedding).
    Calling the runner does both at once. At most ``depth`` batches are launched and not yet
    collected (the engine uses one ahead), each with its own pinned staging buffer on CUDA.
    """

    def __init__(self, net: Any, device: torch.device, precision: str = "fp32", depth: int = 2) -> None:
        self.net, self.device, self.precision = net, device, precision
        self.cuda = device.type == "cuda"
        self.pipelined = self.cuda  # the engine keeps one batch in flight (on the CPU nothing would overlap)
        self.streamable = device.type == "cpu"  # the engine may run one batch per core (deepsift.model.streams)
        self.copy_stream = torch.cuda.Stream(device) if self.cuda else None
        self.pinned: list[torch.Tensor] = []
        self.depth, self.turn = depth, 0

    def _stage(self, batch: np.ndarray) -> torch.Tensor:
        """The uint8 batch on the device, copied from pinned memory on the side stream (CUDA)."""
        host = torch.from_numpy(np.ascontiguousarray(batch))
        if not self.cuda:
            return host
        slot = self.turn % self.depth
        self.turn += 1
        if len(self.pinned) <= slot:
            self.pinned.append(torch.empty(host.numel(), dtype=torch.uint8, pin_memory=True))
        buf = self.pinned[slot]
        if buf.numel() < host.numel():  # grown once per slot: buffers are reused batch after batch
            buf = self.pinned[slot] = torch.empty(host.numel(), dtype=torch.uint8, pin_memory=True)
        staged = buf[: host.numel()].view(host.shape)
        staged.copy_(host)
        with torch.cuda.stream(self.copy_stream):
            on_device = staged.to(self.device, non_blocking=True)
        torch.cuda.current_stream(self.device).wait_stream(self.copy_stream)  # the forward starts after its copy
        on_device.record_stream(torch.cuda.current_stream(self.device))
        return on_device

    @torch.inference_mode()
    def launch(self, batch: np.ndarray) -> Any:
        """Queue one NHWC uint8 batch; on CUDA this returns before the GPU is done."""
        if not self.cuda:
            return self.collect_now(batch)
        pixels = normalize_on_device(self._stage(batch))
        with exact_fp32(self.device, self.precision):
            param = next(self.net.parameters())
            out = self.net(pixel_values=pixels.to(param.dtype)).last_hidden_state[:, 0].float()
        host = out.to("cpu", non_blocking=True)  # into pinned memory: the GPU keeps going
        done = torch.cuda.Event()
        done.record()
        return host, done

    def collect_now(self, batch: np.ndarray) -> np.ndarray:
        """The CPU path: normalise by table (bit-identical) and run the network at once."""
        from .backbone import embed_tensor

        return embed_tensor(self.net, normalize_batch(batch)).numpy()

    @contextlib.contextmanager
    def streams(self) -> Iterator[Any]:
        """Per-core streams (CPU): a factory, called in each stream thread, of a one-intra-op-thread forward.

        ``torch.set_num_threads`` sets the calling thread's OpenMP team (the other threads keep
        theirs) and the default for threads that start torch later; that default is put back on
        the way out, from the caller's own setting.
        """
        threads = torch.get_num_threads()

        def make() -> Any:
            torch.set_num_threads(1)

            def forward(batch: np.ndarray) -> np.ndarray:
                with torch.inference_mode():  # a per-thread mode: set in the stream's own thread
                    return self.collect_now(batch)
            return forward

        try:
            yield make
        finally:
            torch.set_num_threads(threads)

    def collect(self, token: Any) -> np.ndarray:
        """The (N, D) float32 rows of a launched batch (waits for the GPU on CUDA)."""
        if isinstance(token, np.ndarray):
            return token
        host, done = token
        done.synchronize()
        return host.numpy()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Launch and collect one batch."""
        return self.collect(self.launch(batch))


class MultiRunner:
    """Several devices share every batch: contiguous row slices, one per device, run at once, joined in order.

    Each device holds its own copy of ``net``; a slice runs through that device's :class:`Runner`
    in its own thread (torch releases the GIL in the forward). ``cpu,cpu`` runs the same logic on
    one machine without GPUs (tests, CI).
    """

    pipelined = True

    def __init__(self, net: Any, devices: Sequence[torch.device], precision: str = "fp32") -> None:
        if not devices:
            raise ValueError("MultiRunner needs at least one device")
        home = next(net.parameters()).device
        self.runners = [Runner(net if (i == 0 and dev == home) else copy.deepcopy(net).to(dev).eval(), dev, precision)
                        for i, dev in enumerate(devices)]
        self.pool = ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="deepsift-device")

    def launch(self, batch: np.ndarray) -> list[Future]:
        """Start every device on its slice of ``batch`` (an empty slice is skipped)."""
        bounds = np.linspace(0, len(batch), len(self.runners) + 1).round().astype(int)
        return [self.pool.submit(runner, batch[a:b]) for runner, a, b in zip(self.runners, bounds[:-1], bounds[1:])
                if b > a]

    def collect(self, token: list[Future]) -> np.ndarray:
        """The rows of every slice, in input order."""
        return np.concatenate([f.result() for f in token])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Launch and collect one batch."""
        return self.collect(self.launch(batch))
