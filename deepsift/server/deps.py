"""FastAPI dependencies every domain uses: the database session, the caller, CSRF, rate limits.

    DbSession      one session per request, committed when the route returns (before the response
                   is sent), rolled back on error; write-locking on SQLite for unsafe methods
    CurrentUser    the authenticated user or None (bearer API token, else the session cookie)
    RequireUser    a 401 unless authenticated; RequireHost / RequireAdmin: a 403 unless a host / an admin
    csrf_protect   for form posts and cookie-authenticated API writes
    rate_limit(scope, setting)   a dependency counting requests per client (or per user)
"""
from __future__ import annotations

from typing import Annotated, Callable, Iterator

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..exceptions import AuthenticationError, ForbiddenError, RateLimitedError
from .db import Database, utcnow
from .models import ApiToken, User, WebSession
from .security import (CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, RateLimiter, client_address, csrf_ok,
                       hash_token, retry_after)
from .settings import Settings, parse_rate

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


def get_database(request: Request) -> Database:
    """The app's :class:`Database`."""
    return request.app.state.db


def get_db(request: Request) -> Iterator[Session]:
    """A session for this request: write-locking for unsafe methods on SQLite; commit on success."""
    db: Database = request.app.state.db
    session = db.new_session(write=request.method not in SAFE_METHODS)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_read_db(request: Request) -> Iterator[Session]:
    """A read-only session even for POST (for routes that write in short transactions of their own)."""
    session = request.app.state.db.new_session(write=False)
    try:
        yield session
    finally:
        session.rollback()
        session.close()


DbSession = Annotated[Session, Depends(get_db, scope="function")]
ReadDbSession = Annotated[Session, Depends(get_read_db, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def get_current_user(request: Request) -> User | None:
    """The caller: a valid, unrevoked bearer token's user, else a live session cookie's user, else None.

    A bearer token that is wrong, revoked or belongs to a disabled user is a 401 (never a silent
    fall back to anonymous), so a revoked token stops working at once. The lookup runs in its own
    short read transaction (it never holds the request's write lock); the returned ``User`` is
    detached, with its columns loaded: use ``session.get(User, user.id)`` to change it.
    """
    cached = getattr(request.state, "user", False)
    if cached is not False:
        return cached
    db: Database = request.app.state.db
    user = None
    token = _bearer(request)
    now = utcnow()
    if token is not None:
        with db.session() as s:
            row = s.execute(select(ApiToken, User).join(User, ApiToken.user_id == User.id)
                            .where(ApiToken.token_hash == hash_token(token))).first()
        if row is None or row[0].revoked_at is not None or row[1].disabled:
            raise AuthenticationError("invalid or revoked API token")
        if row[0].expires_at is not None and row[0].expires_at <= now:
            raise AuthenticationError("API token expired: log in again for a new one")
        tok, user = row
        if tok.last_used_at is None or (now - tok.last_used_at).total_seconds() > 60:
            with db.session(write=True) as w:
                w.execute(update(ApiToken).where(ApiToken.id == tok.id).values(last_used_at=now))
        request.state.auth = "token"
    elif sid := request.cookies.get(SESSION_COOKIE):
        with db.session() as s:
            row = s.execute(select(WebSession, User).join(User, WebSession.user_id == User.id)
                            .where(WebSession.id_hash == hash_token(sid))).first()
        if row is not None and row[0].expires_at > now and not row[1].disabled:
            user = row[1]
            request.state.auth = "cookie"
    request.state.user = user
    return user


CurrentUser = Annotated[User | None, Depends(get_current_user)]


def require_user(user: CurrentUser) -> User:
    """The authenticated user, or 401."""
    if user is None:
        raise AuthenticationError("authentication required: log in or send 'Authorization: Bearer <token>'")
    return user


RequireUser = Annotated[User, Depends(require_user)]


def require_host(user: RequireUser) -> User:
    """The authenticated host, or 403."""
    if not user.is_host:
        raise ForbiddenError("only hosts may do this")
    return user


RequireHost = Annotated[User, Depends(require_host)]


def require_admin(user: RequireUser) -> User:
    """The authenticated administrator, or 403."""
    if not user.is_admin:
        raise ForbiddenError("only administrators may do this")
    return user


RequireAdmin = Annotated[User, Depends(require_admin)]


async def csrf_protect(request: Request) -> None:
    """Refuse an unsafe request authenticated by cookie unless it carries the CSRF token.

    Form posts send it in the ``csrf_token`` field, scripts in the ``X-CSRF-Token`` header. Requests
    authenticated by a bearer token carry no ambient credentials and need none, nor do API calls
    without any session cookie; page forms always do (login CSRF).
    """
    if not csrf_needed(request):
        return
    submitted = request.headers.get(CSRF_HEADER)
    if submitted is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        submitted = value if isinstance(value, str) else None
    csrf_verify(request, submitted)


def csrf_needed(request: Request) -> bool:
    """Whether :func:`csrf_protect` checks this request (unsafe, and authenticated by a cookie or a page form)."""
    if request.method in SAFE_METHODS or _bearer(request) is not None:
        return False
    # an API call with no credentials at all: nothing to forge (it meets its 401 next)
    return not (request.url.path.startswith("/api/") and SESSION_COOKIE not in request.cookies)


def csrf_verify(request: Request, submitted: str | None) -> None:
    """ForbiddenError unless ``submitted`` is the token of this client's CSRF cookie."""
    if not csrf_ok(request.cookies.get(CSRF_COOKIE), submitted, request.app.state.settings.signing_key()):
        raise ForbiddenError("missing or invalid CSRF token: reload the page and try again")


CsrfProtect = Depends(csrf_protect)


def rate_limit(scope: str, setting: str, per_user: bool = False) -> Callable[..., None]:
    """A dependency allowing ``settings.<setting>`` (e.g. ``"10/minute"``) requests per client address
    (per user when ``per_user`` and the caller is authenticated); beyond it a 429 with Retry-After."""

    async def check(request: Request) -> None:
        # on the event loop, with no thread hop per request, unless a database or a file is read: the
        # caller's token or session (a lookup) and the shared file of counts run in the thread pool
        settings: Settings = request.app.state.settings
        if _bearer(request) is None and not request.cookies.get(SESSION_COOKIE):
            user = get_current_user(request)  # anonymous: None, without any lookup
        else:
            user = await run_in_threadpool(get_current_user, request)
        key = f"user:{user.id}" if per_user and user is not None else None
        if isinstance(request.app.state.rate_limiter, RateLimiter):  # in memory: microseconds under a lock
            charge(request, scope, getattr(settings, setting), key=key)
        else:
            await run_in_threadpool(charge, request, scope, getattr(settings, setting), key=key)

    check.__name__ = f"rate_limit_{scope}"
    return check


def charge(request: Request, scope: str, rate: str, cost: int = 1, *, key: str | None = None,
           what: str | None = None) -> None:
    """Count ``cost`` events of ``scope`` for the client's address (or ``key``) against ``rate``
    (``"10/minute"``); over it a 429 (RateLimitedError) with Retry-After, and nothing counted."""
    limit, window = parse_rate(rate)
    key = key or f"ip:{client_address(request, request.app.state.settings)}"
    wait = request.app.state.rate_limiter.hit(scope, key, limit, window, cost=cost)
    if wait:
        raise RateLimitedError(f"too many {what or scope + ' requests'}: at most {rate}; "
                               f"retry in {retry_after(wait)} s", retry_after=wait)
