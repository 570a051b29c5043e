"""``create_app(settings)``: the one FastAPI application, assembled from the server and its domains.

The server owns accounts (users, tokens, sessions), the page layout, security headers, error
mapping and ``/healthz``; each domain package (:mod:`deepsift.server.domains`) brings its routers,
templates, static files and tables. The JSON API lives under ``/api/`` and is described by
``/api/openapi.json``; no page loads anything from another origin.
"""
from __future__ import annotations

import contextlib
import json
import logging
from typing import AsyncIterator, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from sqlalchemy import text

from .. import __version__
from ..exceptions import DeepsiftError, ServiceError
from .db import Database, make_private_dir
from .domains import Domain, installed_domains
from .security import RATE_LIMIT_FILE, RateLimiter, SharedRateLimiter, error_headers
from .settings import Settings
from .uploadslots import UploadSlots
from .web import HERE, BodyLimit, RejectNul, SecurityHeaders, make_environment, render, wants_html

log = logging.getLogger("deepsift.server")


class Health(BaseModel):
    """Liveness and database reachability."""

    status: str
    database: str
    version: str
    domains: list[str]


def create_app(settings: Settings | None = None, *, domains: Sequence[str | Domain] | None = None) -> FastAPI:
    """Build the application: database (migrated when ``settings.migrate_on_start``), routes, pages."""
    settings = settings or Settings()
    names = domains if domains is not None else settings.domains
    doms = [d for d in names if isinstance(d, Domain)] if names is not None else []
    wanted = [d for d in names if isinstance(d, str)] if names is not None else None
    if names is None or wanted:
        doms += installed_domains(wanted)
    make_private_dir(settings.data_dir)  # the database and the hidden files: owner only
    db = Database(settings.db_url, pool_size=settings.db_pool_size, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    if settings.migrate_on_start:
        from .migrate import upgrade

        upgrade(db, domains=doms)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for d in reversed(doms):
            if d.shutdown:
                d.shutdown(app)
        db.dispose()

    app = FastAPI(title=settings.site_name, version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json",
                  description="deepsift server: benchmark platform and demo. Authenticate API calls with "
                              "'Authorization: Bearer <token>' (tokens: POST /api/auth/token).")
    app.state.settings = settings
    app.state.db = db
    app.state.rate_limiter = RateLimiter() if settings.rate_limit_store == "memory" else \
        SharedRateLimiter(settings.data_dir / RATE_LIMIT_FILE, settings.signing_key())
    app.state.body_limits = {}  # path prefix -> a domain's own request body cap (under max_upload_bytes)
    app.state.domains = {d.name: d for d in doms}
    app.state.nav = [item for d in doms for item in d.nav]
    app.state.jinja = make_environment([d.templates for d in doms if d.templates is not None])
    from .storage import Storage

    app.state.storage = Storage(settings.storage_dir)

    _error_handlers(app)
    app.add_middleware(RejectNul)
    app.add_middleware(UploadSlots, settings=settings)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes + (1 << 20))  # + multipart overhead
    app.add_middleware(SecurityHeaders, settings=settings)

    from .account_routes import api as account_api
    from .account_routes import pages as account_pages

    from .admin_routes import api as admin_api

    app.include_router(account_api)
    app.include_router(account_pages)
    app.include_router(admin_api)

    @app.get("/healthz", response_model=Health, tags=["server"], responses={503: {"description": "database down"}})
    def healthz(request: Request) -> JSONResponse | Health:
        """Liveness: the server answers and its database too."""
        try:
            with db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any database failure is 'down'
            return JSONResponse({"status": "database unavailable", "detail": str(exc).splitlines()[0]}, 503)
        return Health(status="ok", database=db.dialect, version=__version__, domains=list(app.state.domains))

    if not any(d.extra.get("home") for d in doms):  # a domain may serve "/" itself (the demo does)
        @app.get("/", include_in_schema=False)
        def home(request: Request):  # type: ignore[no-untyped-def]
            if len(app.state.nav) == 1:
                return RedirectResponse(app.state.nav[0][1], status_code=303)
            return render(request, "home.html")

    for d in doms:
        if d.static is not None:
            app.mount(f"/static/{d.name}", StaticFiles(directory=d.static), name=f"static-{d.name}")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for d in doms:
        for router in d.routers():
            app.include_router(router)
        if d.setup:
            d.setup(app, settings)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory deepsift.server.app:app_from_env`` (settings from the environment)."""
    return create_app(Settings())


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: text a client escaped into its request (a lone
    surrogate such as ``"\\ud800"`` is valid JSON but no UTF-8) can be echoed back without a 500."""

    def render(self, content: object) -> bytes:
        """The content as ASCII JSON (same separators as Starlette's)."""
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _error_handlers(app: FastAPI) -> None:
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from sqlalchemy.exc import DBAPIError

    from .db import is_transient

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):  # type: ignore[no-untyped-def]
        return AsciiJSONResponse({"detail": jsonable_encoder(exc.errors())}, 422)

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError):  # type: ignore[no-untyped-def]
        if "NUL" in str(exc.orig):  # a text field the door did not see (a multipart form field)
            return JSONResponse({"detail": "text cannot contain NUL characters"}, 422)
        if not is_transient(exc):
            raise exc
        log.warning("database unavailable: %s", str(exc.orig or exc).splitlines()[0] if str(exc) else exc)
        return JSONResponse({"detail": "the database is unavailable for a moment; retry"}, 503,
                            headers={"Retry-After": "1"})

    @app.exception_handler(DeepsiftError)
    async def deepsift_error(request: Request, exc: DeepsiftError):  # type: ignore[no-untyped-def]
        status = exc.status_code if isinstance(exc, ServiceError) else 422
        headers = error_headers(exc) if isinstance(exc, ServiceError) else {}
        if status == 401 and not request.url.path.startswith("/api/"):
            if request.method == "GET" and wants_html(request):
                return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        if wants_html(request):
            return render(request, "error.html", {"status": status, "message": str(exc)}, status, headers)
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)
