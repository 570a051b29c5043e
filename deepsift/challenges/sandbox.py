"""Run a submitted ONNX model on the hidden images in a confined child process.

The worker (trusted code) decodes and preprocesses the images per the submission's
:class:`Preprocessing` spec and streams pixel batches to ``sandbox_child.py``, which holds only the
model. The child never sees a path, a file name or a label. Before it starts, the model is refused
if any tensor keeps its data in an external file (:mod:`.onnxcheck`). When the worker is root the
child is pid 1 of its own PID namespace (no host pid exists for it; when it ends, the kernel ends
everything in the namespace) and gets, before it starts Python: its own network namespace (no interface up: nothing
reachable), UTS (hostname ``deepsift-model``), IPC (none of the host's shared memory, semaphores or
message queues) and cgroup namespaces (its ``/proc/self/cgroup`` says ``/``), its own mount
namespace with empty tmpfs over ``/tmp``, ``/etc``, ``/run``, ``/var``, ``/dev``, ``/opt``,
``/home``, ``/root``..., every other folder at the root but the system ones (``/usr``, ``/lib``...)
and the server's data folder (what Python itself needs, the loader's ``/etc/ld.so.cache`` and
``/dev/null``, ``zero``, ``full``, ``random``, ``urandom`` are bound back; files at the root read empty),
a fresh ``/proc`` (``hidepid=invisible,subset=pid``: no other process, no system file; mounting it
fails closed on a kernel older than 5.8, whose ``/proc`` options are shared with the host's) and a
fresh read-only ``/sys`` (its network namespace's devices only, no cgroup tree), an empty working
directory it cannot write to, a uid and gid of its own (:func:`own_uid`; or the ``sandbox_user`` a
host names), no supplementary groups, a clean
environment, rlimits (address space = the phase's memory limit less the worker's
batch buffers, CPU seconds, no file writes, no core dumps, few descriptors), its own process group,
and death with its parent (set after the user switch, which clears it). The child makes itself
non-dumpable first thing, so another model running as the same user (a host-named
``sandbox_user``) can neither see it nor read its memory. A wall-clock deadline bounds the whole
run. Not root: refused unless ``allow_unconfined`` (then only the rlimits, an empty temporary
working directory, the clean environment and the deadline apply).

Failures are a :class:`ModelRunError` of one :class:`RunFailure` kind whose fixed reason is shown to
the participant; the child reports only a failure code (its stderr is discarded), never text.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .confine import (CHILD, DEV_NODES, HOSTNAME, OWN_UID_BASE, WORKDIR, Confinement, _libc, _needed_paths,
                      _NO_OWN_PROC, _preexec, _spawn_as_pid1, confinement_available, own_uid)
from .onnxcheck import check_self_contained
from .preprocessing import MIB, BatchPlan, Preprocessing, batches, parse_preprocessing, plan_batches, preprocess
from .runfailures import LIMIT_FAILURES, ModelRunError, RunFailure, failure_of

__all__ = ["CHILD", "DEV_NODES", "HOSTNAME", "OWN_UID_BASE", "WORKDIR", "Confinement", "LIMIT_FAILURES",
           "ModelRunError", "Preprocessing", "RunFailure", "confinement_available", "failure_of", "own_uid",
           "parse_preprocessing", "preprocess", "run_model"]

log = logging.getLogger("deepsift.challenges.sandbox")
# the child's answer frames: a length, or FAILED | code (sandbox_child.py writes the same codes)
FAILED = 1 << 63
_CHILD_CODES = {1: RunFailure.INVALID_MODEL, 2: RunFailure.WRONG_INPUTS, 3: RunFailure.MEMORY_LIMIT,
                4: RunFailure.CRASH, 5: RunFailure.WRONG_OUTPUT_TYPE}
_SETUP_EXIT_CODES = range(71, 79)
NO_OWN_PROC = "this worker's kernel cannot give the model its own /proc (Linux 5.8 or newer is needed)"


def _start(conf: Confinement, script: Path = CHILD, workdir: str | None = None) -> subprocess.Popen:
    """The child process, confined; ``workdir``: its working directory when unconfined (confined: an empty private one)."""
    confine = confinement_available()
    if not confine and not conf.allow_unconfined:
        raise ModelRunError(RunFailure.SANDBOX_UNAVAILABLE,
                            "model submissions cannot run here: the worker is not root, so it cannot give the model "
                            "its own network namespace (set DEEPSIFT_CHALLENGES_ALLOW_UNCONFINED_MODELS=true to run "
                            "them without it, for development only)")
    if not confine and workdir is None:
        raise ValueError("an unconfined child needs an empty working directory")
    uid = gid = 65534
    if confine and not conf.user:
        uid = gid = own_uid()
    elif confine:
        import pwd

        try:
            pw = pwd.getpwnam(conf.user)
            uid, gid = pw.pw_uid, pw.pw_gid
        except KeyError:
            pass
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": str(conf.threads), "LANG": "C.UTF-8"}
    libc, keep, parent = _libc(), _needed_paths() + [str(script.parent)], os.getpid()  # prepared before the fork

    def popen(worker_fd: int = -1) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-I", "-B", str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, close_fds=True, preexec_fn=lambda: _preexec(
                conf, confine, uid, gid, libc, keep, None if confine else parent, workdir or "/", worker_fd))

    return _spawn_as_pid1(popen, libc) if confine else popen()


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


def _write(proc: subprocess.Popen, data: bytes | memoryview, dl: _Deadline) -> None:
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
    """Fake scores of one batch from the model's raw output; ModelRunError (fixed reason) on a wrong shape or type."""
    if out.dtype.kind not in "fiu":
        raise ModelRunError(RunFailure.WRONG_OUTPUT_TYPE)
    if out.shape in ((n,), (n, 1)):
        s = out.reshape(n).astype(np.float64)
        return 1.0 / (1.0 + np.exp(-s)) if spec.output == "logits" else s
    if out.ndim == 2 and out.shape == (n, 2):
        s = out.astype(np.float64)
        if spec.output == "logits":
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s = s / s.sum(axis=1, keepdims=True)
        return s[:, spec.fake_index]
    raise ModelRunError(RunFailure.WRONG_OUTPUT_SHAPE, batch=n)


def _output(payload: bytes) -> np.ndarray:
    """The child's .npy answer (never unpickled); anything else is a wrong output type, never its parse error."""
    try:
        return np.load(io.BytesIO(payload), allow_pickle=False)
    except Exception:  # noqa: BLE001 - the child's bytes are not to be trusted, nor echoed
        raise ModelRunError(RunFailure.WRONG_OUTPUT_TYPE) from None


def _max_output(n: int) -> int:
    """The most bytes a valid output of a batch of ``n`` can take as .npy ((n, 2) values, float32, a header)."""
    return 4096 + 16 * n


def _failure(kind: RunFailure, conf: Confinement, plan: BatchPlan, batch: int) -> ModelRunError:
    return ModelRunError(kind, batch=batch, seconds=conf.time_limit_s, limit_mb=conf.memory_mb,
                         buffers_mb=plan.buffer_mb)


def _answer(proc: subprocess.Popen, dl: _Deadline, conf: Confinement, plan: BatchPlan, batch: int) -> int:
    """The child's next frame header: a length, or its failure code turned into a ModelRunError."""
    (value,) = struct.unpack(">Q", _read(proc, 8, dl))
    if value & FAILED:
        raise _failure(_CHILD_CODES.get(value & ~FAILED, RunFailure.CRASH), conf, plan, batch)
    return value


def _child_died(proc: subprocess.Popen, conf: Confinement, plan: BatchPlan, batch: int) -> ModelRunError:
    """Why the child stopped early: its failure frame if it wrote one, else what its exit says."""
    try:
        proc.wait(2)  # it usually has exited already: let its own status speak before any kill
    except subprocess.TimeoutExpired:  # alive but not following the protocol
        _kill(proc)
        return _failure(RunFailure.CRASH, conf, plan, batch)
    try:
        rest = proc.stdout.read(8) if proc.stdout else b""  # type: ignore[union-attr]
    except (OSError, ValueError):
        rest = b""
    if len(rest) == 8 and struct.unpack(">Q", rest)[0] & FAILED:
        return _failure(_CHILD_CODES.get(struct.unpack(">Q", rest)[0] & ~FAILED, RunFailure.CRASH), conf, plan, batch)
    rc = proc.returncode
    if rc in _SETUP_EXIT_CODES:
        return ModelRunError(RunFailure.SANDBOX_UNAVAILABLE, NO_OWN_PROC if rc == _NO_OWN_PROC else None)
    if rc is not None and rc < 0:
        if -rc == signal.SIGXCPU:
            return _failure(RunFailure.TIME_LIMIT, conf, plan, batch)
        if -rc == signal.SIGKILL:  # nobody here killed it yet: the kernel did, for memory
            return _failure(RunFailure.MEMORY_LIMIT, conf, plan, batch)
        try:
            name = signal.Signals(-rc).name
        except ValueError:  # a real-time signal
            name = f"signal {-rc}"
        return ModelRunError(RunFailure.CRASH, f"the model process died ({name}) on a batch of {batch} images")
    return _failure(RunFailure.CRASH, conf, plan, batch)


def run_model(model: Path, images: Sequence[Path], spec: Preprocessing, conf: Confinement,
              heartbeat: Callable[[], bool] | None = None) -> np.ndarray:
    """Fake scores of ``images`` (in order) from the confined model; ModelRunError with the fixed reason on failure.

    ``heartbeat()`` is called between batches; when it returns False (the job was lost) the run stops.
    """
    dl = _Deadline(conf.time_limit_s)
    plan = plan_batches(spec, conf.memory_mb, conf.max_batch_mb * MIB)
    data = model.read_bytes()
    check_self_contained(data)  # before any runtime sees the bytes
    child = dataclasses.replace(conf, memory_mb=plan.child_memory_mb)
    with tempfile.TemporaryDirectory(prefix="deepsift-model-") as workdir:
        os.chmod(workdir, 0o555)
        proc = _start(child, workdir=workdir)
        log.info("model process %d started", proc.pid)
        batch = 0
        try:
            _write(proc, json.dumps({"model_bytes": len(data), "threads": conf.threads}).encode() + b"\n", dl)
            _write(proc, data, dl)
            del data
            _answer(proc, dl, conf, plan, 0)  # loaded
            out = np.empty(len(images), np.float64)
            for start, pixels in batches(images, spec, plan.batch):
                batch = len(pixels)
                _write(proc, struct.pack(">5Q", pixels.nbytes, *pixels.shape), dl)
                _write(proc, memoryview(pixels).cast("B"), dl)
                if start == 0:
                    log.info("model process %d loaded the model and runs it on its first batch (%d images)",
                             proc.pid, batch)
                size = _answer(proc, dl, conf, plan, batch)
                if size > _max_output(batch):
                    raise ModelRunError(RunFailure.WRONG_OUTPUT_SHAPE, batch=batch)
                raw = _output(_read(proc, size, dl))
                scores = _scores_from(raw, batch, spec)
                if not np.isfinite(scores).all():
                    raise ModelRunError(RunFailure.NON_FINITE, batch=batch)
                out[start:start + batch] = scores
                if heartbeat is not None and not heartbeat():
                    raise ModelRunError(RunFailure.JOB_LOST)
            _write(proc, struct.pack(">Q", 0), dl)
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(max(dl.left(), 1))
            return out
        except (TimeoutError, subprocess.TimeoutExpired):
            raise _failure(RunFailure.TIME_LIMIT, conf, plan, batch) from None
        except (EOFError, BrokenPipeError, ValueError, OSError):
            raise _child_died(proc, conf, plan, batch) from None
        finally:
            _kill(proc)
            for stream in (proc.stdin, proc.stdout):
                try:
                    if stream:
                        stream.close()
                except OSError:
                    pass


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait(5)
