"""Registration of the demo with the server (:mod:`deepsift.server.domains`)."""
from __future__ import annotations

import logging
import re
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


class NoRoundIds(logging.Filter):
    """Access-log lines show quiz round paths without the round's id.

    The access log puts the client's address beside every path; a round id there would pair a
    visitor's address with their guesses. (The id is a capability: whoever has it may guess.)
    """

    PATTERN = re.compile(r"(/quiz/rounds/)[^/?\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's path arguments; never drops a record."""
        if isinstance(record.args, tuple):
            record.args = tuple(self.PATTERN.sub(r"\1<id>", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = self.PATTERN.sub(r"\1<id>", record.msg)
        return True


def _setup(app, settings) -> None:  # type: ignore[no-untyped-def]
    from .engine import DemoEngine
    from .quiz import QuizSet
    from .settings import DemoSettings

    from .bounds import Bounds, default_workers, tune_malloc

    ds = settings.section(DemoSettings, "demo")
    tune_malloc()  # a fixed threshold (glibc's dynamic one only grows); large decodes lower it while they run
    bounds = Bounds(ds.workers or default_workers(), ds.pixel_budget, ds.busy_wait_s, ds.url_fetches_per_visitor)
    app.state.demo = DemoState(ds, DemoEngine(ds), QuizSet(ds), bounds)
    app.state.body_limits["/api/v1/"] = ds.max_body_bytes  # the demo's own cap, checked before and while reading
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, NoRoundIds) for f in access.filters):
        access.addFilter(NoRoundIds())


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
