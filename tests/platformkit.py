"""Helpers for the benchmark-platform tests: test images, a hosted challenge, participants, predictions."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from deepsift.challenges import service
from deepsift.challenges.spec import TestSetSpec, parse_spec
from deepsift.challenges.testsets import collect, load_key
from deepsift.server.accounts import create_user

GENERATORS = ("gen_a", "gen_b")


def smooth(rng: np.random.Generator, w: int = 32, h: int = 32) -> np.ndarray:
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def checker(rng: np.random.Generator, w: int = 32, h: int = 32) -> np.ndarray:
    base = smooth(rng, w, h).astype(np.int16)
    yy, xx = np.mgrid[0:h, 0:w]
    return np.clip(base + ((((yy // 2) + (xx // 2)) % 2) * 60 - 30)[..., None], 0, 255).astype(np.uint8)


def make_folders(root: Path, n: int = 8, generators: tuple[str, ...] = GENERATORS, seed: int = 0,
                 sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    """real/ + one folder per generator of small PNG/JPEG images (fakes carry a checker artefact)."""
    rng = np.random.default_rng(seed)
    for g in ("real", *generators):
        d = root / g
        d.mkdir(parents=True, exist_ok=True)
        w, h = (sizes or {}).get(g, (32, 32))
        for i in range(n):
            arr = smooth(rng, w, h) if g == "real" else checker(rng, w, h)
            Image.fromarray(arr).save(d / f"{g}_{i:03d}.{'png' if i % 2 else 'jpg'}", quality=95)
    return root


def make_d3_test(root: Path, n: int = 4, seed: int = 0) -> Path:
    """The D3 test layout {augm,no_augm}/{real,gen_0,gen_1}."""
    for i, split in enumerate(("no_augm", "augm")):
        make_folders(root / split, n, ("gen_0", "gen_1"), seed + i)
    return root


def spec_dict(slug: str = "c1", **phase: Any) -> dict:
    now = dt.datetime.now(dt.timezone.utc)
    ph = {"slug": "dev", "title": "Development", "starts": now - dt.timedelta(days=1),
          "ends": now + dt.timedelta(days=1), "bootstrap": 50, **phase}
    return {"slug": slug, "title": f"Challenge {slug}", "description": "Find the fakes.\n\nSecond paragraph.",
            "rules": "Be fair.", "phases": [ph]}


@dataclass
class Participant:
    name: str
    token: str
    team: str | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Hosted:
    """A challenge with one open phase and its test set, plus a host token."""

    app: Any
    slug: str
    phase: str
    host: Participant
    key_folder: Path
    names: list[str] = field(default_factory=list)

    @property
    def key(self):  # type: ignore[no-untyped-def]
        return load_key(self.key_folder)


def register(client: Any, name: str, password: str = "password-123") -> Participant:
    r = client.post("/api/auth/register", json={"username": name, "password": password})
    assert r.status_code == 201, r.text
    r = client.post("/api/auth/token", json={"username": name, "password": password})
    assert r.status_code == 201, r.text
    return Participant(name, r.json()["token"])


def host_challenge(app: Any, client: Any, data_root: Path, *, slug: str = "c1", n: int = 8,
                   source: str = "folders", generators: tuple[str, ...] = GENERATORS, **phase: Any) -> Hosted:
    """Create a host, a challenge with one open phase, and import a small test set."""
    db, storage = app.state.db, app.state.storage
    with db.session(write=True) as s:
        create_user(s, username=f"host-{slug}", password="host-password", role="host")
    host = Participant(f"host-{slug}", client.post("/api/auth/token", json={
        "username": f"host-{slug}", "password": "host-password"}).json()["token"])
    with db.session(write=True) as s:
        from deepsift.server.models import User
        from sqlalchemy import select

        user = s.scalar(select(User).where(User.username == f"host-{slug}"))
        service.create_challenge(s, parse_spec(spec_dict(slug, **phase)), user)
    if source == "d3-test":
        path = make_d3_test(data_root / f"{slug}-data", n)
    else:
        path = make_folders(data_root / f"{slug}-data", n, generators)
    ts = service.import_testset(db, storage, slug, "dev", collect(TestSetSpec(source=source, path=str(path))), threads=2)
    hosted = Hosted(app, slug, "dev", host, storage.root / ts.folder)
    hosted.names = hosted.key.names.to_pylist()
    return hosted


def join(client: Any, slug: str, p: Participant, team: str) -> Participant:
    r = client.post(f"/api/challenges/{slug}/teams", json={"name": team}, headers=p.auth)
    assert r.status_code == 201, r.text
    p.team = team
    return p


def good_scores(hosted: Hosted, noise: float = 0.0, seed: int = 0) -> dict[str, float]:
    """Scores that mostly follow the hidden labels (the test's stand-in for a detector)."""
    rng = np.random.default_rng(seed)
    key = hosted.key
    return {n: float(np.clip(0.8 * lab + 0.1 + rng.normal(0, noise), 0, 1)) for n, lab in
            zip(key.names.to_pylist(), key.labels)}


def csv_text(scores: dict[str, float], labels: dict[str, int] | None = None) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["id", "score"] + (["label"] if labels else []))
    for k, v in scores.items():
        w.writerow([k, f"{v:.6f}"] + ([labels[k]] if labels else []))
    return out.getvalue()


def submit(client: Any, hosted: Hosted, p: Participant, text: str | bytes, name: str = "preds.csv", **data: str):
    return client.post(f"/api/challenges/{hosted.slug}/phases/{hosted.phase}/submissions",
                       files={"file": (name, text)}, data={"kind": "predictions", **data}, headers=p.auth)


def archive_names(content: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        return [n[len("images/"):] for n in zf.namelist() if n.startswith("images/")]


def run_worker(app: Any, **kw: Any) -> int:
    """Score everything queued with an in-process worker."""
    from deepsift.challenges.settings import ChallengeSettings
    from deepsift.challenges.worker import Worker

    w = Worker(app.state.db, app.state.storage, ChallengeSettings(**kw), poll_s=0.05)
    return w.run(once=True)


def elsa_json(scores: dict[str, float]) -> str:
    return json.dumps({k: int(v >= 0.5) for k, v in scores.items()})
