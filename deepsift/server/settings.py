"""Server settings: one typed class read from ``DEEPSIFT_*`` environment variables.

    DEEPSIFT_DATABASE_URL      SQLAlchemy URL; default ``sqlite:///<data dir>/deepsift.db`` (WAL)
    DEEPSIFT_DATA_DIR          folder for the database, uploads and hidden files (never served)
    DEEPSIFT_SECRET_KEY        signs CSRF tokens; default: generated once into <data dir>/secret_key
    DEEPSIFT_DOMAINS           comma-separated domain packages to mount (default: every installed one)
    DEEPSIFT_COOKIE_SECURE     ``auto`` (Secure when the request came over https), ``true`` or ``false``
    DEEPSIFT_MAX_UPLOAD_MB, DEEPSIFT_LOGIN_RATE, DEEPSIFT_SUBMIT_RATE, ... (see the fields below)

A domain package keeps its own settings in its own class (``env_prefix="DEEPSIFT_<DOMAIN>_"``)
and reads them with :meth:`Settings.section`; tests override any of them with
``Settings(domains={"demo": {"field": value}})``.
"""
from __future__ import annotations

import functools
import os
import re
import secrets
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)
RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*$")
_UNIT_S = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
           "d": 86400, "day": 86400}


def parse_rate(text: str) -> tuple[int, float]:
    """``"10/minute"`` or ``"5/30s"`` -> (count, window in seconds); ValueError otherwise."""
    m = RATE.match(text or "")
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"a rate is COUNT/PERIOD such as '10/minute' or '5/30s', got {text!r}")
    return int(m.group(1)), float(int(m.group(2) or 1) * _UNIT_S[m.group(3)])


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/deepsift`` (``~/.local/share/deepsift``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "deepsift"


class Settings(BaseSettings):
    """Everything the server reads from its environment, with safe defaults for ``deepsift serve``."""

    model_config = SettingsConfigDict(env_prefix="DEEPSIFT_", extra="ignore", validate_default=True)

    data_dir: Path = Field(default_factory=default_data_dir, description="database, uploads, hidden files")
    database_url: str = Field("", description="SQLAlchemy URL; empty: SQLite in the data dir")
    secret_key: str = Field("", description="CSRF signing key; empty: generated into data_dir/secret_key")
    site_name: str = Field("deepsift", description="the name shown in page titles and headers")
    domains: Any = Field(None, description="domain packages to mount: comma-separated names, or None for all")
    domain_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                        description="per-domain settings overrides (tests)")
    cookie_secure: Literal["auto", "true", "false"] = Field(
        "auto", description="Secure cookies: auto (when the request came over https), true or false")
    session_days: float = Field(14.0, gt=0, description="lifetime of a login session")
    token_days: float = Field(90.0, ge=0, description="default lifetime of a new API token (0: never expires)")
    max_upload_mb: float = Field(256.0, gt=0, description="largest accepted upload")
    max_uploads_per_client: int = Field(4, ge=1, description="request bodies over 1 MiB one client address may "
                                                             "send at once (per server process); one more gets a 429 "
                                                             "before its body is read")
    max_archive_files: int = Field(100_000, ge=1, description="most members in an uploaded archive")
    login_rate: str = Field("10/minute", description="login/registration attempts per client address")
    login_account_rate: str = Field("10/15min", description="failed logins per account (from any address); beyond "
                                                            "it the account's logins wait, right password or not")
    submit_rate: str = Field("30/minute", description="submissions per user")
    api_rate: str = Field("3000/minute", description="other API requests and page views per client address")
    rate_limit_store: Literal["memory", "file"] = Field(
        "memory", description="where rate-limit counts live: this process's memory, or a file in data_dir that "
                              "every process of the machine shares (serve --processes N sets it)")
    header_timeout_s: float = Field(10.0, gt=0, description="seconds a client has to send a request's headers "
                                                          "(from its first byte): a slower one gets a 408 and is "
                                                          "disconnected (deepsift serve)")
    body_idle_timeout_s: float = Field(60.0, gt=0, description="seconds a request's body may send nothing before "
                                                               "the client is disconnected; a body of declared "
                                                               "length must also arrive within this plus one second "
                                                               "per KiB (deepsift serve)")
    db_pool_size: int = Field(10, ge=1, le=500, description="database connections per server process (PostgreSQL)")
    sqlite_busy_timeout_ms: int = Field(30_000, ge=0, description="how long SQLite waits for a lock before failing")
    migrate_on_start: bool = Field(True, description="create_app upgrades the database at start-up")
    trusted_proxy: bool = Field(False, description="behind a reverse proxy: take the client address from "
                                                   "X-Forwarded-For (the entry the proxy appended)")
    trusted_proxy_hops: int = Field(1, ge=1, le=16, description="how many trusted proxies append to X-Forwarded-For "
                                                                 "(the client is this many entries from the right)")
    trusted_proxy_ips: str = Field("127.0.0.1,::1", description="the trusted proxy's addresses or networks "
                                   "(comma-separated, CIDR allowed, '*' for any): X-Forwarded-For and "
                                   "X-Forwarded-Proto are read only on connections from these, every other "
                                   "client is known by its own address")

    @field_validator("trusted_proxy_ips")
    @classmethod
    def _proxy_ips(cls, v: str) -> str:
        proxy_networks(v)
        return v

    @field_validator("login_rate", "login_account_rate", "submit_rate", "api_rate")
    @classmethod
    def _rate(cls, v: str) -> str:
        parse_rate(v)
        return v

    @field_validator("domains", mode="before")
    @classmethod
    def _domains(cls, v: Any) -> tuple[str, ...] | None:
        if v is None or v == "":
            return None
        items = v.split(",") if isinstance(v, str) else list(v)
        return tuple(x.strip() for x in items if str(x).strip())

    @property
    def db_url(self) -> str:
        """The database URL in use (the SQLite default lives in the data dir)."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'deepsift.db').resolve()}"

    @property
    def storage_dir(self) -> Path:
        """Root of uploaded and hidden files (outside any web root)."""
        return self.data_dir / "storage"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))

    def signing_key(self) -> bytes:
        """The secret key, created (0600) in the data dir on first use when not set."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret_key"
        if not path.is_file():
            from .db import make_private_dir

            make_private_dir(self.data_dir)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
            try:
                os.link(tmp, path)  # first writer wins; a concurrent start reads the winner's key
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip().encode()

    def section(self, cls: type[S], name: str) -> S:
        """Domain ``name``'s settings: its own env prefix, overridden by ``domain_overrides[name]``."""
        return cls(**self.domain_overrides.get(name, {}))


def proxy_networks(spec: str) -> tuple | None:
    """The networks of a ``trusted_proxy_ips`` value (None: ``*``, any address); ValueError for a bad entry."""
    return _proxy_networks(spec)


@functools.lru_cache(maxsize=8)
def _proxy_networks(spec: str) -> tuple | None:
    import ipaddress

    entries = [e.strip() for e in spec.split(",") if e.strip()]
    if "*" in entries:
        return None
    nets = []
    for e in entries:
        try:
            nets.append(ipaddress.ip_network(e, strict=False))
        except ValueError:
            raise ValueError(f"trusted proxy address {e!r} is not an IP address or network (CIDR)") from None
    return tuple(nets)
