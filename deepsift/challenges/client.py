"""A client of the platform's public JSON API (what ``deepsift challenges submit/status/...`` use).

The token comes from ``DEEPSIFT_TOKEN`` or the config file (``$XDG_CONFIG_HOME/deepsift/client.json``,
written 0600 by ``deepsift challenges login``): ``{"default_server": URL, "servers": {URL: {"token":
...}}}``. Connection failures and 502/503/504 answers are retried with backoff (a server restarting
is waited out); any other error answer becomes a :class:`ClientError` carrying the server's message.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from ..exceptions import DeepsiftError, UsageError, input_not_found

RETRY_STATUS = (502, 503, 504)


class ClientError(DeepsiftError):
    """The server refused a request (the message is its explanation) or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NoServerError(UsageError):
    """No server URL given, none in ``DEEPSIFT_SERVER`` and no default server in the client config."""


def config_path() -> Path:
    """The client's config file."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(os.environ.get("DEEPSIFT_CLIENT_CONFIG") or Path(base) / "deepsift" / "client.json")


def load_config(path: Path | None = None) -> dict[str, Any]:
    p = path or config_path()
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{p}: unreadable client config ({exc})") from None
    return data if isinstance(data, dict) else {}


def save_token(server: str, token: str, path: Path | None = None) -> Path:
    """Remember ``token`` for ``server`` (and make it the default server) in the config file (0600)."""
    p = path or config_path()
    cfg = load_config(p)
    cfg.setdefault("servers", {})[server.rstrip("/")] = {"token": token}
    cfg["default_server"] = server.rstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(cfg, fh, indent=2)
    os.replace(tmp, p)
    return p


def resolve(server: str | None, token: str | None = None) -> tuple[str, str | None]:
    """The server URL and token to use: arguments, then the environment, then the config file."""
    cfg = load_config()
    url = (server or os.environ.get("DEEPSIFT_SERVER") or cfg.get("default_server") or "").rstrip("/")
    if not url:
        raise NoServerError("no server URL: give one, set DEEPSIFT_SERVER, or log in once with "
                            "`deepsift challenges login --server URL --username NAME`")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"the server must be an http(s) URL, got {url!r}")
    tok = token or os.environ.get("DEEPSIFT_TOKEN") or cfg.get("servers", {}).get(url, {}).get("token")
    return url, tok


class Client:
    """Talks to one server with one token (or none: public endpoints only)."""

    def __init__(self, server: str, token: str | None = None, *, timeout: float = 120.0, retries: int = 8,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server, self.retries = server.rstrip("/"), retries
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request, retried on connection errors and 502/503/504; ClientError on other failures."""
        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                if "files" in kw:  # re-open files: a retried upload starts from the beginning
                    for f in kw["files"].values():
                        f[1].seek(0)
                r = self.http.request(method, path, **kw)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError,
                    httpx.ConnectTimeout) as exc:
                if attempt == self.retries:
                    raise ClientError(f"cannot reach {self.server}: {exc}") from None
            else:
                if r.status_code not in RETRY_STATUS or attempt == self.retries:
                    if r.status_code >= 400:
                        raise ClientError(_detail(r), r.status_code)
                    return r
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, **kw: Any) -> Any:
        return self.request(method, path, **kw).json()

    # -- the API ---------------------------------------------------------------------------------
    def login(self, username: str, password: str, name: str = "cli") -> str:
        return self.json("POST", "/api/auth/token", json={"username": username, "password": password, "name": name})["token"]

    def challenge(self, slug: str) -> dict:
        return self.json("GET", f"/api/challenges/{slug}")

    def submit(self, challenge: str, phase: str, path: str | os.PathLike, *, kind: str = "predictions",
               preprocessing: str | None = None, note: str = "", **entry: Any) -> dict:
        p = Path(path)
        if not p.exists():
            raise input_not_found(p)
        if not p.is_file():
            raise UsageError(f"{p}: is a folder, not a file")
        data = {"kind": kind, "note": note}
        data.update({k: ("true" if v else "false") if isinstance(v, bool) else v for k, v in entry.items()
                     if v is not None})  # method_name, method_description, method_url, public
        if preprocessing:
            data["preprocessing"] = preprocessing
        key = secrets.token_urlsafe(24)  # one key for every retry of this submit: never a duplicate
        with open(p, "rb") as fh:
            return self.json("POST", f"/api/challenges/{challenge}/phases/{phase}/submissions",
                             files={"file": (p.name, fh)}, data=data, headers={"Idempotency-Key": key})

    def submission(self, sid: str) -> dict:
        return self.json("GET", f"/api/submissions/{sid}")

    def create_team(self, challenge: str, name: str) -> dict:
        """Create a team in ``challenge`` and join it (as its captain)."""
        return self.json("POST", f"/api/challenges/{challenge}/teams", json={"name": name})

    def join_team(self, challenge: str, invite_code: str) -> dict:
        """Join the team whose invite code is ``invite_code``."""
        return self.json("POST", f"/api/challenges/{challenge}/teams/join", json={"invite_code": invite_code})

    def team(self, challenge: str) -> dict:
        """Your team in ``challenge`` (name, members, captain, invite code)."""
        return self.json("GET", f"/api/challenges/{challenge}/team")

    def leave_team(self, challenge: str) -> dict | None:
        """Leave your team; None when you were its last member (the team is gone)."""
        return self.json("POST", f"/api/challenges/{challenge}/team/leave")

    def describe(self, sid: str, **fields: Any) -> dict:
        """Set a submission's method_name / method_description / method_url / public."""
        return self.json("PATCH", f"/api/submissions/{sid}", json={k: v for k, v in fields.items() if v is not None})

    def submissions(self, challenge: str, phase: str) -> list[dict]:
        return self.json("GET", f"/api/challenges/{challenge}/phases/{phase}/submissions")

    def wait(self, sid: str, timeout: float = 3600.0, poll: float = 1.0) -> dict:
        """Poll a submission until it is scored or failed (or ``timeout`` seconds pass)."""
        deadline = time.monotonic() + timeout
        while True:
            sub = self.submission(sid)
            if sub["state"] in ("scored", "failed"):
                return sub
            if time.monotonic() > deadline:
                raise ClientError(f"submission {sid} still {sub['state']} after {timeout:g} s")
            time.sleep(poll)

    def leaderboard(self, challenge: str, phase: str, part: str = "public", sort: str | None = None,
                    order: str | None = None, fmt: str = "json") -> Any:
        params = {k: v for k, v in (("part", part), ("sort", sort), ("order", order), ("format", fmt)) if v}
        r = self.request("GET", f"/api/challenges/{challenge}/phases/{phase}/leaderboard", params=params)
        return r.text if fmt == "csv" else r.json()

    def download(self, challenge: str, phase: str, out: str | os.PathLike, *, progress: bool | None = None) -> Path:
        """Download a phase's test archive to ``out`` (a file, or a folder: named after the phase), checked by SHA-256.

        ``progress``: a progress bar on stderr (None: when stderr is a terminal; see :func:`deepsift.output.progress`).
        """
        from ..outplaces import is_special_file
        from ..output import progress as progress_bar

        info = self.challenge(challenge)
        ph = next((p for p in info["phases"] if p["slug"] == phase), None)
        if ph is None:
            raise ClientError(f"challenge {challenge!r} has no phase {phase!r}")
        dest = Path(out)
        if dest.is_dir() or str(out).endswith(os.sep):
            dest = dest / f"{challenge}-{phase}-testset.zip"
        dest.parent.mkdir(parents=True, exist_ok=True)
        direct = is_special_file(dest)  # /dev/null, a FIFO: written through, never replaced by a rename
        tmp = dest if direct else dest.with_name(dest.name + ".part")
        h = hashlib.sha256()
        with self.http.stream("GET", f"/api/challenges/{challenge}/phases/{phase}/download") as r:
            if r.status_code >= 400:
                r.read()
                raise ClientError(_detail(r), r.status_code)
            total = int(r.headers.get("content-length") or 0) or None
            with open(tmp, "wb") as fh, progress_bar(desc=f"{challenge}/{phase}", unit="B", total=total,
                                                     enabled=progress) as bar:
                for chunk in r.iter_bytes(1 << 20):
                    h.update(chunk)
                    fh.write(chunk)
                    bar.update(len(chunk))
        if ph.get("download_sha256") and h.hexdigest() != ph["download_sha256"]:
            if not direct:
                tmp.unlink(missing_ok=True)
            raise ClientError("the download is corrupt (SHA-256 differs from the server's); try again")
        if not direct:
            os.replace(tmp, dest)
        return dest


def extract_images(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack a test archive (``images/``: flat files named by their id; README.txt, sample_submission.csv) into ``dest``.

    Each member name is checked (a plain file name, at the top or under ``images/``; nothing else): a hostile or damaged
    archive is a ClientError and leaves no half-extracted folder.
    """
    import shutil
    import zipfile

    out = Path(dest)
    stage = out.with_name(out.name + ".part")
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "images").mkdir(parents=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = info.filename
                if info.is_dir():
                    continue
                if "/" not in name and "\\" not in name and name not in (".", "..") and not name.startswith("."):
                    target = stage / name  # README.txt, sample_submission.csv
                elif name.startswith("images/") and "/" not in name[7:] and name[7:] not in ("", ".", "..") \
                        and "\\" not in name:
                    target = stage / "images" / name[7:]
                else:
                    raise ClientError(f"{archive}: unexpected member {name!r} (not a deepsift test archive)")
                with zf.open(info) as src, open(target, "wb") as fh:
                    shutil.copyfileobj(src, fh, 1 << 20)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise ClientError(f"{archive}: cannot unpack ({exc})") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(stage, out)
    return out


def _detail(r: httpx.Response) -> str:
    try:
        detail = r.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # FastAPI's validation errors
        detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail[:3])
    return f"{r.status_code}: {detail or r.text[:300] or r.reason_phrase}"
