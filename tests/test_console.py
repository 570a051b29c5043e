"""Quiet by default: deepsift's own lines only; --verbose shows the libraries' notices; --quiet errors only.

An unreachable or switched-off hub fails at once with one line naming the cause.
Each test runs the real command in a fresh process (library notices are printed once per process).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

CHATTER = ("torchvision", "accelerate", "Loading pipeline", "Loading weights", "Warning", "warn(", "Retrying")


def run(*argv: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "deepsift", *argv], capture_output=True, text=True, env=full,
                          timeout=timeout)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("console") / "p.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "a red square"}) + "\n")
    return path


def test_default_is_quiet_and_verbose_shows_the_libraries(models, prompts, tmp_path):
    gen = f"a=t2i:{models.sd},steps=2,width=32,height=32"
    quiet = run("data", "build", "--prompts", str(prompts), "-g", gen, "--out", str(tmp_path / "q"))
    assert quiet.returncode == 0, quiet.stderr
    assert not [c for c in CHATTER if c in quiet.stderr], quiet.stderr
    assert "build: wrote 1 record(s)" in quiet.stderr
    loud = run("data", "build", "--prompts", str(prompts), "-g", gen, "--out", str(tmp_path / "v"), "--verbose")
    assert loud.returncode == 0 and [c for c in CHATTER if c in loud.stderr], loud.stderr
    assert "deepsift: wrote" in loud.stderr  # and deepsift's own per-shard lines
    silent = run("data", "build", "--prompts", str(prompts), "-g", gen, "--out", str(tmp_path / "s"), "-q")
    assert silent.returncode == 0 and silent.stderr == "", silent.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("hub", ["off", "unreachable"])
@pytest.mark.parametrize("command", ["build", "detect", "info"])
def test_a_hub_id_that_cannot_load_fails_at_once_in_one_line(prompts, tmp_path, hub, command):
    env = {"HF_HOME": str(tmp_path / "hf")}
    if hub == "unreachable":  # the hub's address refuses connections: no retries, no 44 s wait
        env.update(HF_HUB_OFFLINE=None, HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    argv = {"build": ["data", "build", "--prompts", str(prompts), "-g", "a=t2i:nobody/no-model", "--out",
                      str(tmp_path / "o")],
            "detect": ["detect", str(prompts), "--model", "nobody/no-model"],
            "info": ["data", "info", "nobody/no-dataset"]}[command]
    done = run(*argv, env=env, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("deepsift: error:") and "not in the local Hugging Face cache" in lines[0]
    assert ("HF_HUB_OFFLINE=1" if hub == "off" else "cannot be reached (Connection refused)") in lines[0]
    assert "does not appear to have a file named" not in done.stderr
    assert not (tmp_path / "o").exists()
