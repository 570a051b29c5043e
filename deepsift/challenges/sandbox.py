"""Run a submitted ONNX model on the hidden images in a confined child process.

The worker (trusted code) decodes and preprocesses the images per the submission's
:class:`Preprocessing` spec and streams pixel batches to ``sandbox_child.py``, which holds only the
model. The child never sees a path, a file name or a label. When the worker is root the child
gets, before it starts Python: its own network namespace (no interface up: nothing reachable), its
own mount namespace with empty tmpfs over ``/tmp``, ``/run``, ``/var/run``, ``/dev/shm``, ``/home``,
``/root`` and the server's data folder, the unprivileged ``sandbox_user``, no supplementary groups,
a clean environment, rlimits (address space = the phase's memory limit, CPU seconds, no file
writes, no core dumps, few descriptors), its own process group, and death with its parent. A
wall-clock deadline bounds the whole run. Not root: refused unless ``allow_unconfined`` (then
only the rlimits, the clean environment and the deadline apply).

Failures are a :class:`ModelRunError` whose message is shown to the participant: the model does
not load, crashes, runs out of memory or time, or returns the wrong shape or non-finite values.
"""
from __future__ import annotations

import ctypes
import io
import json
import os
import resource
import select
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..exceptions import DeepsiftError, InvalidInputError

CHILD = Path(__file__).with_name("sandbox_child.py")
MAX_OUTPUT_BYTES = 64 << 20
_CLONE_NEWNS, _CLONE_NEWNET = 0x00020000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
_PR_SET_PDEATHSIG = 1
HIDDEN_DIRS = ("/tmp", "/var/tmp", "/run", "/var/run", "/dev/shm", "/home", "/root", "/srv", "/mnt", "/media")


class ModelRunError(DeepsiftError):
    """A submitted model could not be run to the end; the message says why (shown to its team)."""


class Preprocessing(BaseModel):
    """How the platform turns a test image into the model's input, and how to read its output.

    Image -> RGB -> (``resize``: shorter side to this many px, bicubic) -> ``crop``: ``center`` crops
    ``input_size`` (zero-padding a short side), ``stretch`` resizes to it, -> pixels * ``scale`` ->
    (x - mean) / std -> ``layout``. Output: ``probability`` or ``score`` (one value per image, higher
    = fake; a (N, 2) output takes column ``fake_index``), or ``logits`` ((N, 2): softmax, column
    ``fake_index``; (N,) or (N, 1): sigmoid).
    """

    model_config = ConfigDict(extra="forbid")

    input_size: int | tuple[int, int] = 224
    resize: int | None = Field(None, ge=8, le=4096)
    crop: Literal["center", "stretch"] = "center"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    scale: float = Field(1 / 255, gt=0)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    output: Literal["probability", "score", "logits"] = "probability"
    fake_index: int = Field(1, ge=0, le=1)
    batch_size: int = Field(16, ge=1, le=256)

    @field_validator("input_size")
    @classmethod
    def _size(cls, v: int | tuple[int, int]) -> int | tuple[int, int]:
        sides = (v, v) if isinstance(v, int) else v
        if not all(8 <= s <= 2048 for s in sides):
            raise ValueError("input_size sides are 8..2048 px")
        return v

    @field_validator("std")
    @classmethod
    def _std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in v):
            raise ValueError("std values must be positive")
        return v

    @property
    def hw(self) -> tuple[int, int]:
        return (self.input_size, self.input_size) if isinstance(self.input_size, int) else tuple(self.input_size)  # type: ignore[return-value]


def parse_preprocessing(data: object) -> Preprocessing:
    """A validated spec from JSON text/bytes or a dict; InvalidInputError naming the first bad field."""
    try:
        if isinstance(data, (str, bytes)):
            data = json.loads(data or "{}")
        return Preprocessing.model_validate(data or {})
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"preprocessing spec: not JSON ({exc.msg})") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidInputError(f"preprocessing spec: {'.'.join(map(str, err['loc'])) or 'spec'}: {err['msg']}") from None


def preprocess(path: Path, spec: Preprocessing) -> np.ndarray:
    """One image as the model's float32 input (C, H, W) or (H, W, C)."""
    from PIL import Image

    from ..images import decode_image

    im = decode_image(str(path))
    h, w = spec.hw
    if spec.resize:
        s = spec.resize / min(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BICUBIC)
    if spec.crop == "stretch":
        arr = np.asarray(im.resize((w, h), Image.BICUBIC))
    else:
        arr = np.asarray(im)
        ph, pw = max(h - arr.shape[0], 0), max(w - arr.shape[1], 0)
        if ph or pw:
            arr = np.pad(arr, [(ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2), (0, 0)])
        top, left = int(round((arr.shape[0] - h) / 2.0)), int(round((arr.shape[1] - w) / 2.0))
        arr = arr[top:top + h, left:left + w]
    x = (arr.astype(np.float32) * np.float32(spec.scale) - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1) if spec.layout == "NCHW" else x)


@dataclass(frozen=True)
class Confinement:
    """How the child is confined (built from the platform settings)."""

    memory_mb: int
    time_limit_s: float
    allow_unconfined: bool = False
    user: str = "nobody"
    hide: tuple[str, ...] = ()  # more folders to hide (the server's data folder)
    threads: int = 1


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _preexec(conf: Confinement, confine: bool, uid: int, gid: int, libc: ctypes.CDLL, keep: Sequence[str]) -> None:
    """In the child between fork and exec: namespaces, mounts, identity, limits (no Python left after)."""
    os.setsid()
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if confine:
        if libc.unshare(_CLONE_NEWNET | _CLONE_NEWNS) != 0:
            os._exit(71)
        if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
            os._exit(72)
        hidden: list[str] = []
        for d in sorted({os.path.realpath(x) for x in (*HIDDEN_DIRS, *conf.hide)}, key=len):
            if os.path.isdir(d) and not any(d == h or d.startswith(h.rstrip("/") + "/") for h in hidden):
                hidden.append(d)  # a folder inside one already hidden is hidden with it
        # what Python itself needs and a hidden folder covers: held open, bound back after the hiding
        held = [(k, os.open(k, os.O_PATH | os.O_DIRECTORY)) for k in keep
                if os.path.isdir(k) and any(k == h or k.startswith(h.rstrip("/") + "/") for h in hidden)]
        for d in hidden:
            if libc.mount(b"tmpfs", d.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"size=64k,mode=0755") != 0:
                os._exit(73)
        for path, fd in held:
            os.makedirs(path, exist_ok=True)
            if libc.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, _MS_BIND | _MS_REC, None) != 0:
                os._exit(74)
            os.close(fd)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    mem = conf.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = int(conf.time_limit_s * max(conf.threads, 1) + 30)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    os.chdir("/")


def _needed_paths() -> list[str]:
    """Folders the child's Python needs: the interpreter, its libraries, numpy, onnxruntime, the child script."""
    import importlib.util

    paths = {sys.base_prefix, sys.prefix, str(CHILD.parent)}
    for mod in ("numpy", "onnxruntime"):
        spec = importlib.util.find_spec(mod)
        if spec and spec.origin:
            paths.add(str(Path(spec.origin).parent.parent))
    real = {os.path.realpath(p) for p in paths} | paths
    return sorted(p for p in real if os.path.isdir(p))


def confinement_available() -> bool:
    """True when this process can build the namespaces (root)."""
    return os.geteuid() == 0


def _start(conf: Confinement, script: Path = CHILD) -> subprocess.Popen:
    confine = confinement_available()
    if not confine and not conf.allow_unconfined:
        raise ModelRunError("model submissions cannot run here: the worker is not root, so it cannot give the model "
                            "its own network namespace (set DEEPSIFT_CHALLENGES_ALLOW_UNCONFINED_MODELS=true to run "
                            "them without it, for development only)")
    uid = gid = 65534
    if confine:
        import pwd

        try:
            pw = pwd.getpwnam(conf.user)
            uid, gid = pw.pw_uid, pw.pw_gid
        except KeyError:
            pass
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": str(conf.threads), "LANG": "C.UTF-8"}
    libc, keep = _libc(), _needed_paths() + [str(script.parent)]  # prepared before the fork
    return subprocess.Popen([sys.executable, "-I", "-B", str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, close_fds=True,
                            preexec_fn=lambda: _preexec(conf, confine, uid, gid, libc, keep))


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def _read(proc: subprocess.Popen, n: int, dl: _Deadline) -> bytes:
    fd = proc.stdout.fileno()  # type: ignore[union-attr]
    buf = bytearray()
    while len(buf) < n:
        left = dl.left()
        if left <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if ready:
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
            if not chunk:
                raise EOFError
            buf += chunk
    return bytes(buf)


def _write(proc: subprocess.Popen, data: bytes, dl: _Deadline) -> None:
    fd = proc.stdin.fileno()  # type: ignore[union-attr]
    view = memoryview(data)
    while view:
        left = dl.left()
        if left <= 0:
            raise TimeoutError
        _, ready, _ = select.select([], [fd], [], min(left, 1.0))
        if ready:
            view = view[os.write(fd, view[: 1 << 20]):]


def _scores_from(out: np.ndarray, n: int, spec: Preprocessing) -> np.ndarray:
    """Fake scores of one batch from the model's raw output; ModelRunError on a wrong shape."""
    if out.dtype.kind not in "fiu":
        raise ModelRunError(f"the model returned {out.dtype} values; expected numbers")
    if out.shape in ((n,), (n, 1)):
        s = out.reshape(n).astype(np.float64)
        return 1.0 / (1.0 + np.exp(-s)) if spec.output == "logits" else s
    if out.ndim == 2 and out.shape == (n, 2):
        s = out.astype(np.float64)
        if spec.output == "logits":
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s = s / s.sum(axis=1, keepdims=True)
        return s[:, spec.fake_index]
    raise ModelRunError(f"wrong output shape {list(out.shape)} for a batch of {n} images; expected [{n}], [{n}, 1] "
                        f"or [{n}, 2] ({spec.output})")


def _child_error(proc: subprocess.Popen, conf: Confinement) -> str:
    err = proc.stderr.read(1 << 16).decode(errors="replace") if proc.stderr else ""  # type: ignore[union-attr]
    for line in reversed(err.strip().splitlines()):
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(d, dict) and "error" in d:
            if d.get("kind") == "memory":
                return f"out of memory (limit {conf.memory_mb} MiB): {d['error']}"
            return str(d["error"])
    rc = proc.returncode
    if rc is not None and rc < 0:
        sig = signal.Signals(-rc).name
        if -rc in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
            return f"the model process died ({sig}): most likely out of memory (limit {conf.memory_mb} MiB)"
        if -rc == signal.SIGXCPU:
            return f"CPU time limit exceeded ({conf.time_limit_s:g} s)"
        return f"the model process died ({sig})"
    if rc in (71, 72, 73, 74):
        return "the sandbox could not be set up on this worker (namespaces or mounts refused)"
    tail = err.strip().splitlines()[-1:] if err.strip() else []
    return f"the model process exited with code {rc}" + (f": {tail[0][:500]}" if tail else "")


def run_model(model: Path, images: Sequence[Path], spec: Preprocessing, conf: Confinement,
              heartbeat: Callable[[], bool] | None = None) -> np.ndarray:
    """Fake scores of ``images`` (in order) from the confined model; ModelRunError with the reason on failure.

    ``heartbeat()`` is called between batches; when it returns False (the job was lost) the run stops.
    """
    dl = _Deadline(conf.time_limit_s)
    proc = _start(conf)
    try:
        data = model.read_bytes()
        header = json.dumps({"model_bytes": len(data), "threads": conf.threads}).encode() + b"\n"
        _write(proc, header + data, dl)
        del data
        out = np.empty(len(images), np.float64)
        for start, batch in _batches(images, spec):
            buf = io.BytesIO()
            np.save(buf, batch, allow_pickle=False)
            payload = buf.getvalue()
            _write(proc, struct.pack(">Q", len(payload)) + payload, dl)
            (size,) = struct.unpack(">Q", _read(proc, 8, dl))
            if size > MAX_OUTPUT_BYTES:
                raise ModelRunError(f"the model returned {size} bytes for {len(batch)} images")
            raw = np.load(io.BytesIO(_read(proc, size, dl)), allow_pickle=False)
            scores = _scores_from(raw, len(batch), spec)
            if not np.isfinite(scores).all():
                bad = int(np.flatnonzero(~np.isfinite(scores))[0])
                raise ModelRunError(f"the model returned a non-finite value ({scores[bad]}) for image {start + bad + 1}")
            out[start:start + len(batch)] = scores
            if heartbeat is not None and not heartbeat():
                raise ModelRunError("the job was taken over by another worker")
        _write(proc, struct.pack(">Q", 0), dl)
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(max(dl.left(), 1))
        return out
    except TimeoutError:
        raise ModelRunError(f"time limit exceeded: the model did not finish within {conf.time_limit_s:g} s") from None
    except (EOFError, BrokenPipeError, ValueError, OSError) as exc:
        _kill(proc)
        proc.wait(5)
        reason = _child_error(proc, conf)
        raise ModelRunError(reason if reason else f"the model process stopped ({exc})") from None
    finally:
        _kill(proc)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait(5)


def _batches(images: Sequence[Path], spec: Preprocessing) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(images), spec.batch_size):
        chunk = images[start:start + spec.batch_size]
        yield start, np.stack([preprocess(p, spec) for p in chunk]).astype(np.float32)
