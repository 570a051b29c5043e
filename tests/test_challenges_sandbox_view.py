"""What a confined model process can see of the machine: no other process, none of the host's network devices,
cgroups, device nodes, hostname or IPC objects, no inherited descriptor or environment variable."""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import select
import tempfile
from pathlib import Path

import pytest

from deepsift.challenges import confine, sandbox
from deepsift.challenges.runfailures import ModelRunError, RunFailure
from deepsift.challenges.sandbox import Confinement, parse_preprocessing, run_model
from platformkit import make_folders
from test_challenges_sandbox import mean_model

pytestmark = pytest.mark.skipif(not sandbox.confinement_available(),
                                reason="confinement needs root (CI runs as root)")
IPC_CREAT, IPC_EXCL, IPC_RMID = 0o1000, 0o2000, 0

PROBE = """
import ctypes, json, os, socket, sys
out = {"pid": os.getpid(), "procs": sorted(e for e in os.listdir("/proc") if e.isdigit())}
for name, path in (("worker", "/proc/%(worker)d/cmdline"), ("init", "/proc/1/cmdline"),
                   ("other", "/proc/%(other)d/cmdline"), ("other_env", "/proc/%(other)d/environ"),
                   ("other_mem", "/proc/%(other)d/mem"), ("self", "/proc/self/status"), ("maps", "/proc/self/maps"),
                   ("cgroups", "/proc/self/cgroup"), ("zero", "/dev/zero")):
    try:
        with open(path, "rb") as f:
            out[name] = "read:" + f.read(4096).decode("latin-1")
    except OSError as e:
        out[name] = type(e).__name__
for name, path in (("net", "/sys/class/net"), ("cgroup", "/sys/fs/cgroup"), ("dev", "/dev")):
    try:
        out[name] = sorted(os.listdir(path))
    except OSError as e:
        out[name] = type(e).__name__
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
out["fds"] = [fd for fd in range(64) if is_open(fd)]
out["hostname"] = socket.gethostname()
out["env"] = sorted(os.environ)
out["shm"] = ctypes.CDLL(None).shmget(%(shm_key)d, 0, 0)  # -1: no such segment in its IPC namespace
out["ids"] = [os.getuid(), os.getgid(), os.getgroups()]
for name, pid in (("signal_other", %(other)d), ("signal_worker", %(worker)d), ("signal_none", %(gone)d)):
    try:
        os.kill(pid, 0)  # signal 0: the permission check alone, nothing is sent
        out[name] = "allowed"
    except OSError as e:
        out[name] = type(e).__name__
sys.stdout.write(json.dumps(out))
"""


def _loaded_model_child(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real confined model process, its model loaded (its answer read back), waiting for a batch."""
    data = mean_model(tmp_path / "m.onnx").read_bytes()
    proc = sandbox._start(Confinement(memory_mb=1024, time_limit_s=30))
    proc.stdin.write(json.dumps({"model_bytes": len(data), "threads": 1}).encode() + b"\n" + data)
    proc.stdin.flush()
    assert proc.stdout.read(8) == struct.pack(">Q", 0)
    return proc


@pytest.fixture(scope="module")
def seen(tmp_path_factory):  # type: ignore[no-untyped-def]
    """What a confined probe saw while another team's model was running and the host held a shared memory segment
    anyone may read."""
    tmp = tmp_path_factory.mktemp("view")
    libc = ctypes.CDLL(None, use_errno=True)
    key = int.from_bytes(os.urandom(3), "big") + 1
    shm = libc.shmget(key, 4096, IPC_CREAT | IPC_EXCL | 0o666)  # a new one: never removes a host segment
    assert shm >= 0, os.strerror(ctypes.get_errno())
    other = _loaded_model_child(tmp)
    try:
        probe = tmp / "probe" / "probe.py"
        probe.parent.mkdir()
        gone = subprocess.Popen(["true"])  # a host pid that surely does not exist: its process ended, reaped
        gone.wait()
        probe.write_text(PROBE % {"worker": os.getpid(), "other": other.pid, "shm_key": key, "gone": gone.pid})
        probe.chmod(0o644)
        probe.parent.chmod(0o755)
        proc = sandbox._start(Confinement(memory_mb=1024, time_limit_s=30), script=probe)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert other.poll() is None  # still running while the probe looked
        other_uid = int(Path(f"/proc/{other.pid}/status").read_text().split("Uid:")[1].split()[0])
    finally:
        sandbox._kill(other)
        other.stdin.close()
        other.stdout.close()
        libc.shmctl(shm, IPC_RMID, None)
    with pytest.raises(ProcessLookupError):
        os.kill(gone.pid, 0)  # still no such process on the host after the probe ran
    return {**json.loads(out), "other_uid": other_uid, "worker_pid": os.getpid()}


def test_the_confined_child_sees_no_other_process(seen):
    """Neither the worker (whose command line may hold a database password), nor the host's pid 1, nor another
    team's running model (its memory holds that team's model and the hidden images' pixels)."""
    assert seen["procs"] == [str(seen["pid"])]
    assert seen["init"].startswith("read:") and "probe.py" in seen["init"]  # its pid 1 is itself, not the host's
    for name in ("worker", "other", "other_env", "other_mem"):
        assert seen[name] in ("FileNotFoundError", "PermissionError"), (name, seen[name])
    assert seen["self"].startswith("read:") and seen["maps"].startswith("read:")  # its own entries still work


def test_each_model_process_has_a_uid_of_its_own_and_can_signal_no_other(seen):
    """Two teams' models running at once never share a uid: neither can signal (kill) the other, nor the worker."""
    uid, gid, groups = seen["ids"]
    assert uid == gid and uid >= sandbox.OWN_UID_BASE and groups == []
    assert seen["other_uid"] >= sandbox.OWN_UID_BASE and seen["other_uid"] != uid
    assert seen["signal_other"] == seen["signal_worker"] == "ProcessLookupError"  # not even in its PID namespace


def test_the_confined_child_cannot_tell_a_host_pid_that_exists_from_one_that_does_not(seen):
    """kill(pid, 0) of the worker's real pid and of a pid that surely does not exist answer alike: a model cannot
    map the host's processes. It is pid 1 of a PID namespace of its own, alone in its /proc."""
    assert seen["worker_pid"] != 1 and seen["signal_worker"] == seen["signal_none"] == "ProcessLookupError"
    assert seen["pid"] == 1 and seen["procs"] == ["1"]


def test_a_host_named_sandbox_user_is_used_as_is(tmp_path):
    """``sandbox_user`` set: every model runs as that user (the behaviour before a uid of its own)."""
    import pwd

    probe = tmp_path / "probe" / "uid.py"
    probe.parent.mkdir()
    probe.write_text("import os, sys; sys.stdout.write('%d %d' % (os.getuid(), os.getgid()))")
    probe.chmod(0o644)
    probe.parent.chmod(0o755)
    proc = sandbox._start(Confinement(memory_mb=1024, time_limit_s=30, user="nobody"), script=probe)
    out, _ = proc.communicate(timeout=60)
    nobody = pwd.getpwnam("nobody")
    assert proc.returncode == 0 and out.decode() == f"{nobody.pw_uid} {nobody.pw_gid}"


def test_the_confined_child_sees_no_host_network_device_nor_cgroup_tree(seen):
    assert seen["net"] == ["lo"]  # its own network namespace's devices, not the host's (names, MAC addresses)
    assert seen["cgroup"] in ([], "FileNotFoundError")
    cgroups = seen["cgroups"].removeprefix("read:").splitlines()
    assert cgroups and all(line.endswith(":/") for line in cgroups), cgroups  # not the worker's service path


def test_the_confined_child_has_only_the_harmless_device_nodes(seen):
    assert seen["dev"] == sorted(sandbox.DEV_NODES)
    assert seen["zero"] == "read:" + "\0" * 4096


def test_the_confined_child_has_its_own_hostname_and_ipc(seen):
    assert seen["hostname"] == sandbox.HOSTNAME != socket.gethostname()
    assert seen["shm"] == -1  # the host's world-readable segment does not exist for it


def test_the_confined_child_inherits_no_descriptor_nor_environment(seen):
    assert seen["fds"] == [0, 1, 2]
    assert seen["env"] == ["LANG", "OMP_NUM_THREADS", "PATH"]


@pytest.mark.parametrize("options", [b"hidepid=no-such-value",  # refused, as kernels 5.3-5.7 refuse ours
                                     b"hidepid=invisible"])  # mounted with /proc's system files, as if ignored
def test_a_proc_without_its_options_fails_closed_and_leaves_the_hosts_proc_alone(tmp_path, monkeypatch, options):
    """A kernel older than 5.8 cannot give the child its own /proc: the run is refused, never run with the host's."""
    def proc_mount() -> list[str]:
        return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if " /proc " in line]

    before = proc_mount()
    monkeypatch.setattr(confine, "PROC_OPTIONS", options)
    images = sorted(make_folders(tmp_path / "imgs", n=1).rglob("*.*"))
    spec = parse_preprocessing({"input_size": 32, "crop": "stretch", "output": "score", "batch_size": 4})
    with pytest.raises(ModelRunError) as exc:
        run_model(mean_model(tmp_path / "m.onnx"), images, spec, Confinement(memory_mb=1024, time_limit_s=30))
    assert exc.value.kind is RunFailure.SANDBOX_UNAVAILABLE and "its own /proc" in str(exc.value)  # the host's clue
    assert proc_mount() == before


def test_a_top_level_folder_of_the_host_is_hidden_too(tmp_path):
    """Not only the usual ones (/etc, /srv, /opt...): a deployment's own folder at the root (/app with its .env, say)
    shows empty, a file at the root reads empty; the system folders stay."""
    plant = Path(tempfile.mkdtemp(dir="/", prefix="deepsift-app-"))
    fd, loose = tempfile.mkstemp(dir="/", prefix="deepsift-app-", suffix=".env")
    os.write(fd, b"DATABASE_URL=postgresql://app:secret@db/y")
    os.close(fd)
    os.chmod(loose, 0o644)
    try:
        plant.chmod(0o755)
        (plant / "app.env").write_text("DATABASE_URL=postgresql://app:secret@db/x")
        (plant / "app.env").chmod(0o644)  # readable by anyone, as a careless deployment leaves it
        probe = tmp_path / "probe" / "probe.py"
        probe.parent.mkdir()
        probe.write_text("import json, os, sys\n"
                         f"p = {str(plant)!r}\n"
                         "out = {'entries': os.listdir(p) if os.path.isdir(p) else None, 'usr': os.listdir('/usr')}\n"
                         f"out['loose'] = open({loose!r}).read() if os.path.exists({loose!r}) else ''\n"
                         "sys.stdout.write(json.dumps(out))\n")
        probe.chmod(0o644)
        probe.parent.chmod(0o755)
        proc = sandbox._start(Confinement(memory_mb=1024, time_limit_s=30), script=probe)
        out, _ = proc.communicate(timeout=60)
    finally:
        shutil.rmtree(plant)
        os.unlink(loose)
    assert proc.returncode == 0
    seen = json.loads(out)
    assert seen["entries"] in ([], None) and seen["loose"] == ""
    assert "lib" in seen["usr"]


def _probe(tmp_path: Path, code: str) -> Path:
    probe = tmp_path / "probe" / "probe.py"
    probe.parent.mkdir()
    probe.write_text(code)
    probe.chmod(0o644)
    probe.parent.chmod(0o755)
    return probe


def test_every_process_of_the_namespace_ends_with_its_pid_1(tmp_path):
    """A process started inside (a model cannot, a probe can) does not outlive the model's pid 1: the kernel ends the
    whole PID namespace. The witness: the sleeper holds the pipe of the child's stdout, which then reads its end."""
    probe = _probe(tmp_path, "import os, signal, sys\n"
                             "pid = os.fork()\n"
                             "if pid == 0:\n"
                             "    signal.pause()  # until a signal ends it: only the namespace's end\n"
                             "    os._exit(0)\n"
                             "sys.stdout.write('%d\\n' % pid)\n")
    proc = sandbox._start(Confinement(memory_mb=1024, time_limit_s=30), script=probe)
    fd = proc.stdout.fileno()
    try:
        got = b""
        while not got.endswith(b"\n") and select.select([fd], [], [], 30)[0] and (chunk := os.read(fd, 64)):
            got += chunk
        assert proc.wait(30) == 0 and got == b"2\n"  # the sleeper was pid 2 of the child's own namespace
        ended = select.select([fd], [], [], 10)[0] and os.read(fd, 64) == b""
        assert ended, "a process of the model's namespace outlived its pid 1"
    finally:
        sandbox._kill(proc)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a sleeper a failed test left in its process group
        proc.stdin.close()
        proc.stdout.close()


def test_a_child_whose_worker_is_gone_before_its_death_signal_is_set_does_not_run(tmp_path, monkeypatch):
    """The parent-death signal is set last (a change of user clears it); a worker that ended before that line would
    never send it, so the child checks the worker's pidfd and stops (exit 70) before its script runs."""
    ended = subprocess.Popen(["true"])
    gone = os.pidfd_open(ended.pid)
    ended.wait()  # its pidfd reads as ended, like the worker's would
    monkeypatch.setattr(os, "pidfd_open", lambda pid: os.dup(gone))
    try:
        probe = _probe(tmp_path, "import sys; sys.stdout.write('ran')\n")
        proc = sandbox._start(Confinement(memory_mb=1024, time_limit_s=30), script=probe)
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(gone)
    assert (proc.returncode, out) == (70, b"")
