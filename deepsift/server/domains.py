"""How a domain package (the benchmark platform, the demo) plugs into the one server.

A domain package ``deepsift/<name>/`` exposes, in ``deepsift/<name>/domain.py``, a module-level
``DOMAIN = Domain(...)`` naming what it brings:

* ``routers``: a callable returning its FastAPI routers (imported lazily, mounted as given; JSON
  routes under ``/api/<name>/...``, pages under ``/<name>/...`` by convention);
* ``migrations``: its Alembic versions folder (first revision: ``down_revision = "server_0001"``,
  ``branch_labels = ("<name>",)``); its tables are declared on :class:`deepsift.server.db.Base`;
* ``templates``: a folder whose templates sit under ``<name>/`` and extend ``base.html``;
* ``static``: a folder served at ``/static/<name>/``;
* ``nav``: links added to the shared page header;
* ``setup(app, settings)``: called once by ``create_app`` (read its settings section, put its
  services on ``app.state.<name>``); ``shutdown(app)`` at exit;
* ``extra["home"] = True``: the domain serves the site's home page ``/`` itself (the demo does);
* ``background(settings)``: command lines (argv lists after ``deepsift``) that ``deepsift serve``
  starts beside the server and stops with it (the platform's scoring workers).

:data:`DOMAIN_MODULES` lists the known domains; a missing one is skipped, so the server runs
with whatever is installed (``DEEPSIFT_DOMAINS`` narrows the list).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI

    from .settings import Settings

DOMAIN_MODULES: dict[str, str] = {
    "challenges": "deepsift.challenges.domain",
    "demo": "deepsift.demo.domain",
}
"""Domain name -> module holding its ``DOMAIN``. Add a line here to register a new domain."""


@dataclass
class Domain:
    """What a domain package contributes to the server."""

    name: str
    routers: Callable[[], Sequence["APIRouter"]] = lambda: ()
    migrations: Path | None = None
    templates: Path | None = None
    static: Path | None = None
    nav: Sequence[tuple[str, str]] = ()  # (label, path) in the page header
    setup: Callable[["FastAPI", "Settings"], None] | None = None
    shutdown: Callable[["FastAPI"], None] | None = None
    background: Callable[["Settings"], list[list[str]]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def load_domain(name: str) -> Domain | None:
    """The ``DOMAIN`` of a registered domain, or None when its package is not installed."""
    module_name = DOMAIN_MODULES.get(name, name)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):  # the domain package itself is absent
            return None
        raise
    dom = getattr(module, "DOMAIN", None)
    if not isinstance(dom, Domain):
        raise TypeError(f"{module_name} must define DOMAIN = deepsift.server.domains.Domain(...)")
    return dom


def installed_domains(names: Sequence[str] | None = None) -> list[Domain]:
    """Domains to mount: ``names`` (each must exist) or every installed registered one."""
    if names is None:
        return [d for d in (load_domain(n) for n in DOMAIN_MODULES) if d is not None]
    out = []
    for n in names:
        d = load_domain(n)
        if d is None:
            raise ValueError(f"domain {n!r} is not installed (known: {', '.join(DOMAIN_MODULES)})")
        out.append(d)
    return out


def migration_folders() -> list[Path]:
    """Alembic version folders of the server and of every installed domain (mounted or not)."""
    here = Path(__file__).parent / "migrations" / "versions"
    return [here] + [d.migrations for d in installed_domains() if d.migrations is not None]
