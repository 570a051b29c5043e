"""The documentation: the site builds strictly, the README lists every command, and every quick start
marked ``<!-- tested -->`` runs as written on tiny data (offline, with a CoDE model in a Hugging Face
cache that the test makes in the published layout)."""
from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import checker_image, smooth_image
from data_factory import make_shards
from pgserver import free_port
from serverkit import ServeProcess, group_pids, wait_gone

REPO = Path(__file__).resolve().parent.parent
TESTED = re.compile(r"<!-- tested(?:: (\w+))? -->\s*\n```bash\n(.*?)```", re.S)
"""A shell block run by the tests; ``<!-- tested: participant -->`` runs against a live platform."""
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _tested_blocks(kind: str | None = None) -> list[tuple[str, str]]:
    """(name, script) of every shell block marked as tested (``<!-- tested: KIND -->`` for ``kind``) in the
    README and the docs."""
    out = []
    for path in DOC_FILES:
        for i, m in enumerate(TESTED.finditer(path.read_text())):
            if m.group(1) == kind:
                out.append((f"{path.relative_to(REPO)}#{i + 1}", m.group(2)))
    return out


def test_the_site_builds_in_strict_mode(tmp_path):
    env = {**os.environ, "DISABLE_MKDOCS_2_WARNING": "true", "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    for path in _leaf_commands():  # the CLI reference is generated from the parsers: every command is there
        assert f"deepsift {' '.join(path)}" in cli
    settings = (tmp_path / "site" / "reference" / "settings" / "index.html").read_text()
    assert "DEEPSIFT_TRUSTED_PROXY" in settings and "DEEPSIFT_DEMO_MAX_IMAGES" in settings
    assert "DEEPSIFT_CHALLENGES_SERVE_WORKERS" in settings
    assert "DEEPSIFT_BACKEND" in settings and "$DEEPSIFT_BACKEND" in cli  # the CLI's default backend setting


def _leaf_commands() -> list[list[str]]:
    from deepsift.cli import build_parser

    def subs(p):
        return next((a.choices for a in p._actions if isinstance(a, argparse._SubParsersAction)), {})

    out: list[list[str]] = []

    def walk(p, path):
        children = subs(p)
        if not children:
            out.append(path)
        for name, child in children.items():
            walk(child, path + [name])

    walk(build_parser(), [])
    return out


def test_the_readme_command_table_names_every_command():
    readme = (REPO / "README.md").read_text()
    table = "\n".join(line for line in readme.splitlines() if line.startswith("| `"))
    missing = []
    for path in _leaf_commands():
        group, leaf = (path[0], path[-1]) if len(path) > 1 else (None, path[0])
        if f"`{' '.join(path)}" not in table and not (group and re.search(rf"\| `{group} [^|]*`{leaf}`", table)):
            missing.append(" ".join(path))
    assert not missing, f"README command table lacks: {missing}"
    assert len(readme.splitlines()) < 200


def test_every_setting_is_described():
    from deepsift.challenges.settings import ChallengeSettings
    from deepsift.demo.settings import DemoSettings
    from deepsift.server.settings import Settings

    bare = [f"{cls.__name__}.{name}" for cls in (Settings, ChallengeSettings, DemoSettings)
            for name, field in cls.model_fields.items() if not field.description]
    assert not bare, f"settings without a description (the settings page would be empty for them): {bare}"


def test_every_doc_link_points_at_a_file():
    """Relative links in the README and docs (as GitHub shows them) point at files that exist."""
    broken = []
    for path in DOC_FILES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(REPO)} -> {target}")
    assert not broken, broken


# -- the quick starts, run as written ------------------------------------------------------------
@pytest.fixture(scope="module")
def quickstart_home(tmp_path_factory, code_model_dir) -> dict[str, str]:
    """A Hugging Face cache holding aimagelab/CoDE in its published layout (random weights, the three
    pickled classifiers made as the authors made theirs), and the environment the blocks run in."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import OneClassSVM
    import joblib

    from deepsift.model.official import OFFICIAL_FILES

    home = tmp_path_factory.mktemp("home")
    snap = home / "hf" / "hub" / "models--aimagelab--CoDE" / "snapshots" / ("0" * 40)
    shutil.copytree(code_model_dir, snap)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0" * 40)
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (60, 192)), rng.normal(0.4, 1, (60, 192))].astype(np.float32)
    y = np.r_[np.zeros(60, int), np.ones(60, int)]
    (snap / "sklearn").mkdir()
    with open(snap / "sklearn" / OFFICIAL_FILES["linear"], "wb") as fh:
        pickle.dump(LogisticRegression(C=0.316, max_iter=1500, class_weight="balanced").fit(X, y), fh)
    with open(snap / "sklearn" / OFFICIAL_FILES["knn"], "wb") as fh:
        pickle.dump(KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(X, y), fh)
    joblib.dump(OneClassSVM(kernel="poly", gamma="auto", nu=0.1).fit(X[y == 0]), snap / "sklearn" / OFFICIAL_FILES["svm"])
    return {"HOME": str(home), "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "1",
            "DEEPSIFT_HOME": str(home / "deepsift"), "XDG_DATA_HOME": str(home / "share"),
            "XDG_CONFIG_HOME": str(home / "config")}


def _labelled(root: Path, layout: str, n: int = 12) -> None:
    """Tiny separable images: ``classes`` (real/ + fake/<gen>/) or ``folders`` (real/ + <gen>/)."""
    rng = np.random.default_rng(3)
    dirs = {"real": root / "real"}
    for gen in ("gen-a", "gen-b"):
        dirs[gen] = root / ("fake" if layout == "classes" else "") / gen
    for name, d in dirs.items():
        d.mkdir(parents=True)
        for i in range(n):
            arr = (smooth_image if name == "real" else checker_image)(rng, 256, 256)
            Image.fromarray(arr if name != "gen-b" else arr[:, ::-1].copy()).save(d / f"{name}-{i:03d}.png")


def _run_block(name: str, script: str, cwd: Path, env: dict[str, str]) -> None:
    """Run one quick start with bash -euo pipefail in ``cwd``; what it left running in the background (a server)
    is stopped afterwards (its process group, which this test started)."""
    env = {**os.environ, **env}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PORT", str(free_port()))
    with open(cwd / ".out", "w+") as out, open(cwd / ".err", "w+") as err:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, stdout=out, stderr=err,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=600)
        finally:
            _stop_group(proc.pid, int(env["PORT"]))
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    assert code == 0, f"{name} failed:\n{script}\n--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]


def _stop_group(pgid: int, port: int) -> None:
    """SIGTERM the block's process group (a background ``deepsift serve``); wait until its port is closed."""
    import signal
    import socket

    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return

    def closed() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) != 0

    try:
        wait_gone(group_pids(pgid), 30, f"the quick start's server on port {port} to stop")
        assert closed(), f"port {port} still open after the quick start's processes ended"
    finally:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
@pytest.mark.parametrize("name,script", _tested_blocks(), ids=[n for n, _ in _tested_blocks()])
def test_quick_start_runs_as_written(name, script, quickstart_home, tmp_path):
    _labelled(tmp_path / "data", "classes")
    _labelled(tmp_path / "testset", "folders")
    if "photo.jpg" in script:  # the demo operator's image, from the first quick start
        Image.fromarray(smooth_image(np.random.default_rng(5), 320, 240)).save(tmp_path / "photo.jpg", quality=90)
    if "d3-test" in script:  # the demo operator's quiz shards
        make_shards(tmp_path / "d3-test", 6, per_shard=3, n_gen=2)
    _run_block(name, script, tmp_path, quickstart_home)


@pytest.mark.slow
@pytest.mark.parametrize("name,script", _tested_blocks("participant"), ids=[n for n, _ in _tested_blocks("participant")])
def test_participant_quick_start_against_a_live_platform(name, script, quickstart_home, tmp_path):
    """The host's quick start sets a challenge up; ``deepsift serve`` (with its scoring worker) serves it; the
    participant's block runs as written, with ``DEEPSIFT_SERVER`` pointing at that server."""
    [(_, host)] = [b for b in _tested_blocks() if "challenges create" in b[1]]
    _labelled(tmp_path / "testset", "folders")
    _run_block("host", host, tmp_path, quickstart_home)
    bob = tmp_path / "bob"
    bob.mkdir()
    platform = tmp_path / "platform"
    with ServeProcess(f"sqlite:///{platform / 'deepsift.db'}", platform, extra_env=quickstart_home,
                      scoring_workers=1) as server:
        _run_block(name, script, bob, {**quickstart_home, "DEEPSIFT_SERVER": server.url})
        board = httpx.get(f"{server.url}/api/challenges/my-challenge/phases/dev/leaderboard").json()
    assert [r["team"] for r in board["rows"]] == ["bobs-team"]  # scored and on the board
    assert (bob / "preds.csv").read_text().startswith("source,")
