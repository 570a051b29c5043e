"""The one URL fetcher: every image URL deepsift downloads goes through here, under a policy.

A :class:`FetchPolicy` says where a fetch may connect. Two standard ones:

* :data:`STRICT_POLICY` (the default everywhere in the library): public internet addresses only.
  Use it wherever a server fetches a URL for someone else (the demo, the platform).
* :data:`USER_POLICY`: any address, including loopback and the local network. The command-line
  tools use it: a user's own run on their own machine may fetch from ``localhost``.

Guarantees (tested in ``tests/test_urlfetch.py``):

* Only ``http`` and ``https``.
* Under a policy without ``allow_private`` no connection is made to a loopback, private,
  link-local, shared (CGNAT), reserved, documentation, multicast or unspecified address, nor to
  one of these wrapped in IPv6 (``::ffff:127.0.0.1``, 6to4, Teredo, NAT64). The check runs on
  the first URL, on every redirect target, and on the DNS answers themselves at the moment of
  connecting: deepsift resolves the name, checks every answer, and connects to a checked
  address (TLS still verifies the certificate against the name). A name that answers
  differently the second time (DNS rebinding) cannot slip through, and a name with any
  forbidden answer is refused as a whole (:class:`~deepsift.exceptions.URLNotAllowedError`).
  Such a policy uses no proxy from the environment (the proxy would resolve names out of
  sight) and no ``~/.netrc``.
* A total deadline per URL: name resolution, connect, TLS, request, redirects and the whole body
  together (a server sending one byte a second is cut off at the deadline).
* A byte cap: ``Content-Length`` first, then the body as it streams in (after decompression).

Public API::

    fetch_url(url, *, policy=STRICT_POLICY, deadline=20.0, max_bytes=MAX_BYTES) -> bytes   # blocking
    await afetch_url(url, ...) -> bytes                        # the same, for async code
    async_client(policy, ...) -> httpx.AsyncClient             # many fetches sharing connections
    await aget(client, url, max_bytes=...) -> Fetched          # one GET with that client: status + body
    check_url(url, policy); address_allowed(address, policy)   # the checks on their own

A server calls ``fetch_url(url, policy=STRICT_POLICY, deadline=10, max_bytes=...)`` (or awaits
:func:`afetch_url` inside an event loop) and maps :class:`URLNotAllowedError` to a 400 answer.
Tests that serve images from 127.0.0.1 pass ``policy=USER_POLICY`` or a policy with
``allow_networks=("127.0.0.1/32",)`` (the strict checks, with one exception).
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Coroutine, Sequence, TypeVar
from urllib.parse import urlsplit

import httpcore
import httpx

from . import __version__
from .choices import URL_TIMEOUT_S  # re-exported: the default total deadline of one image URL
from .exceptions import ImageFetchError, ImageTooLargeError, URLNotAllowedError, UsageError
from .images import MAX_BYTES

MAX_REDIRECTS = 5
USER_AGENT = f"deepsift/{__version__}"
NOT_AN_IMAGE_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "application/json")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class FetchPolicy:
    """Where a fetch may connect, and how many redirects it follows.

    ``allow_private``: also loopback, private and other non-public addresses (a user's own run).
    ``allow_networks``: networks allowed even so, e.g. ``("10.20.0.0/16",)`` for an internal image
    store of a server, or ``("127.0.0.1/32",)`` for tests of the strict checks.
    ``resolver``: ``(host, port) -> addresses`` used instead of the system's DNS (tests, or a
    server with its own resolver); its answers are checked like any others.
    """

    allow_private: bool = False
    allow_networks: tuple[str, ...] = ()
    max_redirects: int = MAX_REDIRECTS
    resolver: Resolver | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_redirects < 0:
            raise UsageError(f"max_redirects must be >= 0, got {self.max_redirects}")
        try:
            nets = tuple(ipaddress.ip_network(n, strict=False) for n in self.allow_networks)
        except ValueError as exc:
            raise UsageError(f"allow_networks: {exc}") from None
        object.__setattr__(self, "_networks", nets)

    def allows(self, address: str | Address) -> bool:
        """Whether a connection to ``address`` (an IP address) is allowed."""
        return address_allowed(address, self)


STRICT_POLICY = FetchPolicy()
"""Public internet addresses only: for servers fetching URLs on behalf of others."""

USER_POLICY = FetchPolicy(allow_private=True)
"""Any address: for a user's own command-line run on their own machine."""


@dataclass
class Fetched:
    """One answer: the final URL (after redirects), its status, headers, and the body of a 2xx."""

    url: str
    status: int
    headers: httpx.Headers
    content: bytes | None = None


# -- the checks --------------------------------------------------------------------------------
def address_kind(address: str | Address) -> str | None:
    """None for a public address; otherwise what it is (``loopback``, ``private``, ...)."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or (ip.teredo[1] if ip.teredo else None) or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_kind(embedded)
            return f"{inner} (inside {ip})" if inner else None
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    if not ip.is_global:
        return "non-public"  # shared address space (100.64/10), benchmarking, documentation, ...
    return None


def address_allowed(address: str | Address, policy: FetchPolicy = STRICT_POLICY) -> bool:
    """Whether ``policy`` allows a connection to the IP ``address``."""
    if policy.allow_private:
        return True
    ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
    if any(ip in net for net in policy._networks):  # type: ignore[attr-defined]
        return True
    return address_kind(ip) is None


def check_url(url: str, policy: FetchPolicy = STRICT_POLICY) -> None:
    """Refuse a URL that is not http(s) or whose host is a literal address the policy forbids."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise ImageFetchError(f"{url}: not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ImageFetchError(f"{url}: only http(s) URLs with a host are fetched")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: its DNS answers are checked when connecting
    if not address_allowed(ip, policy):
        raise URLNotAllowedError(f"{url}: {ip} is a {address_kind(ip)} address; refused by the URL policy")


_DNS_POOL: ThreadPoolExecutor | None = None


def _dns_pool() -> ThreadPoolExecutor:
    """Threads for name resolution, apart from any event loop's default executor.

    A loop closed at a deadline does not wait for a resolver that hangs here.
    """
    global _DNS_POOL
    if _DNS_POOL is None:
        _DNS_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="deepsift-dns")
    return _DNS_POOL


def _resolve(host: str, port: int, policy: FetchPolicy) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order, without duplicates."""
    if policy.resolver is not None:
        answers = list(policy.resolver(host, port))
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        answers = [str(info[4][0]) for info in infos]
    return list(dict.fromkeys(answers))


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy allows.

    The name is resolved here, every answer checked, and the connection made to a checked
    address: what is checked is what is connected to.
    """

    def __init__(self, policy: FetchPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: object = None) -> httpcore.AsyncNetworkStream:
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            loop = asyncio.get_running_loop()
            addresses = await loop.run_in_executor(_dns_pool(), _resolve, host, port, self._policy)
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                raise httpcore.ConnectError(f"{host}: the resolver answered {address!r}, not an address") from None
            if not address_allowed(address, self._policy):
                kind = address_kind(address.split("%", 1)[0])
                raise URLNotAllowedError(f"host {host} resolves to {address}, a {kind} address; "
                                         f"refused by the URL policy")
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)  # type: ignore[arg-type]
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error  # type: ignore[misc]

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: object = None) -> httpcore.AsyncNetworkStream:
        raise URLNotAllowedError("unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool that uses :class:`_CheckedBackend`."""

    def __init__(self, policy: FetchPolicy, limits: httpx.Limits, verify: ssl.SSLContext) -> None:
        super().__init__(verify=verify, limits=limits, trust_env=False)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            # fail closed: an httpx that keeps its pool elsewhere would bypass the checks
            raise RuntimeError("this httpx version keeps its connection pool elsewhere; the URL policy cannot be applied")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=verify, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=_CheckedBackend(policy),
        )


@functools.lru_cache(maxsize=2)
def _tls_context(trust_env: bool) -> ssl.SSLContext:
    """One TLS context per setting, shared by every client (building one costs milliseconds)."""
    return httpx.create_ssl_context(trust_env=trust_env)


def async_client(policy: FetchPolicy = STRICT_POLICY, *, connections: int = 8, timeout: float | None = URL_TIMEOUT_S,
                 user_agent: str = USER_AGENT, trust_env: bool = True,
                 verify: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that follows redirects and obeys ``policy`` on every connection.

    ``trust_env`` (proxies, ``SSL_CERT_FILE``, ``.netrc``) applies to a policy that allows
    private addresses only; ``timeout`` bounds each network operation (wrap calls in a total
    deadline, as :func:`afetch_url` does).
    """
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    common: dict = dict(follow_redirects=True, max_redirects=policy.max_redirects, timeout=httpx.Timeout(timeout),
                        headers={"User-Agent": user_agent}, event_hooks={"request": [_request_hook(policy)]})
    if policy.allow_private:
        verify = verify if verify is not None else _tls_context(trust_env)
        return httpx.AsyncClient(limits=limits, verify=verify, trust_env=trust_env, **common)
    verify = verify if verify is not None else _tls_context(False)
    if not isinstance(verify, ssl.SSLContext):
        raise UsageError("verify must be an ssl.SSLContext (see httpx.create_ssl_context)")
    return httpx.AsyncClient(transport=_CheckedTransport(policy, limits, verify), trust_env=False, **common)


def _request_hook(policy: FetchPolicy) -> Callable[[httpx.Request], Coroutine[None, None, None]]:
    """An httpx request hook: the first request and every redirect pass :func:`check_url`."""
    async def hook(request: httpx.Request) -> None:
        check_url(str(request.url), policy)
    return hook


# -- fetching ----------------------------------------------------------------------------------
async def aget(client: httpx.AsyncClient, url: str, *, max_bytes: int = MAX_BYTES) -> Fetched:
    """GET ``url`` with ``client``; the body of a 2xx answer is read up to ``max_bytes``.

    Raises :class:`ImageTooLargeError` past the cap, :class:`URLNotAllowedError` for a forbidden
    address, and httpx's errors (timeouts, too many redirects, connection errors) as they come.
    """
    async with client.stream("GET", url) as resp:
        got = Fetched(str(resp.url), resp.status_code, resp.headers)
        if not 200 <= resp.status_code < 300:
            return got
        length = resp.headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > max_bytes:
            raise ImageTooLargeError(f"{url}: Content-Length {length} exceeds the cap of {max_bytes} bytes")
        buf = bytearray()
        async for chunk in resp.aiter_bytes():
            buf += chunk
            if len(buf) > max_bytes:
                raise ImageTooLargeError(f"{url}: body over the cap of {max_bytes} bytes")
        got.content = bytes(buf)
        return got


async def afetch_url(url: str, *, policy: FetchPolicy = STRICT_POLICY, deadline: float = URL_TIMEOUT_S,
                     max_bytes: int = MAX_BYTES) -> bytes:
    """Download one image URL within a total ``deadline`` (async; see :func:`fetch_url`)."""
    if not deadline > 0:
        raise UsageError(f"the URL deadline must be > 0 seconds, got {deadline}")
    check_url(url, policy)
    try:
        return await asyncio.wait_for(_afetch(url, policy, deadline, max_bytes), timeout=deadline)
    except (asyncio.TimeoutError, httpx.TimeoutException):
        raise ImageFetchError(f"{url}: timed out after {deadline:g} s (total deadline)") from None
    except URLNotAllowedError as exc:
        raise URLNotAllowedError(str(exc) if str(exc).startswith(url) else f"{url}: {exc}") from None
    except httpx.TooManyRedirects:
        raise ImageFetchError(f"{url}: too many redirects (more than {policy.max_redirects})") from None
    except httpx.HTTPError as exc:
        raise ImageFetchError(f"{url}: {type(exc).__name__}: {exc or 'failed'}") from None


async def _afetch(url: str, policy: FetchPolicy, deadline: float, max_bytes: int) -> bytes:
    async with async_client(policy, connections=1, timeout=deadline) as client:
        got = await aget(client, url, max_bytes=max_bytes)
    if not 200 <= got.status < 300:
        raise ImageFetchError(f"{url}: HTTP {got.status}")
    ctype = got.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in NOT_AN_IMAGE_TYPES:
        raise ImageFetchError(f"{url}: returned {ctype}, not an image")
    return got.content or b""


def fetch_url(url: str, *, policy: FetchPolicy = STRICT_POLICY, deadline: float = URL_TIMEOUT_S,
              max_bytes: int = MAX_BYTES, timeout: float | None = None) -> bytes:
    """Download one image URL (blocking; from async code, await :func:`afetch_url` instead).

    ``deadline`` is the total time allowed in seconds (``timeout`` is an older name for it).
    An HTTP error, an HTML/text/JSON answer, a body over ``max_bytes``, a timeout or a forbidden
    address raise :class:`~deepsift.exceptions.ImageFetchError` (or a subclass) naming the URL.
    """
    return run_sync(afetch_url(url, policy=policy, deadline=deadline if timeout is None else timeout,
                               max_bytes=max_bytes))


T = TypeVar("T")


def run_sync(coro: Coroutine[None, None, T]) -> T:
    """Run ``coro`` to the end on a private event loop and return its result (blocking).

    The loop is closed without waiting for stray resolver threads, so a deadline holds. Called
    from a thread whose own event loop is running (a notebook, sync code inside an async
    server), the private loop runs on a helper thread instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_here(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepsift-fetch") as helper:
        return helper.submit(_run_here, coro).result()


def _run_here(coro: Coroutine[None, None, T]) -> T:
    """Run ``coro`` on a new event loop in this thread."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
