"""What a confined model process can see of the machine: no other process, no host network device, no cgroup tree."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from deepsift.challenges import sandbox
from deepsift.challenges.sandbox import Confinement
from test_challenges_sandbox import mean_model

pytestmark = pytest.mark.skipif(not sandbox.confinement_available(),
                                reason="confinement needs root (CI runs as root)")

PROBE = """
import json, os, sys
out = {"pid": os.getpid(), "procs": sorted(e for e in os.listdir("/proc") if e.isdigit())}
for name, path in (("worker", "/proc/%(worker)d/cmdline"), ("init", "/proc/1/cmdline"),
                   ("other", "/proc/%(other)d/cmdline"), ("other_env", "/proc/%(other)d/environ"),
                   ("other_mem", "/proc/%(other)d/mem"), ("self", "/proc/self/status"), ("maps", "/proc/self/maps")):
    try:
        with open(path, "rb") as f:
            out[name] = "read:%%d" %% len(f.read(4096))
    except OSError as e:
        out[name] = type(e).__name__
for name, path in (("net", "/sys/class/net"), ("cgroup", "/sys/fs/cgroup")):
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


def test_the_confined_child_sees_no_other_process_nor_the_hosts_devices(tmp_path):
    """Neither the worker (whose command line may hold a database password), nor pid 1, nor another team's
    running model; only its own /proc, /sys without the host's network interfaces or cgroups, fds 0-2."""
    other = _loaded_model_child(tmp_path)
    try:
        probe = tmp_path / "probe" / "probe.py"
        probe.parent.mkdir()
        probe.write_text(PROBE % {"worker": os.getpid(), "other": other.pid})
        probe.chmod(0o644)
        probe.parent.chmod(0o755)
        proc = sandbox._start(Confinement(memory_mb=1024, time_limit_s=30), script=probe)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert other.poll() is None  # still running while the probe looked
    finally:
        sandbox._kill(other)
        other.stdin.close()
        other.stdout.close()
    seen = json.loads(out)
    assert seen["procs"] == [str(seen["pid"])]
    for name in ("worker", "init", "other", "other_env", "other_mem"):
        assert seen[name] in ("FileNotFoundError", "PermissionError"), (name, seen[name])
    assert seen["self"].startswith("read:") and seen["maps"].startswith("read:")  # its own entries still work
    assert seen["net"] == ["lo"]  # its own network namespace's devices, not the host's
    assert seen["cgroup"] in ([], "FileNotFoundError")
    assert seen["fds"] == [0, 1, 2]
