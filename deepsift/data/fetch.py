"""Download the real (LAION) images of D3 records: concurrent, polite, resumable.

Policy (tested in ``tests/test_data_fetch.py``):

* asyncio + httpx, ``concurrency`` downloads at once, at most ``per_host`` per host;
* a total time limit per attempt; retries with exponential backoff on 5xx, 429, 408,
  timeouts and dropped connections, honouring ``Retry-After`` (seconds or HTTP date);
* a byte cap (``Content-Length`` checked first, then the body as it streams in);
* the body must decode as an image within the pixel cap (:func:`deepsift.images.decode_image`);
  the original bytes are stored unchanged as ``<id>.<ext>`` (ext from the file's magic bytes);
* every connection obeys a URL policy (:mod:`deepsift.urlfetch`): by default the strict one, so
  a URL, a redirect or a DNS answer leading to a loopback, private or other non-public address
  is ``blocked`` without a request being sent; the command line (a user's own run) passes
  :data:`~deepsift.urlfetch.USER_POLICY`;
* every id gets one line in ``status.jsonl`` next to the images (``ok``, ``http_404``,
  ``timeout``, ``not_image``, ``too_large``, ``connect_error``, ``too_many_redirects``,
  ``invalid_url``, ``no_url``, ``blocked``, ``write_error``, ...), written and flushed as soon as the image is
  renamed into place, so a killed run (even ``kill -9``) loses no line of a stored image; a re-run
  skips ids already ``ok`` (file present) and ids that failed for good (4xx, not an image, too
  large) unless ``retry_failed``;
* the output folder is checked before any download; a full disk (or a status line that cannot
  be written) stops the run with one :class:`~deepsift.exceptions.DataError`, every line
  written before it intact.
"""
from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import errno
import json
import os
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable
from urllib.parse import urlsplit

import httpx

from .. import __version__
from ..exceptions import DataError, ImageDecodeError, ImageTooLargeError, URLNotAllowedError, UsageError
from ..filenames import safe_name  # noqa: F401  (re-exported: the image file name of an id)
from ..images import MAX_PIXELS, decode_image
from ..outplaces import ensure_writable_dir

if TYPE_CHECKING:
    from .statusindex import StatusIndex
from ..urlfetch import STRICT_POLICY, FetchPolicy, aget, async_client, run_sync

STATUS_FILE = "status.jsonl"
PERMANENT = ("not_image", "too_large", "invalid_url", "no_url", "too_many_redirects", "blocked")
"""Failure statuses a re-run does not retry (plus every ``http_4xx`` except 408 and 429)."""

_MAGIC = (
    (b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
    (b"BM", "bmp"), (b"II*\x00", "tif"), (b"MM\x00*", "tif"),
)
CONNECTIONS_PER_CLIENT = 8
"""Connections per httpx client; the fetcher spreads its workers over several small pools."""
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
"""Errors of an image write that stop the whole run: every later id would fail the same way."""


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
    url_policy: FetchPolicy = STRICT_POLICY

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
    """Counts of one fetch run: statuses of the ids fetched now and of those skipped (done before)."""

    statuses: Counter = field(default_factory=Counter)
    skipped: int = 0
    skipped_statuses: Counter = field(default_factory=Counter)
    bytes: int = 0
    seconds: float = 0.0

    @property
    def fetched(self) -> int:
        """Ids attempted in this run."""
        return sum(self.statuses.values())

    @property
    def tally(self) -> Counter:
        """Status of every id of the input: this run's result, or the earlier one for skipped ids."""
        return self.statuses + self.skipped_statuses

    @property
    def failed(self) -> int:
        """Ids of the input that have no image (this run's failures and earlier ones not retried)."""
        return sum(n for status, n in self.tally.items() if status != "ok")

    def line(self) -> str:
        """One-line summary for the end of the command: the tally by status, then this run's work."""
        rate = self.fetched / self.seconds if self.seconds > 0 else 0.0
        tally = ", ".join(f"{k} {v}" for k, v in sorted(self.tally.items(), key=lambda kv: (-kv[1], kv[0])))
        return (f"{sum(self.tally.values())} id(s): {tally or 'none'}; this run fetched {self.fetched} in "
                f"{self.seconds:.1f} s ({rate:.0f}/s, {self.bytes / 1e6:.1f} MB), skipped {self.skipped} "
                f"done before")


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


def load_status(out_dir: str | os.PathLike) -> "StatusIndex":
    """The latest status line per id of ``out_dir/status.jsonl``, as an on-disk index (a read-only mapping).

    Memory does not grow with the number of ids (:mod:`deepsift.data.statusindex`, ``status.sqlite``
    beside the JSONL, rebuilt from it when missing or stale).
    """
    from .statusindex import StatusIndex

    return StatusIndex(out_dir, STATUS_FILE)


def load_status_dict(out_dir: str | os.PathLike) -> dict[str, dict]:
    """The latest status line per id from ``out_dir/status.jsonl`` as a dict in RAM (small folders, benchmarks)."""
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


def _cut(path: Path, size: int) -> None:
    """Truncate ``path`` to ``size`` bytes (dropping a line torn by a failed write), if it can be done."""
    try:
        os.truncate(path, size)
    except OSError:
        pass


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
        self.disk_full: str | None = None  # set when an image write finds the disk full: the run stops

    def run(self, items: Iterable[tuple[str, str | None]], *, total: int | None = None, progress: bool = True) -> FetchSummary:
        """Fetch every pending item (blocking, also where an event loop is running) and return the summary."""
        return run_sync(self.arun(items, total=total, progress=progress))

    async def arun(self, items: Iterable[tuple[str, str | None]], *, total: int | None = None, progress: bool = True) -> FetchSummary:
        """Fetch every pending item and return the summary."""
        from ..output import progress as progress_bar

        cfg = self.config
        ensure_writable_dir(self.out_dir)
        previous = load_status(self.out_dir)
        summary = FetchSummary()
        start = time.perf_counter()
        queue: asyncio.Queue = asyncio.Queue(maxsize=cfg.concurrency * 4)
        bar = progress_bar(desc="fetch-real", unit="img", total=total, enabled=None if progress else False)
        clients: list[httpx.AsyncClient] = []
        workers: list[asyncio.Task] = []
        status_path = self.out_dir / STATUS_FILE
        torn = status_path.is_file() and status_path.stat().st_size > 0 and _last_byte(status_path) != b"\n"
        fatal: list[str] = []  # why the run must stop (a full disk...): workers then drain the queue unread
        try:
            status_fh = open(status_path, "a", encoding="utf-8")
            if torn:  # a killed run left half a line: end it, or the next line would be lost with it
                status_fh.write("\n")
                status_fh.flush()
        except OSError as exc:
            previous.close()
            raise DataError(f"cannot write {status_path}: {exc.strerror or exc}") from None
        good_end = [status_fh.tell()]  # where the last complete status line ends
        with status_fh:
            async def worker(client: httpx.AsyncClient) -> None:
                while True:
                    item = await queue.get()
                    if item is None:
                        return
                    if fatal:
                        continue
                    try:
                        result = await self.fetch_one(client, *item)
                    except Exception as exc:  # a dead worker would hang the queue: record it and go on
                        result = FetchResult(item[0], item[1], "error", error=f"{type(exc).__name__}: {exc}")
                    try:
                        status_fh.write(json.dumps(asdict(result)) + "\n")
                        status_fh.flush()  # durable at once: a killed run must not lose lines of stored images
                        good_end[0] = status_fh.tell()
                    except OSError as exc:  # a full disk: no torn line, and no image without its line
                        fatal.append(f"cannot write {status_path}: {exc.strerror or exc}")
                        _cut(status_path, good_end[0])
                        if result.path:
                            (self.out_dir / result.path).unlink(missing_ok=True)
                        continue
                    if self.disk_full:
                        fatal.append(self.disk_full)
                    summary.statuses[result.status] += 1
                    summary.bytes += result.bytes or 0
                    bar.update(1)

            try:
                for rid, url in items:
                    if fatal:
                        break
                    if not previous.first_sighting(rid):  # a duplicate id in the input (kept on disk, not in RAM)
                        continue
                    entry = previous.get(rid)
                    if not needs_fetch(entry, self.out_dir, cfg.retry_failed):
                        summary.skipped += 1
                        summary.skipped_statuses[str((entry or {}).get("status"))] += 1
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
                previous.close()
                try:
                    status_fh.flush()
                except OSError as exc:
                    fatal.append(f"cannot write {status_path}: {exc.strerror or exc}")
                    _cut(status_path, good_end[0])
        summary.seconds = time.perf_counter() - start
        if fatal:
            raise DataError(f"{fatal[0]}; stopped after {summary.fetched} id(s) this run ({summary.line()}); "
                            f"every status line before it is intact: free space and run again to go on")
        return summary

    def _clients(self) -> list[httpx.AsyncClient]:
        """Several small connection pools sharing one TLS context, each obeying the URL policy.

        httpcore scans its whole pool on every request state change, so one pool of 64
        connections costs O(64) per event; small pools shared by a few workers each scale.
        """
        cfg = self.config
        n_clients = -(-cfg.concurrency // CONNECTIONS_PER_CLIENT)
        per_client = -(-cfg.concurrency // n_clients)
        policy = dataclasses.replace(cfg.url_policy, max_redirects=cfg.max_redirects)
        tls = httpx.create_ssl_context(trust_env=cfg.trust_env and policy.allow_private)
        return [
            async_client(policy, connections=per_client, timeout=cfg.timeout, trust_env=cfg.trust_env, verify=tls,
                         user_agent=f"deepsift/{__version__} (real-image fetcher)")
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
        except URLNotAllowedError as exc:
            return FetchResult(rid, url, "blocked", error=str(exc)), None, None
        except ImageTooLargeError as exc:
            return FetchResult(rid, url, "too_large", error=str(exc)), None, None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return FetchResult(rid, url, "invalid_url", error=str(exc)), None, None
        except httpx.ConnectError as exc:
            return FetchResult(rid, url, "connect_error", error=str(exc) or type(exc).__name__), None, None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            return FetchResult(rid, url, "network_error", error=str(exc) or type(exc).__name__), None, None

    async def _get(self, client: httpx.AsyncClient, rid: str, url: str) -> tuple[FetchResult, bytes | None, float | None]:
        """One GET through the URL fetcher, the body capped at ``max_bytes``."""
        got = await aget(client, url, max_bytes=self.config.max_bytes)
        if got.status != 200:
            return (FetchResult(rid, url, f"http_{got.status}", http_status=got.status),
                    None, parse_retry_after(got.headers.get("retry-after")))
        body = got.content or b""
        return FetchResult(rid, url, "ok", http_status=got.status, bytes=len(body)), body, None

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
            if exc.errno in _DISK_FULL:
                self.disk_full = f"cannot write to {self.out_dir}: {exc.strerror or exc}"
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
