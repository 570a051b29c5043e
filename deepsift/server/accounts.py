"""Account rules, free of FastAPI: create users, check passwords, issue and revoke tokens and sessions."""
from __future__ import annotations

import datetime as dt
import re
import secrets

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..exceptions import AuthenticationError, ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from .db import utcnow
from .models import ROLES, ApiToken, User, WebSession
from .security import hash_password, hash_token, new_token, password_needs_rehash, verify_password

USERNAME = re.compile(r"^[a-z0-9][a-z0-9_-]{2,39}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{1,63}$")
MIN_PASSWORD, MAX_PASSWORD = 8, 256


def check_username(name: str) -> str:
    """The normalised (lower-case) username, or InvalidInputError."""
    norm = (name or "").strip().lower()
    if not USERNAME.match(norm):
        raise InvalidInputError("a username is 3-40 characters: letters, digits, '-' and '_', starting with a "
                                "letter or digit")
    return norm


def check_password(password: str) -> str:
    """``password`` if long enough (and not absurdly long), else InvalidInputError."""
    if not MIN_PASSWORD <= len(password or "") <= MAX_PASSWORD:
        raise InvalidInputError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def create_user(session: Session, *, username: str, password: str, email: str | None = None,
                role: str = "participant") -> User:
    """A new user; ConflictError when the username or e-mail is taken."""
    name = check_username(username)
    check_password(password)
    if email is not None:
        email = email.strip().lower() or None
        if email is not None and not EMAIL.match(email):
            raise InvalidInputError("not an e-mail address")
    if role not in ROLES:
        raise InvalidInputError(f"role must be one of {', '.join(ROLES)}")
    clash = [User.username == name] + ([User.email == email] if email else [])
    taken = session.scalar(select(func.count()).select_from(User).where(or_(*clash)))
    if taken:
        raise ConflictError("that username or e-mail address is already registered")
    user = User(username=name, email=email, password_hash=hash_password(password), role=role, disabled=False,
                created_at=utcnow())
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        raise ConflictError("that username or e-mail address is already registered") from None
    return user


def authenticate(session: Session, username: str, password: str) -> User:
    """The user with this name and password; AuthenticationError otherwise (same message either way)."""
    user = session.scalar(select(User).where(User.username == (username or "").strip().lower()))
    if not verify_password(user.password_hash if user else None, password or "") or user is None or user.disabled:
        raise AuthenticationError("wrong username or password")
    if password_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def set_role(session: Session, username: str, role: str) -> User:
    """Change a user's role (``participant`` or ``host``)."""
    if role not in ROLES:
        raise InvalidInputError(f"role must be one of {', '.join(ROLES)}")
    user = session.scalar(select(User).where(User.username == check_username(username)))
    if user is None:
        raise NotFoundError(f"no user {username!r}")
    user.role = role
    return user


def issue_token(session: Session, user: User, name: str = "cli", days: float | None = None) -> tuple[ApiToken, str]:
    """A new API token for ``user``: the row and the plain value (shown once, never stored).

    ``days``: its lifetime (None or 0: it never expires)."""
    name = (name or "token").strip()[:80] or "token"
    plain, digest = new_token()
    now = utcnow()
    row = ApiToken(user_id=user.id, name=name, token_hash=digest, prefix=plain[:12], created_at=now,
                   expires_at=now + dt.timedelta(days=days) if days else None)
    session.add(row)
    session.flush()
    return row, plain


def revoke_token(session: Session, user: User, token_id: str) -> ApiToken:
    """Revoke one of ``user``'s tokens (at once: the next request with it is refused)."""
    row = session.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise NotFoundError("no such token")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    """``user``'s tokens, newest first (revoked ones included, marked)."""
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)
                                .order_by(ApiToken.created_at.desc())))


def start_session(session: Session, user: User, days: float) -> str:
    """A new browser session for ``user``; returns the cookie value (stored only hashed)."""
    sid = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(WebSession(id_hash=hash_token(sid), user_id=user.id, created_at=now,
                           expires_at=now + dt.timedelta(days=days)))
    session.execute(delete(WebSession).where(WebSession.user_id == user.id, WebSession.expires_at < now))
    return sid


def end_session(session: Session, sid: str | None) -> None:
    """Forget a browser session (logout)."""
    if sid:
        session.execute(delete(WebSession).where(WebSession.id_hash == hash_token(sid)))


# -- password changes, resets, log out everywhere, disabling -----------------------------------------
def end_everything(session: Session, user: User) -> tuple[int, int]:
    """Revoke every API token of ``user`` and end every browser session; returns (tokens, sessions) ended."""
    now = utcnow()
    tokens = session.execute(update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                             .values(revoked_at=now)).rowcount
    sessions = session.execute(delete(WebSession).where(WebSession.user_id == user.id)).rowcount
    return int(tokens or 0), int(sessions or 0)


def change_password(session: Session, user: User, current: str, new: str) -> tuple[int, int]:
    """Set ``user``'s password after checking the current one; every token and session ends."""
    row = session.get(User, user.id)
    if row is None or not verify_password(row.password_hash, current or ""):
        raise ForbiddenError("the current password is wrong")
    if (new or "") == (current or ""):
        raise InvalidInputError("the new password is the current one")
    row.password_hash = hash_password(check_password(new))
    return end_everything(session, row)


def get_user(session: Session, username: str) -> User:
    """The user named ``username``, else NotFoundError."""
    user = session.scalar(select(User).where(User.username == (username or "").strip().lower()))
    if user is None:
        raise NotFoundError(f"no user {username!r}")
    return user


def reset_password(session: Session, username: str, password: str | None = None) -> tuple[User, str]:
    """An administrator's reset: a new password (random when not given), every token and session ended."""
    user = get_user(session, username)
    password = check_password(password) if password else secrets.token_urlsafe(12)
    user.password_hash = hash_password(password)
    end_everything(session, user)
    return user, password


def set_disabled(session: Session, username: str, disabled: bool) -> User:
    """Disable (or enable again) an account; disabling ends its tokens and sessions at once."""
    user = get_user(session, username)
    user.disabled = disabled
    if disabled:
        end_everything(session, user)
    return user


def list_users(session: Session) -> list[User]:
    """Every account, by name."""
    return list(session.scalars(select(User).order_by(User.username)))
