"""The deepsift server: one FastAPI app assembled from domain packages (platform, demo).

    from deepsift.server import Settings, create_app
    app = create_app(Settings(data_dir="/srv/deepsift"))      # migrates the database, mounts domains

See :mod:`deepsift.server.domains` for how a domain package plugs in. The names below are loaded
on first use, so importing a server module (``deepsift serve --help``) does not load FastAPI.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .domains import Domain
    from .settings import Settings

__all__ = ["Domain", "Settings", "create_app"]


def __getattr__(name: str) -> Any:
    """Lazy re-exports: ``create_app`` (FastAPI), ``Settings`` (pydantic), ``Domain``."""
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "Settings":
        from .settings import Settings

        return Settings
    if name == "Domain":
        from .domains import Domain

        return Domain
    raise AttributeError(f"module 'deepsift.server' has no attribute {name!r}")
