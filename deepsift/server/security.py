"""Security helpers: password hashing, token hashing, CSRF tokens, rate limits, cookie flags.

* Passwords: argon2id (memory-hard; argon2-cffi's RFC 9106 low-memory profile, 64 MiB), rehashed
  on login when the parameters change.
* API tokens and session ids: 32 random bytes, URL-safe, with a readable prefix (``dsk_``); only
  their SHA-256 digest is stored, so a database leak reveals no usable token.
* CSRF: double-submit. A random ``deepsift_csrf`` cookie (HttpOnly, SameSite=Strict) and the form
  field / ``X-CSRF-Token`` header must carry an HMAC of it under the server's secret key.
* Rate limits: a sliding window per (scope, key): in this process (``RateLimiter``), or shared by
  every process of one ``deepsift serve --processes N`` through a small SQLite file in the data
  dir (``SharedRateLimiter``), so N processes do not allow N times the limit.
* Cookies: HttpOnly, SameSite, Secure when the request came over https (or always/never by setting).
"""
from __future__ import annotations

import collections
import functools
import hashlib
import hmac
import ipaddress
import math
import secrets
import threading
import time
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.profiles import RFC_9106_LOW_MEMORY

if TYPE_CHECKING:
    import os
    import sqlite3

    from starlette.requests import Request
    from starlette.responses import Response

    from .settings import Settings

TOKEN_PREFIX = "dsk_"
SESSION_COOKIE = "deepsift_session"
CSRF_COOKIE = "deepsift_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

_hasher = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY)


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash to verify against when the user does not exist (made on first use: one argon2 run,
    0.1-0.3 s, that no start-up should pay)."""
    return _hasher.hash("deepsift: not a password")


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (salted, encoded with its parameters)."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; a missing user still costs one hash (no timing oracle)."""
    dummy = _dummy_hash()  # made before either branch, so the first call costs the same for both
    try:
        return _hasher.verify(password_hash or dummy, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    """True when the stored hash uses older parameters than the current ones."""
    return _hasher.check_needs_rehash(password_hash)


def new_token() -> tuple[str, str]:
    """A fresh API token: ``(plain value shown once, SHA-256 digest to store)``."""
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return plain, hash_token(plain)


def hash_token(plain: str) -> str:
    """The stored form of a token or session id (hex SHA-256)."""
    return hashlib.sha256(plain.encode()).hexdigest()


def csrf_token_for(cookie_value: str, key: bytes) -> str:
    """The form/header token matching a CSRF cookie value."""
    return hmac.new(key, b"csrf:" + cookie_value.encode(), hashlib.sha256).hexdigest()


def csrf_ok(cookie_value: str | None, submitted: str | None, key: bytes) -> bool:
    """True when ``submitted`` is the token of ``cookie_value`` (constant-time)."""
    if not cookie_value or not submitted:
        return False
    return hmac.compare_digest(csrf_token_for(cookie_value, key), submitted)


def cookie_secure(request: "Request", settings: "Settings") -> bool:
    """Whether cookies get the Secure flag: by setting, or (``auto``) when the request is https."""
    if settings.cookie_secure != "auto":
        return settings.cookie_secure == "true"
    proto = request.headers.get("x-forwarded-proto") if from_trusted_proxy(request, settings) else None
    return (proto or request.url.scheme) == "https"


def set_cookie(response: "Response", request: "Request", settings: "Settings", name: str, value: str, *,
               max_age: int | None = None, samesite: str = "lax") -> None:
    """Set a cookie with the house flags: HttpOnly, SameSite, path /, Secure per :func:`cookie_secure`."""
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite=samesite,  # type: ignore[arg-type]
                        secure=cookie_secure(request, settings))


def from_trusted_proxy(request: "Request", settings: "Settings") -> bool:
    """Whether ``trusted_proxy`` is set and the connection comes from one of ``trusted_proxy_ips``."""
    if not settings.trusted_proxy or request.client is None:
        return False
    from .settings import proxy_networks

    nets = proxy_networks(settings.trusted_proxy_ips)
    if nets is None:
        return True
    try:
        peer = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    return any(peer in n for n in nets)


def client_address(request: "Request", settings: "Settings") -> str:
    """The client's address: the peer's, or behind a trusted proxy the address that proxy appended.

    Only a connection from one of ``trusted_proxy_ips`` has its ``X-Forwarded-For`` read: anyone
    else could write the header themselves. Each proxy appends the address it received the
    request from, so the right-most ``trusted_proxy_hops`` entries were written by the operator's
    proxies and everything to their left by the client (who may write anything there). The
    client's address is therefore the ``trusted_proxy_hops``-th entry from the right (the
    left-most one when there are fewer).
    """
    if from_trusted_proxy(request, settings):
        hops = [h.strip() for line in request.headers.getlist("x-forwarded-for") for h in line.split(",")]
        hops = [h for h in hops if h]
        if hops:
            return hops[-min(settings.trusted_proxy_hops, len(hops))]
    return request.client.host if request.client else "unknown"


SWEEP_EVERY_S = 60.0
"""How often the rate limiters forget expired counts (and the keys they belong to)."""


class RateLimiter:
    """Sliding-window limits per (scope, key), in memory, thread-safe (one server process)."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, str], collections.deque[float]] = {}  # expiry times, oldest first
        self._lock = threading.Lock()
        self._swept = time.monotonic()

    def hit(self, scope: str, key: str, limit: int, window_s: float, now: float | None = None, cost: int = 1) -> float:
        """Count ``cost`` events (at most the whole limit); 0 when allowed, else the seconds until they would be.

        A refused hit counts nothing.
        """
        t = time.monotonic() if now is None else now
        cost = max(1, min(cost, limit))
        with self._lock:
            q = self._hits.setdefault((scope, key), collections.deque())
            while q and q[0] <= t:
                q.popleft()
            if len(q) + cost > limit:
                return max(q[len(q) + cost - limit - 1] - t, 0.001)
            q.extend([t + window_s] * cost)
            if t - self._swept >= SWEEP_EVERY_S:  # forget idle keys
                self._swept = t
                for k in [k for k, v in self._hits.items() if not v or v[-1] <= t]:
                    del self._hits[k]
            return 0.0

    def blocked(self, scope: str, key: str, limit: int, window_s: float, now: float | None = None) -> float:
        """Like :meth:`hit` without counting: 0 when one more event would be allowed, else the wait."""
        t = time.monotonic() if now is None else now
        with self._lock:
            q = [x for x in self._hits.get((scope, key), ()) if x > t - window_s]
            return max(q[0] + window_s - t, 0.001) if len(q) >= limit else 0.0

    def reset(self) -> None:
        """Forget every count (tests)."""
        with self._lock:
            self._hits.clear()


RATE_LIMIT_FILE = "ratelimits.sqlite"
"""The shared rate-limit counts' file in the data dir (with ``rate_limit_store = "file"``)."""


class SharedRateLimiter:
    """:class:`RateLimiter`'s sliding window, kept in a SQLite file every server process of a machine shares.

    Each allowed event is a row (its scope, key and expiry); a hit drops its key's expired rows,
    counts the rest and adds its own, in one write transaction, so concurrent processes never allow
    more than the limit between them. The file holds nothing worth keeping (no fsync) and no
    visitor's address: keys are stored as an HMAC under ``secret`` (a secret of the data dir), the
    file is the owner's only (0600), and expired rows are deleted at least every
    :data:`SWEEP_EVERY_S` seconds while the server takes requests (and when it opens the file).
    If it cannot be used (a full disk, a read-only data dir), the limits fall back to this
    process's memory with one warning: availability first, and each process still limits.
    """

    def __init__(self, path: "os.PathLike[str] | str", secret: bytes = b"") -> None:
        self.path = str(path)
        self._secret = hmac.new(secret, b"deepsift rate-limit keys", hashlib.sha256).digest()
        self._lock = threading.Lock()
        self._conn: "sqlite3.Connection | None" = None
        self._fallback: RateLimiter | None = None
        self._swept = 0.0

    def _key(self, scope: str, key: str) -> str:
        return hmac.new(self._secret, f"{scope}\0{key}".encode(), hashlib.sha256).hexdigest()[:32]

    def _connect(self) -> "sqlite3.Connection":
        import os
        import sqlite3

        from .db import make_private_file

        make_private_file(self.path)  # owner-only, like the database, before SQLite opens it
        for suffix in ("-wal", "-shm"):  # SQLite gives its -wal/-shm files the database file's mode
            if os.path.exists(self.path + suffix):
                os.chmod(self.path + suffix, 0o600)
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("CREATE TABLE IF NOT EXISTS hits (scope TEXT NOT NULL, key TEXT NOT NULL, expires REAL NOT NULL)")
        conn.execute("CREATE INDEX IF NOT EXISTS hits_by_key ON hits (scope, key, expires)")
        # expired rows, and plain keys written by an older version
        conn.execute("DELETE FROM hits WHERE expires <= ? OR key LIKE '%:%'", (time.time(),))
        return conn

    def hit(self, scope: str, key: str, limit: int, window_s: float, now: float | None = None, cost: int = 1) -> float:
        """Count ``cost`` events (at most the whole limit); 0 when allowed, else the seconds until they would be."""
        import sqlite3

        t = time.time() if now is None else now
        cost = max(1, min(cost, limit))
        with self._lock:
            if self._fallback is not None:
                return self._fallback.hit(scope, key, limit, window_s, t, cost)
            try:
                if self._conn is None:
                    self._conn = self._connect()
                return self._hit(self._conn, scope, self._key(scope, key), limit, window_s, t, cost)
            except (sqlite3.Error, OSError) as exc:
                import logging

                logging.getLogger("deepsift.server").warning(
                    "rate limits: cannot use %s (%s); limiting per process from now on", self.path, exc)
                self._fallback = RateLimiter()
                return self._fallback.hit(scope, key, limit, window_s, t, cost)

    def blocked(self, scope: str, key: str, limit: int, window_s: float, now: float | None = None) -> float:
        """Like :meth:`hit` without counting: 0 when one more event would be allowed, else the wait."""
        import sqlite3

        t = time.time() if now is None else now
        with self._lock:
            if self._fallback is not None:
                return self._fallback.blocked(scope, key, limit, window_s, t)
            try:
                if self._conn is None:
                    self._conn = self._connect()
                count, first = self._conn.execute(
                    "SELECT COUNT(*), MIN(expires) FROM hits WHERE scope = ? AND key = ? AND expires > ?",
                    (scope, self._key(scope, key), t)).fetchone()
            except (sqlite3.Error, OSError):
                return 0.0  # the next hit() reports the problem and falls back
            return max(first - t, 0.001) if count >= limit else 0.0

    def _hit(self, conn: "sqlite3.Connection", scope: str, key: str, limit: int, window_s: float, t: float,
             cost: int) -> float:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if t - self._swept >= SWEEP_EVERY_S:  # every key's expired rows
                conn.execute("DELETE FROM hits WHERE expires <= ?", (t,))
                self._swept = t
            else:
                conn.execute("DELETE FROM hits WHERE scope = ? AND key = ? AND expires <= ?", (scope, key, t))
            rows = [e for (e,) in conn.execute("SELECT expires FROM hits WHERE scope = ? AND key = ? "
                                               "ORDER BY expires", (scope, key))]
            if len(rows) + cost > limit:
                conn.execute("COMMIT")
                return max(rows[len(rows) + cost - limit - 1] - t, 0.001)
            conn.executemany("INSERT INTO hits VALUES (?, ?, ?)", [(scope, key, t + window_s)] * cost)
            conn.execute("COMMIT")
            return 0.0
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def reset(self) -> None:
        """Forget every count (tests)."""
        with self._lock:
            if self._fallback is not None:
                self._fallback.reset()
            if self._conn is not None:
                self._conn.execute("DELETE FROM hits")


def retry_after(seconds: float) -> str:
    """A Retry-After header value (whole seconds, at least 1)."""
    return str(max(1, math.ceil(seconds)))


def error_headers(exc: BaseException) -> dict[str, str]:
    """The headers an error response carries: ``Retry-After`` for a rate-limited one, none otherwise."""
    wait = getattr(exc, "retry_after", None)
    return {"Retry-After": retry_after(wait)} if wait is not None else {}
