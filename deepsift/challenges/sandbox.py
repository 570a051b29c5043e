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

import ctypes
import dataclasses
import io
import itertools
import json
import logging
import os
import resource
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .onnxcheck import check_self_contained
from .preprocessing import MIB, BatchPlan, Preprocessing, batches, parse_preprocessing, plan_batches, preprocess
from .runfailures import LIMIT_FAILURES, ModelRunError, RunFailure, failure_of

__all__ = ["CHILD", "Confinement", "LIMIT_FAILURES", "ModelRunError", "Preprocessing", "RunFailure",
           "confinement_available", "failure_of", "parse_preprocessing", "preprocess", "run_model"]

CHILD = Path(__file__).with_name("sandbox_child.py")
log = logging.getLogger("deepsift.challenges.sandbox")
_CLONE_NEWNS, _CLONE_NEWCGROUP, _CLONE_NEWUTS, _CLONE_NEWIPC, _CLONE_NEWNET = (0x00020000, 0x02000000, 0x04000000,
                                                                          0x08000000, 0x40000000)
# network: nothing reachable; mounts: the views below; UTS: its own hostname; IPC: none of the host's shared memory
# segments, semaphores or message queues; cgroup: its /proc/self/cgroup shows "/", not the worker's service path
_NAMESPACES = _CLONE_NEWNET | _CLONE_NEWNS | _CLONE_NEWUTS | _CLONE_NEWIPC | _CLONE_NEWCGROUP
# pid: the child is pid 1 of a namespace of its own (no host pid exists for it, nor answers kill(pid, 0) differently);
# a thread of the worker unshares it for its children (:func:`_spawn_as_pid1`), the child unshares the rest
_CLONE_NEWPID = 0x20000000
HOSTNAME = "deepsift-model"
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 2, 4, 8, 4096, 16384, 1 << 18
# a fresh procfs instance (kernel >= 5.8: options per instance) listing only the processes the child may
# ptrace-read (itself), without /proc's system files; kernels 5.3-5.7 (which would apply a new mount's options
# to the host's /proc) refuse these values outright, older ones may ignore them (checked after the mount)
PROC_OPTIONS = b"hidepid=invisible,subset=pid"
_PR_SET_PDEATHSIG = 1
# a model process's own uid: above the ranges systems hand out to users and containers (<= 1879048191), below
# systemd's dynamic users (>= 2147352576); pids up to 4194304 (pid_max's ceiling) x 16 fit in between
OWN_UID_BASE = 2_000_000_000
_uid_counter = itertools.count()
HIDDEN_DIRS = ("/tmp", "/etc", "/var", "/run", "/dev", "/home", "/root", "/opt", "/srv", "/mnt", "/media", "/boot")
# the root's system folders, left as they are; every other folder at the root is hidden too (a deployment's /app,
# /data, /workspace...), with what Python needs bound back
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/nix", "/gnu", "/proc", "/sys")
DEV_NODES = ("null", "zero", "full", "random", "urandom")  # the only device nodes in its /dev (no disk, GPU, tty)
# bound back into the hidden folders: the dynamic loader's library index, the harmless device nodes
KEEP_FILES = ("/etc/ld.so.cache", *(f"/dev/{name}" for name in DEV_NODES))
WORKDIR = "/tmp/deepsift-model"  # the confined child's working directory: empty, not writable (inside /tmp's tmpfs)
# the child's answer frames: a length, or FAILED | code (sandbox_child.py writes the same codes)
FAILED = 1 << 63
_CHILD_CODES = {1: RunFailure.INVALID_MODEL, 2: RunFailure.WRONG_INPUTS, 3: RunFailure.MEMORY_LIMIT,
                4: RunFailure.CRASH, 5: RunFailure.WRONG_OUTPUT_TYPE}
_SETUP_EXIT_CODES = range(71, 79)
_NO_OWN_PROC = 77  # the setup exit code of a /proc that could not be the child's own
NO_OWN_PROC = "this worker's kernel cannot give the model its own /proc (Linux 5.8 or newer is needed)"


@dataclass(frozen=True)
class Confinement:
    """How the child is confined (built from the platform settings)."""

    memory_mb: int
    time_limit_s: float
    allow_unconfined: bool = False
    user: str = ""  # a named user, or "" for a uid of the child's own (:func:`own_uid`)
    hide: tuple[str, ...] = ()  # more folders to hide (the server's data folder)
    threads: int = 1
    max_batch_mb: int = 256  # the most one batch of preprocessed pixels may take (the platform's cap)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _preexec(conf: Confinement, confine: bool, uid: int, gid: int, libc: ctypes.CDLL, keep: Sequence[str],
             parent: int | None, workdir: str, worker_fd: int = -1) -> None:
    """In the child between fork and exec: namespaces, mounts, identity, limits (no Python left after).

    Confined, the child is pid 1 of its own PID namespace (``parent`` None) and ``worker_fd`` a pidfd of the worker."""
    os.setsid()
    if confine:
        if (os.getpid() != 1 or libc.unshare(_NAMESPACES) != 0
                or libc.sethostname(HOSTNAME.encode(), len(HOSTNAME)) != 0):
            os._exit(71)
        if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
            os._exit(72)
        hidden: list[str] = []
        top = [f"/{e}" for e in os.listdir("/") if f"/{e}" not in SYSTEM_DIRS and not os.path.islink(f"/{e}")]
        top_files = [f for f in top if os.path.isfile(f)]
        for d in sorted({os.path.realpath(x) for x in (*HIDDEN_DIRS, *conf.hide, *top)}, key=len):
            if os.path.isdir(d) and not any(d == h or d.startswith(h.rstrip("/") + "/") for h in hidden):
                hidden.append(d)  # a folder inside one already hidden is hidden with it
        # what Python itself needs and a hidden folder covers: held open, bound back after the hiding
        held = [(k, os.path.isdir(k), os.open(k, os.O_PATH)) for k in keep
                if os.path.exists(k) and any(k == h or k.startswith(h.rstrip("/") + "/") for h in hidden)]
        for d in hidden:
            if libc.mount(b"tmpfs", d.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"size=64k,mode=0755") != 0:
                os._exit(73)
        for path, is_dir, fd in held:
            os.makedirs(path if is_dir else os.path.dirname(path), exist_ok=True)
            if not is_dir and not os.path.exists(path):
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o444))  # a mount point for the file
            if libc.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, _MS_BIND | _MS_REC, None) != 0:
                os._exit(74)
            os.close(fd)
        if os.path.realpath("/tmp") not in hidden:
            os._exit(75)
        for f in top_files:  # a file at the root (a deployment's /app.env): read as empty
            if libc.mount(b"/dev/null", f.encode(), None, _MS_BIND, None) != 0:
                os._exit(74)
        # never a remount of the host's /proc or /sys: new instances over them, seen only in this namespace;
        # older kernels share one /proc per pid namespace and may ignore a second mount's options: a system file
        # still there means no subset=pid, so no hidepid either: refused
        if (libc.mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, PROC_OPTIONS) != 0
                or os.path.exists("/proc/cpuinfo")):
            os._exit(_NO_OWN_PROC)
        # sysfs mounted from the new network namespace: its devices only (lo); no cgroup tree under it
        if libc.mount(b"sysfs", b"/sys", b"sysfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None) != 0:
            os._exit(78)
        try:  # an empty folder in the private /tmp, owned by root: nothing to read or write relative to it
            os.mkdir(WORKDIR, 0o555)
        except OSError:
            os._exit(76)
        workdir = WORKDIR
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
    os.chdir(workdir)
    # last: a change of user clears the parent-death signal, so it is set after setuid; if the worker
    # died before this line, the signal will never come: the worker's pidfd is readable (confined: getppid() is 0
    # for a pid 1, its parent is outside its namespace), or getppid() is no longer the worker's pid
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if select.select([worker_fd], [], [], 0)[0] if parent is None else os.getppid() != parent:
        os._exit(70)


def _needed_paths() -> list[str]:
    """What the child's Python needs: the interpreter (and its links), its libraries, numpy, onnxruntime, the script."""
    import importlib.util

    paths = {sys.base_prefix, sys.prefix, str(CHILD.parent), *KEEP_FILES}
    exe = os.path.abspath(sys.executable)
    for _ in range(16):  # every folder on the way to the interpreter (a venv link, /etc/alternatives...)
        paths.add(os.path.dirname(exe))
        if not os.path.islink(exe):
            break
        exe = os.path.abspath(os.path.join(os.path.dirname(exe), os.readlink(exe)))
    for mod in ("numpy", "onnxruntime"):
        spec = importlib.util.find_spec(mod)
        if spec and spec.origin:
            paths.add(str(Path(spec.origin).parent.parent))
    real = {os.path.realpath(p) for p in paths} | paths
    return sorted(p for p in real if os.path.exists(p))


def own_uid() -> int:
    """A uid (and gid) that no other process uses, for one model process: no user, no file has it.

    ``OWN_UID_BASE + 16 x this process's pid + a counter``: processes alive at once have distinct
    pids, and one process runs at most 16 children at once (a worker runs one), so two models never
    share a uid and neither can signal the other (another team's run) or anything else on the host.
    """
    return OWN_UID_BASE + 16 * os.getpid() + next(_uid_counter) % 16


def confinement_available() -> bool:
    """True when this process can build the namespaces (root)."""
    return os.geteuid() == 0


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


def _spawn_as_pid1(popen: Callable[[int], subprocess.Popen], libc: ctypes.CDLL) -> subprocess.Popen:
    """``popen(pidfd of the worker)`` from a thread of its own that first unshares the PID namespace of its children:
    the child is pid 1 of a new one, and when it ends the kernel ends everything in it. The thread stays until the
    child has ended: the parent-death signal follows the thread that forked, not the worker process."""
    started: list = []
    ready = threading.Event()

    def run() -> None:
        try:
            if libc.unshare(_CLONE_NEWPID) != 0:
                raise ModelRunError(RunFailure.SANDBOX_UNAVAILABLE, "the worker cannot give the model a PID namespace "
                                    f"of its own ({os.strerror(ctypes.get_errno())})")
            worker_fd = os.pidfd_open(os.getpid())
            try:
                proc = popen(worker_fd)
            finally:
                os.close(worker_fd)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            started.append(exc)
            ready.set()
            return
        started.append(proc)
        ready.set()
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # ended; reaped by the caller (Popen)
        except ChildProcessError:  # already reaped
            pass

    threading.Thread(target=run, name="model-pid1", daemon=True).start()
    ready.wait()
    if isinstance(started[0], BaseException):
        raise started[0]
    return started[0]


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
