"""Helpers to run the real server in tests: settings, an in-thread uvicorn, a `deepsift serve` process.

Fixtures built on these live in conftest.py (``database_url``, ``server_settings``, ``app``,
``client``, ``live_server``). Typical use in a domain's tests::

    def test_something(client):                      # ASGI transport (fast), SQLite and PostgreSQL
        assert client.get("/healthz").json()["status"] == "ok"

    def test_over_http(live_server):                 # a real uvicorn on 127.0.0.1:<free port>
        httpx.get(live_server.url + "/healthz")
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from deepsift.server import Settings
from pgserver import free_port

TEST_SECRET = "test-secret-key-not-for-production"


def make_settings(database_url: str, data_dir: str | os.PathLike, **overrides: Any) -> Settings:
    """Settings for a test server: the given database, a private data folder, generous rate limits."""
    base: dict[str, Any] = dict(database_url=database_url, data_dir=Path(data_dir), secret_key=TEST_SECRET,
                                login_rate="1000/minute", login_account_rate="1000/minute", submit_rate="1000/minute", api_rate="100000/minute")
    base.update(overrides)
    return Settings(**base)


def api_routes(app: Any, prefix: str = "/api/") -> set[tuple[str, str]]:
    """Every (method, path template) the app serves under ``prefix``, inside included routers and mounts too
    (``app.routes`` lists only the top level with FastAPI 0.165's included routers)."""
    from fastapi import routing

    if hasattr(routing, "iter_route_contexts"):  # FastAPI >= 0.165: included routers are resolved lazily
        found = [(r.methods, r.path) for r in routing.iter_route_contexts(app.routes)]
    else:
        found = []
        stack = list(app.routes)
        while stack:
            r = stack.pop()
            found.append((getattr(r, "methods", None), getattr(r, "path", None)))
            stack.extend(getattr(r, "routes", None) or [])
    return {(m, path) for methods, path in found if methods and path and path.startswith(prefix) for m in methods
            if m != "HEAD"}


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate()`` until it returns a truthy value (returned) or raise after ``timeout`` s.

    Only for the state of another process that says nothing when it changes (a job's row in the database, a
    worker process appearing): there is no line or event to wait on, so it is polled. A process ending is
    waited on by its pidfd (:func:`wait_gone`).
    A server process coming up is waited on by its "listening" line (:class:`ServeProcess`), an in-thread
    server by an event (:class:`LiveServer`)."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling; report the last failure
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))


def wait_gone(pids, timeout: float = 30.0, what: str = "the processes to end") -> None:  # type: ignore[no-untyped-def]
    """Wait until every process in ``pids`` has ended (a zombie counts as ended), on each one's pidfd: the
    kernel wakes the wait when the process exits, nothing is polled. Raise TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        try:
            fd = os.pidfd_open(int(pid))
        except ProcessLookupError:
            continue  # already gone
        try:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)
        if not ready:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what} (pid {pid} still runs)")


def group_pids(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.getpgid(int(d)) == pgid:
                    out.append(int(d))
            except OSError:
                continue
    return out


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def cmdline(pid: int) -> bytes:
    """A process's command line as the kernel shows it to everyone (NUL-separated; empty once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class _ReadyServer(uvicorn.Server):
    """uvicorn's server, setting ``ready`` once its startup is over (listening, or given up: see ``started``)."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: Any = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()


class LiveServer:
    """A FastAPI app served by uvicorn on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "LiveServer":
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                                backlog=2048, timeout_keep_alive=30)
        ready = threading.Event()
        self._server = server = _ReadyServer(config, ready)

        def run() -> None:
            try:
                server.run()
            finally:
                ready.set()  # ended before its startup was over (the app failed to load): stop waiting

        self._thread = threading.Thread(target=run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise TimeoutError(f"uvicorn did not start on port {self.port} within 30 s")
        if not server.started:
            raise RuntimeError(f"uvicorn could not start on port {self.port} (see its log above)")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(15)  # type: ignore[union-attr]

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class ServeProcess:
    """``deepsift serve`` in a child process (the real command line), stopped by SIGTERM (SIGKILL if stuck)."""

    def __init__(self, database_url: str, data_dir: str | os.PathLike, port: int | None = None,
                 extra_env: dict[str, str] | None = None, args: tuple[str, ...] = (), scoring_workers: int = 0) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DEEPSIFT_SECRET_KEY": TEST_SECRET, "DEEPSIFT_LOGIN_RATE": "1000/minute", "DEEPSIFT_LOGIN_ACCOUNT_RATE": "1000/minute",
                    "DEEPSIFT_SUBMIT_RATE": "100000/minute", "DEEPSIFT_API_RATE": "1000000/minute",
                    "DEEPSIFT_CHALLENGES_SERVE_WORKERS": str(scoring_workers), **(extra_env or {})}
        self.cmd = [sys.executable, "-m", "deepsift", "serve", "--port", str(self.port), "--data-dir", str(data_dir),
                    "--database-url", database_url, "--log-level", "warning", *args]
        self.log_path = Path(data_dir).parent / f"serve-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> "ServeProcess":
        """Start the process and wait for its "listening" line (it takes connections from then on)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._listening = False
        self._settled = threading.Event()  # set at the listening line, or when the output ends first
        self._output_done = threading.Event()
        self._reader = threading.Thread(target=self._copy_output, name=f"serve-{self.port}-output", daemon=True)
        self._reader.start()
        if not self._settled.wait(timeout):
            raise TimeoutError(f"deepsift serve said no listening line within {timeout:g} s: {self.log()[-2000:]}")
        if not self._listening:  # its output ended: the process exited before it listened
            code = self.proc.wait(30)
            raise RuntimeError(f"deepsift serve exited ({code}) before listening: {self.log()[-2000:]}")
        return self

    def _copy_output(self) -> None:
        """Copy the process's output (and its workers', which share it) into the log file line by line; settle
        ``start`` at the listening line, or when the output ends (every writer exited) without one."""
        from deepsift.server.cli import LISTENING

        ready = f"{LISTENING}{self.url}".encode()
        try:
            with open(self.log_path, "ab") as log:
                for line in iter(self.proc.stdout.readline, b""):  # type: ignore[union-attr]
                    log.write(line)
                    log.flush()
                    if not self._listening and line.startswith(ready):
                        self._listening = True
                        self._settled.set()
        finally:
            self._output_done.set()
            self._settled.set()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_reader", None) is not None and self._output_done.wait(15):  # every writer has exited:
            self.proc.stdout.close()  # type: ignore[union-attr]  # the log is whole

    def __enter__(self) -> "ServeProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
