"""Shared fixtures: a random CoDE-format model saved like the published one, and image files."""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# deepsift's own cache (backend measurements, ONNX exports, heads) goes to a folder of this session, never
# the user's ~/.cache/deepsift; tests that need their own set DEEPSIFT_HOME themselves.
os.environ.setdefault("DEEPSIFT_HOME", tempfile.mkdtemp(prefix="deepsift-test-home-"))
# the command line's default backend is torch, as the Python API's: with `auto` a timing measured on this machine
# would pick torch or ONNX Runtime (within 1e-4 of torch), and tighter CLI-vs-API comparisons would flake by it;
# the tests of auto (tests/test_backend_auto.py) pass `--backend auto` themselves.
os.environ["DEEPSIFT_BACKEND"] = "torch"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs with the hub offline (a test may lift it explicitly, e.g. to test errors)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory):
    """Tiny random diffusers pipeline, VAE and tokenizer saved like hub models (built once per session)."""
    from tiny_models import shared_tiny_models

    return shared_tiny_models(tmp_path_factory)


@pytest.fixture(scope="session")
def code_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ViT-Tiny in the published aimagelab/CoDE layout, random weights, saved by transformers."""
    from deepsift.model.backbone import create_backbone, save_backbone

    out = tmp_path_factory.mktemp("code-model")
    save_backbone(create_backbone(seed=0), out)
    return out


def smooth_image(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A 'real-looking' smooth colour field (low-frequency noise)."""
    small = rng.integers(0, 256, (max(h // 32, 2), max(w // 32, 2), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def checker_image(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A 'generated-looking' image: smooth field plus a periodic 8-px grid artefact."""
    base = smooth_image(rng, w, h).astype(np.int16)
    yy, xx = np.mgrid[0:h, 0:w]
    grid = (((yy // 4) + (xx // 4)) % 2) * 60 - 30
    return np.clip(base + grid[..., None], 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def labelled_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders real/, gen_a/, gen_b/ of separable synthetic images (PNG and JPEG mixed)."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(1)
    out = {}
    for name, maker in (("real", smooth_image), ("gen_a", checker_image), ("gen_b", checker_image)):
        d = root / name
        d.mkdir()
        for i in range(12):
            arr = maker(rng, 256, 256)
            if name == "gen_b":
                arr = arr[:, ::-1].copy()
            Image.fromarray(arr).save(d / f"{i:03d}.{'png' if i % 2 else 'jpg'}", quality=95)
        out[name] = d
    return out


# -- real services: PostgreSQL and a headless Chromium ------------------------------------------
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("DEEPSIFT_TEST_ARTIFACTS", REPO / "test-artifacts"))
"""Screenshots and other files a person reviews after a test run (git-ignored)."""


@pytest.fixture(scope="session")
def pg_server():
    """A private PostgreSQL server for the whole session (tests/pgserver.py); stopped at the end.

    Tests that need a clean database call ``pg_server.reset_database()``; tests of recovery call
    ``pg_server.restart()``. Fails (does not skip) when PostgreSQL is not installed:
    ``scripts/test.sh`` installs it.
    """
    import tempfile

    from pgserver import PgServer

    try:  # not under pytest's tmp folders: those are private to root, and the server runs as postgres
        server = PgServer(tempfile.mkdtemp(prefix="deepsift-pg-")).start()
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"cannot start the test PostgreSQL: {exc}")
    yield server
    server.destroy()


CHROMIUM = os.environ.get("DEEPSIFT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright (never a downloaded browser).

    Module-scoped: Playwright's sync API keeps an event loop running in the main thread while it is
    open, and any later test calling ``asyncio.run`` (e.g. the fetcher's) would fail.
    """
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (`apt-get install chromium`; scripts/test.sh does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path:
    """A folder for this test's screenshots: test-artifacts/screenshots/<test name>/."""
    name = request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
    out = ARTIFACTS / "screenshots" / name
    out.mkdir(parents=True, exist_ok=True)
    return out


# -- the server (deepsift/server) against SQLite and PostgreSQL -----------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: SQLite in tmp_path, or the session's PostgreSQL, reset (test ids -sqlite/-postgresql)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'deepsift.db'}"
    pg = request.getfixturevalue("pg_server")
    pg.reset_database()
    return pg.url


@pytest.fixture
def server_settings(database_url: str, tmp_path: Path):
    """Settings of a test server: ``database_url``, a private data folder, a fixed secret, loose rate limits."""
    from serverkit import make_settings

    return make_settings(database_url, tmp_path / "data")


@pytest.fixture
def app(server_settings):
    """The whole app (every installed domain) on a migrated database; disposed afterwards."""
    from deepsift.server import create_app

    application = create_app(server_settings)
    yield application
    application.state.db.dispose()


@pytest.fixture
def client(app):
    """A requests-style client on the app through the ASGI transport (no socket), lifespan run."""
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


@pytest.fixture
def live_server(app):
    """The app served by a real uvicorn on 127.0.0.1:<free port> (``.url``) in a thread."""
    from serverkit import LiveServer

    with LiveServer(app) as server:
        yield server


@pytest.fixture
def small_disk(tmp_path):
    """A factory: ``small_disk("64k")`` mounts a tmpfs of that size in the test's folder (root only; unmounted after)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"small{len(mounts)}"
        mnt.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)]).returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        mounts.append(mnt)
        return mnt

    yield mount
    for mnt in mounts:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


SOLID_PLUGIN = '''
from __future__ import annotations
from PIL import Image

class Solid:
    """A generator outside deepsift: one flat colour per seed."""
    needs_real_image = False

    def __init__(self, name, size="16"):
        self.name, self.model, self.steps = name, "solid-colour-v1", None
        self.width = self.height = int(size)
        self.batch_size = 3
        self.loaded = False

    def load(self):
        self.loaded = True

    def generate(self, prompts, negative_prompts, seeds, real_images=None):
        assert self.loaded
        return [Image.new("RGB", (self.width, self.height), (s % 256, len(p) % 256, 7)) for p, s in zip(prompts, seeds)]
'''


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """A real installed distribution (dist-info with an entry point) on sys.path: generator plugin ``solid``
    (``flat=plugin:solid,size=8``: one flat colour per seed, no model, no torch)."""
    from deepsift.generate.backends import ENTRY_POINT_GROUP

    site = tmp_path / "site"
    (site / "solid_plugin").mkdir(parents=True)
    (site / "solid_plugin" / "__init__.py").write_text(SOLID_PLUGIN)
    info = site / "solid_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: solid-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nsolid = solid_plugin:Solid\nbroken = solid_plugin:Missing\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
