"""How a model's child process is confined (:mod:`.sandbox` describes what it sees and runs it).

The worker's side of the confinement: the child is pid 1 of a PID namespace of its own, unshared by a
thread of the worker for its children (:func:`_spawn_as_pid1`); between fork and exec the child
builds its other namespaces, its mounts, its identity and its limits (:func:`_preexec`).
"""
from __future__ import annotations

import ctypes
import itertools
import os
import resource
import select
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .runfailures import ModelRunError, RunFailure

CHILD = Path(__file__).with_name("sandbox_child.py")
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
_NO_OWN_PROC = 77  # the setup exit code of a /proc that could not be the child's own

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
