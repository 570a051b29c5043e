"""Registration of the benchmark platform with the server (:mod:`deepsift.server.domains`)."""
from __future__ import annotations

from pathlib import Path

from ..server.domains import Domain

HERE = Path(__file__).parent


def _routers():  # type: ignore[no-untyped-def]
    from . import api, api_manage, pages, pages_manage

    return [api.router, api_manage.router, pages.router, pages_manage.router]


def _setup(app, settings) -> None:  # type: ignore[no-untyped-def]
    from .settings import ChallengeSettings

    app.state.challenges = settings.section(ChallengeSettings, "challenges")
    import threading

    from .service import warm_keys

    def warm() -> None:
        try:
            warm_keys(app.state.db, app.state.storage)
        except Exception:  # noqa: BLE001 - best effort, in the background
            pass

    threading.Thread(target=warm, name="warm-keys", daemon=True).start()


def _background(settings) -> list[list[str]]:  # type: ignore[no-untyped-def]
    """``deepsift serve`` starts this many scoring workers (so a fresh install scores with no set-up)."""
    from .settings import ChallengeSettings

    n = settings.section(ChallengeSettings, "challenges").serve_workers
    return [["challenges", "worker", "--name", f"serve-{i}"] for i in range(n)]


DOMAIN = Domain(
    name="challenges",
    routers=_routers,
    migrations=HERE / "migrations",
    templates=HERE / "templates",
    static=None,  # no static files of its own: the pages use the server's deepsift.css/js
    nav=[("Challenges", "/challenges")],
    setup=_setup,
    background=_background,
)
