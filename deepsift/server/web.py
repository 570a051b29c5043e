"""Server-rendered pages: the shared Jinja environment, ``render()``, security headers, error pages.

Templates come from the server's ``templates/`` (``base.html``, ``error.html``, account pages) and
from each domain's templates folder (its files under ``<domain>/``). A page extends
``base.html`` and fills ``title`` and ``content``; the context always has ``request``, ``user``,
``csrf_token`` (for hidden form fields), ``site_name``, ``nav`` and ``static(domain, path)``.

Every response gets a strict Content-Security-Policy (no inline script, nothing from another
origin), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy`` and a frame ban unless the
route set its own CSP (the embeddable leaderboard does: ``embeddable_headers()``).
"""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Mapping

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .security import CSRF_COOKIE, cookie_secure, csrf_token_for

HERE = Path(__file__).parent
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def embeddable_headers() -> dict[str, str]:
    """Headers of a page other sites may show in an iframe (read-only, no script, no forms)."""
    return {"Content-Security-Policy": ("default-src 'none'; img-src 'self' data:; style-src 'self'; "
                                        "frame-ancestors *; base-uri 'none'; form-action 'none'")}


def make_environment(template_dirs: list[Path]) -> Environment:
    """The Jinja environment: server templates first, then each domain's folder."""
    env = Environment(loader=ChoiceLoader([FileSystemLoader(str(d)) for d in [HERE / "templates", *template_dirs]]),
                      autoescape=select_autoescape(default=True, default_for_string=True), trim_blocks=True,
                      lstrip_blocks=True)
    return env


def csrf_cookie_value(request: Request) -> str:
    """This client's CSRF cookie value; a new one is made (and set by the middleware) when absent."""
    value = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf_cookie", None)
    if not value:
        value = secrets.token_urlsafe(24)
        request.state.new_csrf_cookie = value
    return value


def csrf_token(request: Request) -> str:
    """The token a form of this page must send back in its ``csrf_token`` field."""
    return csrf_token_for(csrf_cookie_value(request), request.app.state.settings.signing_key())


def render(request: Request, template: str, context: Mapping[str, Any] | None = None, status_code: int = 200,
           headers: Mapping[str, str] | None = None) -> HTMLResponse:
    """Render ``template`` with the shared context (user, CSRF token, navigation) into a response."""
    app = request.app
    user = getattr(request.state, "user", None)
    ctx = {
        "request": request, "user": user, "csrf_token": csrf_token(request),
        "site_name": app.state.settings.site_name, "nav": app.state.nav,
        "static": lambda domain, path: f"/static/{domain}/{path}" if domain else f"/static/{path}",
        **(context or {}),
    }  # fmt: skip
    html = app.state.jinja.get_template(template).render(ctx)
    return HTMLResponse(html, status_code=status_code, headers=dict(headers or {}))


def wants_html(request: Request) -> bool:
    """True for a browser page request (not the JSON API)."""
    if request.url.path.startswith("/api/"):
        return False
    return "text/html" in request.headers.get("accept", "")


class SecurityHeaders:
    """ASGI middleware: security headers on every response, and the CSRF cookie when a page made one."""

    def __init__(self, app: ASGIApp, settings: Any) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", CSP.encode()))
                    headers.append((b"x-frame-options", b"DENY"))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"same-origin"))
                new = scope["state"].get("new_csrf_cookie")
                if new:
                    secure = cookie_secure(Request(scope), self.settings)
                    cookie = f"{CSRF_COOKIE}={new}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
                    headers.append((b"set-cookie", cookie.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


MAX_TEXT_BODY = 2 << 20
"""Largest JSON or URL-encoded form body: they are read whole into memory and parsed into objects many
times their size (a 256 MiB JSON array of zeros takes gigabytes), and none needs more (files come as
multipart/form-data)."""
PARSED_IN_MEMORY = (b"application/json", b"application/x-www-form-urlencoded")


class BodyLimit:
    """ASGI middleware: a request body larger than ``max_bytes`` gets a 413 before it fills the disk.

    A declared Content-Length over the cap is refused at once; a chunked body is counted as it
    arrives and cut off at the cap. A domain may set a smaller cap for its paths in
    ``app.state.body_limits`` (path prefix -> bytes); a JSON or URL-encoded form body is capped at
    :data:`MAX_TEXT_BODY`.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        limit = self.max_bytes
        path = scope.get("path", "")
        for prefix, cap in getattr(getattr(scope.get("app"), "state", None), "body_limits", {}).items():
            if path.startswith(prefix):
                limit = min(limit, cap)
        ctype = dict(scope.get("headers", [])).get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype in PARSED_IN_MEMORY or ctype.endswith(b"+json"):  # files come as multipart/form-data
            limit = min(limit, MAX_TEXT_BODY)
        too_big = JSONResponse({"detail": f"request body larger than the {limit / (1 << 20):g} MiB limit"
                                          + (" of a JSON or form body (files go in multipart/form-data)"
                                             if limit == MAX_TEXT_BODY else "")}, 413)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await too_big(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await too_big(scope, receive, send)


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so that FastAPI's body parser passes it through as a 413."""

    def __init__(self) -> None:
        super().__init__(413, "request body larger than the upload limit")


class RejectNul:
    """ASGI middleware: NUL characters in a path, a query or a JSON/form body are a 422, on every database.

    (PostgreSQL cannot store or even compare text with NUL; SQLite can. Refusing them at the door
    keeps the two alike and turns what would be a server error into a clear answer.) Multipart
    bodies are left alone: files may hold any byte; their text fields meet the database's check.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        refuse = JSONResponse({"detail": "text cannot contain NUL characters"}, 422)
        raw = scope.get("raw_path") or scope.get("path", "").encode()
        if b"\x00" in raw or b"%00" in raw.lower() or b"%00" in scope.get("query_string", b"") or \
                "\x00" in scope.get("path", ""):
            await refuse(scope, receive, send)
            return
        ctype = dict(scope.get("headers", [])).get(b"content-type", b"").lower()
        if not ctype.startswith((b"application/json", b"application/x-www-form-urlencoded")):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if b"\x00" in body or b"\\u0000" in body.lower() or b"%00" in body:
            await refuse(scope, receive, send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
