"""Download the real (LAION) images of D3 records: concurrent, polite, resumable.

Policy (tested in ``tests/test_data_fetch.py``):

* asyncio + httpx, ``concurrency`` downloads at once, at most ``per_host`` per host;
* a total time limit per attempt; retries with exponential backoff on 5xx, 429, 408,
  timeouts and dropped connections, honouring ``Retry-After`` (seconds or HTTP date);
* a byte cap (``Content-Length`` checked first, then the body as it streams in);
* the body must decode as an image within the pixel cap (:func:`deepsift.images.decode_image`);
  the original bytes are stored unchanged as ``<id>.<ext>`` (ext from the file's magic bytes);
* every id gets one line in ``status.jsonl`` next to the images (``ok``, ``http_404``,
  ``timeout``, ``not_image``, ``too_large``, ``connect_error``, ``too_many_redirects``,
  ``invalid_url``, ``no_url``, ``write_error``, ...), written and flushed as soon as the image is
  renamed into place, so a killed run (even ``kill -9``) loses no line of a stored image; a re-run
  skips ids already ``ok`` (file present) and ids that failed for good (4xx, not an image, too
  large) unless ``retry_failed``.
"""
from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import os
import random
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

import httpx

from .. import __version__
from ..exceptions import ImageDecodeError, ImageTooLargeError, UsageError
from ..images import MAX_PIXELS, decode_image

STATUS_FILE = "status.jsonl"
PERMANENT = ("not_image", "too_large", "invalid_url", "no_url", "too_many_redirects")
"""Failure statuses a re-run does not retry (plus every ``http_4xx`` except 408 and 429)."""

_MAGIC = (
    (b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
    (b"BM", "bmp"), (b"II*\x00", "tif"), (b"MM\x00*", "tif"),
)
CONNECTIONS_PER_CLIENT = 8
"""Connections per httpx client; the fetcher spreads its workers over several small pools."""
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}")


@dataclass
class FetchConfig:
    """Knobs of the fetcher (defaults suit the public web)."""

    concurrency: int = 64
    per_host: int = 8
    timeout: float = 20.0
    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 60.0
    max_bytes: int = 16 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    max_redirects: int = 5
    retry_failed: bool = False
    trust_env: bool = True

    def __post_init__(self) -> None:
        for name in ("concurrency", "per_host", "max_bytes", "max_pixels"):
            if getattr(self, name) < 1:
                raise UsageError(f"fetch option {name} must be >= 1, got {getattr(self, name)}")
        if self.timeout <= 0 or self.retries < 0 or self.backoff < 0:
            raise UsageError("fetch timeout must be > 0, retries and backoff >= 0")


@dataclass
class FetchResult:
    """What happened to one id."""

    id: str
    url: str | None
    status: str
    http_status: int | None = None
    path: str | None = None
    bytes: int | None = None
    width: int | None = None
    height: int | None = None
    attempts: int = 0
    error: str | None = None


@dataclass
class FetchSummary:
    """Counts of one fetch run."""

    statuses: Counter = field(default_factory=Counter)
    skipped: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def fetched(self) -> int:
        """Ids attempted in this run."""
        return sum(self.statuses.values())

    def line(self) -> str:
        """One-line summary for the end of the command."""
        rate = self.fetched / self.seconds if self.seconds > 0 else 0.0
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items(), key=lambda kv: -kv[1])) or "nothing to do"
        return (f"fetched {self.fetched} ids in {self.seconds:.1f} s ({rate:.0f}/s, {self.bytes / 1e6:.1f} MB): "
                f"{parts}; skipped {self.skipped} already done")


def is_permanent(status: str) -> bool:
    """Whether a failure status should not be retried by a later run."""
    if status in PERMANENT:
        return True
    if status.startswith("http_") and status[5:].isdigit():
        code = int(status[5:])
        return 400 <= code < 500 and code not in (408, 429)
    return False


def is_transient(status: str) -> bool:
    """Whether a failed attempt is worth retrying now."""
    if status in ("timeout", "connect_error", "network_error"):
        return True
    if status.startswith("http_") and status[5:].isdigit():
        code = int(status[5:])
        return code >= 500 or code in (408, 429)
    return False


def safe_name(record_id: str) -> str:
    """A file-name stem for an id that cannot escape the output folder."""
    if _SAFE_ID.fullmatch(record_id) and ".." not in record_id:
        return record_id
    return "id-" + hashlib.sha1(record_id.encode()).hexdigest()[:24]


def sniff_ext(data: bytes) -> str:
    """File extension from an image's magic bytes (``img`` when unknown)."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "img"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def load_status(out_dir: str | os.PathLike) -> dict[str, dict]:
    """The latest status line per id from ``out_dir/status.jsonl`` (empty when absent)."""
    path = Path(out_dir) / STATUS_FILE
    latest: dict[str, dict] = {}
    if not path.exists():
        return latest
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a killed run
            if isinstance(entry, dict) and "id" in entry:
                latest[str(entry["id"])] = entry
    return latest


def _last_byte(path: Path) -> bytes:
    """The last byte of a non-empty file."""
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)


def needs_fetch(entry: dict | None, out_dir: Path, retry_failed: bool) -> bool:
    """Whether an id with this previous status line should be fetched (again)."""
    if entry is None:
        return True
    status = entry.get("status", "")
    if status == "ok":
        return not (entry.get("path") and (out_dir / entry["path"]).is_file())
    return retry_failed or not is_permanent(status)


class Fetcher:
    """Download real images for ``(id, url)`` pairs into one folder (see the module policy)."""

    def __init__(self, out_dir: str | os.PathLike, config: FetchConfig | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.config = config or FetchConfig()
        self._hosts: dict[str, asyncio.Semaphore] = {}

    def run(self, items: Iterable[tuple[str, str | None]], *, total: int | None = None, progress: bool = True) -> FetchSummary:
        """Fetch every pending item (blocking) and return the summary."""
        return asyncio.run(self.arun(items, total=total, progress=progress))

    async def arun(self, items: Iterable[tuple[str, str | None]], *, total: int | None = None, progress: bool = True) -> FetchSummary:
        """Fetch every pending item and return the summary."""
        from tqdm import tqdm

        cfg = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        previous = load_status(self.out_dir)
        summary = FetchSummary()
        start = time.perf_counter()
        queue: asyncio.Queue = asyncio.Queue(maxsize=cfg.concurrency * 4)
        bar = tqdm(total=total, unit="img", desc="fetch-real", disable=None if progress else True)
        clients: list[httpx.AsyncClient] = []
        workers: list[asyncio.Task] = []
        status_path = self.out_dir / STATUS_FILE
        torn = status_path.is_file() and status_path.stat().st_size > 0 and _last_byte(status_path) != b"\n"
        with open(status_path, "a", encoding="utf-8") as status_fh:
            if torn:  # a killed run left half a line: end it, or the next line would be lost with it
                status_fh.write("\n")
            async def worker(client: httpx.AsyncClient) -> None:
                while True:
                    item = await queue.get()
                    if item is None:
                        return
                    try:
                        result = await self.fetch_one(client, *item)
                    except Exception as exc:  # a dead worker would hang the queue: record it and go on
                        result = FetchResult(item[0], item[1], "error", error=f"{type(exc).__name__}: {exc}")
                    status_fh.write(json.dumps(asdict(result)) + "\n")
                    status_fh.flush()  # durable at once: a killed run must not lose lines of stored images
                    summary.statuses[result.status] += 1
                    summary.bytes += result.bytes or 0
                    bar.update(1)

            try:
                seen: set[str] = set()
                for rid, url in items:
                    if rid in seen:
                        continue
                    seen.add(rid)
                    if not needs_fetch(previous.get(rid), self.out_dir, cfg.retry_failed):
                        summary.skipped += 1
                        bar.update(1)
                        continue
                    if not workers:  # started on the first pending id: a finished re-run costs nothing
                        clients = self._clients()
                        workers = [asyncio.create_task(worker(clients[i % len(clients)])) for i in range(cfg.concurrency)]
                    await queue.put((rid, url))
                for _ in workers:
                    await queue.put(None)
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
                for client in clients:
                    await client.aclose()
                bar.close()
                status_fh.flush()
        summary.seconds = time.perf_counter() - start
        return summary

    def _clients(self) -> list[httpx.AsyncClient]:
        """Several small connection pools sharing one TLS context.

        httpcore scans its whole pool on every request state change, so one pool of 64
        connections costs O(64) per event; small pools shared by a few workers each scale.
        """
        cfg = self.config
        n_clients = -(-cfg.concurrency // CONNECTIONS_PER_CLIENT)
        per_client = -(-cfg.concurrency // n_clients)
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        tls = httpx.create_ssl_context(trust_env=cfg.trust_env)
        return [
            httpx.AsyncClient(
                limits=limits, follow_redirects=True, max_redirects=cfg.max_redirects, timeout=httpx.Timeout(cfg.timeout),
                headers={"User-Agent": f"deepsift/{__version__} (real-image fetcher)"}, trust_env=cfg.trust_env,
                verify=tls,
            )
            for _ in range(n_clients)
        ]

    async def fetch_one(self, client: httpx.AsyncClient, rid: str, url: str | None) -> FetchResult:
        """Fetch, check and store one image, retrying transient failures."""
        cfg = self.config
        if not url:
            return FetchResult(rid, url, "no_url")
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            return FetchResult(rid, url, "invalid_url", error=str(exc))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return FetchResult(rid, url, "invalid_url", error="only http(s) URLs are fetched")
        sem = self._hosts.setdefault(parts.hostname, asyncio.Semaphore(cfg.per_host))
        attempt = 0
        while True:
            attempt += 1
            async with sem:
                result, body, retry_after = await self._attempt(client, rid, url)
            result.attempts = attempt
            if not is_transient(result.status) or attempt > cfg.retries:
                break
            delay = retry_after if retry_after is not None else cfg.backoff * 2 ** (attempt - 1) * (1 + random.random() / 4)
            await asyncio.sleep(min(delay, cfg.max_backoff))
        if result.status != "ok" or body is None:
            return result
        return await self._check_and_store(result, body)

    async def _attempt(self, client: httpx.AsyncClient, rid: str, url: str) -> tuple[FetchResult, bytes | None, float | None]:
        """One GET within the total time limit: (result, body, Retry-After seconds)."""
        try:
            return await asyncio.wait_for(self._get(client, rid, url), timeout=self.config.timeout)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            return FetchResult(rid, url, "timeout", error=f"no complete answer within {self.config.timeout:g} s"), None, None
        except httpx.TooManyRedirects:
            return FetchResult(rid, url, "too_many_redirects"), None, None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return FetchResult(rid, url, "invalid_url", error=str(exc)), None, None
        except httpx.ConnectError as exc:
            return FetchResult(rid, url, "connect_error", error=str(exc) or type(exc).__name__), None, None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            return FetchResult(rid, url, "network_error", error=str(exc) or type(exc).__name__), None, None

    async def _get(self, client: httpx.AsyncClient, rid: str, url: str) -> tuple[FetchResult, bytes | None, float | None]:
        """Stream one response body, stopping at the byte cap."""
        cap = self.config.max_bytes
        async with client.stream("GET", url) as resp:
            code = resp.status_code
            if code != 200:
                return (FetchResult(rid, url, f"http_{code}", http_status=code),
                        None, parse_retry_after(resp.headers.get("retry-after")))
            length = resp.headers.get("content-length", "")
            if length.isdigit() and int(length) > cap:
                return FetchResult(rid, url, "too_large", code, error=f"Content-Length {length} > cap {cap}"), None, None
            buf = bytearray()
            async for chunk in resp.aiter_bytes():
                buf += chunk
                if len(buf) > cap:
                    return FetchResult(rid, url, "too_large", code, error=f"body over the cap of {cap} bytes"), None, None
            return FetchResult(rid, url, "ok", http_status=code, bytes=len(buf)), bytes(buf), None

    async def _check_and_store(self, result: FetchResult, body: bytes) -> FetchResult:
        """Decode the body within the caps; store the original bytes atomically."""
        try:
            if len(body) > 256 * 1024:
                im = await asyncio.to_thread(decode_image, body, max_pixels=self.config.max_pixels, max_bytes=self.config.max_bytes)
            else:
                im = decode_image(body, max_pixels=self.config.max_pixels, max_bytes=self.config.max_bytes)
        except ImageTooLargeError as exc:
            result.status, result.error = "too_large", str(exc)
            return result
        except ImageDecodeError as exc:
            result.status, result.error = "not_image", str(exc)
            return result
        result.width, result.height = im.size
        name = f"{safe_name(result.id)}.{sniff_ext(body)}"
        final = self.out_dir / name
        tmp = self.out_dir / f".{name}.tmp-{os.getpid()}"
        try:
            tmp.write_bytes(body)
            os.replace(tmp, final)
        except OSError as exc:  # disk full, unwritable folder...: a status, never a dead worker
            tmp.unlink(missing_ok=True)
            result.status, result.error = "write_error", f"{final}: {exc.strerror or exc}"
            return result
        result.path = name
        return result


def real_image_path(out_dir: str | os.PathLike, status: dict[str, dict], record_id: str) -> Path | None:
    """Path of a fetched real image for ``record_id`` (``None`` unless its status is ``ok``)."""
    entry = status.get(record_id)
    if not entry or entry.get("status") != "ok" or not entry.get("path"):
        return None
    path = Path(out_dir) / Path(entry["path"]).name
    return path if path.is_file() else None
