"""Registration of the demo with the server (:mod:`deepsift.server.domains`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..server.domains import Domain

HERE = Path(__file__).parent


@dataclass
class DemoState:
    """What the demo keeps on ``app.state.demo``: its settings, detector engine, quiz set and limits."""

    settings: Any
    engine: Any
    quiz: Any
    bounds: Any = None


def _routers():  # type: ignore[no-untyped-def]
    from . import api, pages

    return [api.router, pages.router]


def _setup(app, settings) -> None:  # type: ignore[no-untyped-def]
    from .engine import DemoEngine
    from .quiz import QuizSet
    from .settings import DemoSettings

    from .bounds import Bounds, default_workers

    ds = settings.section(DemoSettings, "demo")
    bounds = Bounds(ds.workers or default_workers(), ds.pixel_budget, ds.busy_wait_s, ds.url_fetches_per_visitor)
    app.state.demo = DemoState(ds, DemoEngine(ds), QuizSet(ds), bounds)
    app.state.body_limits["/api/v1/"] = ds.max_body_bytes  # the demo's own cap, checked before and while reading


def _shutdown(app) -> None:  # type: ignore[no-untyped-def]
    app.state.demo.engine.close()
    app.state.demo.bounds.close()


DOMAIN = Domain(
    name="demo",
    routers=_routers,
    migrations=HERE / "migrations",
    templates=HERE / "templates",
    static=HERE / "static",
    nav=[("Detect", "/"), ("Quiz", "/quiz"), ("Quiz results", "/quiz/results")],
    setup=_setup,
    shutdown=_shutdown,
    extra={"home": True},  # the detect page is the site's home page
)
