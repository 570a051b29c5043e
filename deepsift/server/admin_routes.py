"""Administrators' account routes (``/api/admin/...``): list users, reset a password, disable or enable a user.

The same actions exist on the server machine as ``deepsift admin reset-password|disable|enable``.
"""
from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from ..exceptions import ConflictError
from .accounts import list_users, reset_password, set_disabled
from .deps import CsrfProtect, DbSession, RequireAdmin, rate_limit

ERRORS = {401: {"description": "not authenticated"}, 403: {"description": "not an administrator"},
          404: {"description": "no such user"}, 422: {"description": "invalid input"},
          429: {"description": "rate limited"}}
api = APIRouter(prefix="/api/admin", tags=["admin"], responses=ERRORS,
                dependencies=[Depends(rate_limit("api", "api_rate"))])


class AdminUserOut(BaseModel):
    username: str
    email: str | None
    role: str
    disabled: bool
    created_at: dt.datetime


class PasswordReset(BaseModel):
    password: str | None = Field(None, max_length=1000, description="the new password (default: a random one, "
                                                                     "returned once)")


class PasswordResetOut(BaseModel):
    username: str
    password: str = Field(description="the new password: give it to the user, who should change it")


def _out(u) -> AdminUserOut:  # type: ignore[no-untyped-def]
    return AdminUserOut(username=u.username, email=u.email, role=u.role, disabled=u.disabled, created_at=u.created_at)


@api.get("/users", response_model=list[AdminUserOut])
def users(admin: RequireAdmin, session: DbSession) -> list[AdminUserOut]:
    """Every account (administrators)."""
    return [_out(u) for u in list_users(session)]


@api.post("/users/{username}/password", response_model=PasswordResetOut, dependencies=[CsrfProtect])
def reset(username: str, admin: RequireAdmin, session: DbSession, body: PasswordReset | None = None) -> PasswordResetOut:
    """Reset a user's password (administrators); every token and session of that user ends."""
    user, password = reset_password(session, username, body.password if body else None)
    return PasswordResetOut(username=user.username, password=password)


@api.post("/users/{username}/disable", response_model=AdminUserOut, dependencies=[CsrfProtect])
def disable(username: str, admin: RequireAdmin, session: DbSession) -> AdminUserOut:
    """Disable an account (administrators): its tokens and sessions stop working at once, logins are refused."""
    if username.strip().lower() == admin.username:
        raise ConflictError("an administrator cannot disable their own account")
    return _out(set_disabled(session, username, True))


@api.post("/users/{username}/enable", response_model=AdminUserOut, dependencies=[CsrfProtect])
def enable(username: str, admin: RequireAdmin, session: DbSession) -> AdminUserOut:
    """Enable a disabled account again (administrators); its old tokens stay revoked."""
    return _out(set_disabled(session, username, False))
