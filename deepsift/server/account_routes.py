"""Account routes: the JSON API (``/api/auth/...``) and the pages (register, login, logout, tokens)."""
from __future__ import annotations

import datetime as dt
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from ..exceptions import AuthenticationError, RateLimitedError, ServiceError
from .accounts import (authenticate, change_password, create_user, end_everything, end_session, issue_token, list_tokens,
                       revoke_token, start_session)
from .deps import CsrfProtect, DbSession, RequireUser, SettingsDep, rate_limit
from .security import SESSION_COOKIE, error_headers, retry_after, set_cookie
from .settings import parse_rate
from .web import render

ERRORS = {401: {"description": "not authenticated"}, 403: {"description": "not allowed"},
          422: {"description": "invalid input"}, 429: {"description": "rate limited"}}

api = APIRouter(prefix="/api/auth", tags=["accounts"], responses=ERRORS,
                dependencies=[Depends(rate_limit("api", "api_rate"))])
pages = APIRouter(include_in_schema=False, dependencies=[Depends(rate_limit("api", "api_rate"))])


def login(request: Request, session, username: str, password: str):  # type: ignore[no-untyped-def]
    """:func:`authenticate`, throttled per account as well as per address: after ``login_account_rate``
    failures the account's logins wait (right password or not), from whatever address they come."""
    settings = request.app.state.settings
    limiter = request.app.state.rate_limiter
    limit, window = parse_rate(settings.login_account_rate)
    key = "account:" + (username or "").strip().lower()[:100]
    wait = limiter.blocked("login-account", key, limit, window)
    if wait:
        raise RateLimitedError(f"too many failed logins for {(username or '').strip().lower()[:40]!r}: at most "
                               f"{settings.login_account_rate}; retry in {retry_after(wait)} s", retry_after=wait)
    try:
        return authenticate(session, username, password)
    except AuthenticationError:
        limiter.hit("login-account", key, limit, window)
        raise


class RegisterIn(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)
    email: str | None = Field(None, max_length=254)


class UserOut(BaseModel):
    username: str
    role: str
    created_at: dt.datetime


class TokenRequest(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)
    name: str = Field("cli", max_length=80)
    expires_days: float | None = Field(None, gt=0, le=3650, description="lifetime (default: the server's "
                                                                         "DEEPSIFT_TOKEN_DAYS)")


class TokenName(BaseModel):
    name: str = Field("token", max_length=80)
    expires_days: float | None = Field(None, gt=0, le=3650, description="lifetime (default: the server's "
                                                                         "DEEPSIFT_TOKEN_DAYS)")


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1000)
    new_password: str = Field(min_length=1, max_length=1000)


class Ended(BaseModel):
    revoked_tokens: int = Field(description="API tokens revoked")
    ended_sessions: int = Field(description="browser sessions ended")


class TokenOut(BaseModel):
    id: str
    name: str
    prefix: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    expires_at: dt.datetime | None = Field(None, description="when it stops working (None: never)")


class NewToken(TokenOut):
    token: str = Field(description="the token itself: shown this once, stored only as a hash")


def _user_out(u) -> UserOut:  # type: ignore[no-untyped-def]
    return UserOut(username=u.username, role=u.role, created_at=u.created_at)


def _token_out(t, cls=TokenOut, **extra) -> TokenOut:  # type: ignore[no-untyped-def]
    return cls(id=t.id, name=t.name, prefix=t.prefix, created_at=t.created_at, last_used_at=t.last_used_at,
               revoked_at=t.revoked_at, expires_at=t.expires_at, **extra)


@api.post("/register", response_model=UserOut, status_code=201,
          dependencies=[Depends(rate_limit("login", "login_rate"))], responses={409: {"description": "name taken"}})
def register(body: RegisterIn, session: DbSession) -> UserOut:
    """Create a participant account."""
    return _user_out(create_user(session, username=body.username, password=body.password, email=body.email))


@api.post("/token", response_model=NewToken, status_code=201, dependencies=[Depends(rate_limit("login", "login_rate"))])
def login_token(request: Request, body: TokenRequest, session: DbSession, settings: SettingsDep) -> TokenOut:
    """Exchange a username and password for a new API token (for the CLI client)."""
    user = login(request, session, body.username, body.password)
    row, plain = issue_token(session, user, body.name, body.expires_days or settings.token_days)
    return _token_out(row, NewToken, token=plain)


@api.get("/me", response_model=UserOut)
def me(user: RequireUser) -> UserOut:
    """The caller's account."""
    return _user_out(user)


@api.get("/tokens", response_model=list[TokenOut])
def tokens(user: RequireUser, session: DbSession) -> list[TokenOut]:
    """The caller's API tokens (values are never shown again)."""
    return [_token_out(t) for t in list_tokens(session, user)]


@api.post("/tokens", response_model=NewToken, status_code=201, dependencies=[CsrfProtect])
def create_token(body: TokenName, user: RequireUser, session: DbSession, settings: SettingsDep) -> TokenOut:
    """A new API token for the caller."""
    row, plain = issue_token(session, user, body.name, body.expires_days or settings.token_days)
    return _token_out(row, NewToken, token=plain)


@api.delete("/tokens/{token_id}", response_model=TokenOut, dependencies=[CsrfProtect],
            responses={404: {"description": "no such token"}})
def revoke(token_id: str, user: RequireUser, session: DbSession) -> TokenOut:
    """Revoke one of the caller's tokens; it stops working at once."""
    return _token_out(revoke_token(session, user, token_id))


@api.post("/password", response_model=Ended, dependencies=[CsrfProtect, Depends(rate_limit("login", "login_rate"))])
def password(body: PasswordChange, user: RequireUser, session: DbSession) -> Ended:
    """Change the caller's password (the current one required); every token and session of theirs ends."""
    tokens, sessions = change_password(session, user, body.current_password, body.new_password)
    return Ended(revoked_tokens=tokens, ended_sessions=sessions)


@api.post("/logout-all", response_model=Ended, dependencies=[CsrfProtect])
def logout_all(user: RequireUser, session: DbSession) -> Ended:
    """Log out everywhere: revoke every API token of the caller (this one too) and end every browser session."""
    tokens, sessions = end_everything(session, user)
    return Ended(revoked_tokens=tokens, ended_sessions=sessions)


# -- pages ---------------------------------------------------------------------------------------
def _safe_next(target: str | None) -> str:
    """A local path to go to after login (never another site)."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login_response(request: Request, settings, session, user, next_url: str) -> Response:  # type: ignore[no-untyped-def]
    sid = start_session(session, user, settings.session_days)
    resp = RedirectResponse(_safe_next(next_url), status_code=303)
    set_cookie(resp, request, settings, SESSION_COOKIE, sid, max_age=int(settings.session_days * 86400))
    return resp


@pages.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", {"next": _safe_next(next)})


@pages.post("/login", dependencies=[CsrfProtect, Depends(rate_limit("login", "login_rate"))])
def login_form(request: Request, session: DbSession, settings: SettingsDep,
               username: Annotated[str, Form(max_length=100)], password: Annotated[str, Form(max_length=1000)],
               next: Annotated[str, Form(max_length=500)] = "/") -> Response:
    try:
        user = login(request, session, username, password)
    except ServiceError as exc:
        return render(request, "login.html", {"next": _safe_next(next), "error": str(exc), "username": username},
                      exc.status_code, error_headers(exc))
    return _login_response(request, settings, session, user, next)


@pages.get("/register")
def register_page(request: Request, next: str = "/") -> Response:
    return render(request, "register.html", {"next": _safe_next(next)})


@pages.post("/register", dependencies=[CsrfProtect, Depends(rate_limit("login", "login_rate"))])
def register_form(request: Request, session: DbSession, settings: SettingsDep,
                  username: Annotated[str, Form(max_length=100)], password: Annotated[str, Form(max_length=1000)],
                  email: Annotated[str, Form(max_length=254)] = "",
                  next: Annotated[str, Form(max_length=500)] = "/") -> Response:
    try:
        user = create_user(session, username=username, password=password, email=email or None)
    except ServiceError as exc:
        return render(request, "register.html", {"next": _safe_next(next), "error": str(exc), "username": username,
                                                 "email": email}, exc.status_code)
    return _login_response(request, settings, session, user, next)


@pages.post("/logout", dependencies=[CsrfProtect])
def logout(request: Request, session: DbSession) -> Response:
    end_session(session, request.cookies.get(SESSION_COOKIE))
    resp = RedirectResponse("/", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@pages.get("/account")
def account_page(request: Request, user: RequireUser, session: DbSession, password: str = "") -> Response:
    notice = "Password changed: every API token and every other session was ended." if password == "changed" else None
    return _account(request, session, user, notice=notice)


def _account(request: Request, session, user, status: int = 200, **extra) -> Response:  # type: ignore[no-untyped-def]
    from .db import utcnow

    return render(request, "account.html", {"tokens": list_tokens(session, user), "now": utcnow(), **extra}, status)


@pages.post("/account/tokens", dependencies=[CsrfProtect])
def account_new_token(request: Request, user: RequireUser, session: DbSession, settings: SettingsDep,
                      name: Annotated[str, Form(max_length=80)] = "token") -> Response:
    row, plain = issue_token(session, user, name, settings.token_days)
    return _account(request, session, user, 201, new_token=plain, new_token_name=row.name)


@pages.post("/account/tokens/{token_id}/revoke", dependencies=[CsrfProtect])
def account_revoke(request: Request, token_id: str, user: RequireUser, session: DbSession) -> Response:
    revoke_token(session, user, token_id)
    return RedirectResponse("/account", status_code=303)


@pages.post("/account/password", dependencies=[CsrfProtect, Depends(rate_limit("login", "login_rate"))])
def account_password(request: Request, user: RequireUser, session: DbSession, settings: SettingsDep,
                     current_password: Annotated[str, Form(max_length=1000)] = "",
                     new_password: Annotated[str, Form(max_length=1000)] = "") -> Response:
    """Change the password: every token and session ends; this browser gets a fresh session."""
    try:
        change_password(session, user, current_password, new_password)
    except ServiceError as exc:
        return _account(request, session, user, exc.status_code, error=str(exc))
    return _login_response(request, settings, session, user, "/account?password=changed")


@pages.post("/account/logout-all", dependencies=[CsrfProtect])
def account_logout_all(request: Request, user: RequireUser, session: DbSession) -> Response:
    """Log out everywhere (this browser too) and revoke every API token."""
    end_everything(session, user)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp
