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
import re
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


class LineWaiter:
    """The output of processes, read line by line in a thread per pipe and kept (every line, from the start):
    a test waits on a line a process *announces* ("job X scored"), never polls for a state.

    The threads drain each pipe to its end, so a process never blocks on a full pipe. A wait wakes at each new
    line (a condition variable), checks every line read so far (a line that came before the wait counts), and
    raises TimeoutError naming what it waited for, with the last lines."""

    def __init__(self, copy_to: Path | None = None) -> None:
        self.lines: list[str] = []
        self.copy_to = copy_to
        self._cond = threading.Condition()
        self._open = 0  # pipes not read to their end yet
        self._threads: list[threading.Thread] = []

    def follow(self, stream: Any, tag: str = "") -> "LineWaiter":
        """Read ``stream`` (a binary pipe) to its end in a thread; its lines are kept as ``[tag] line`` when tagged."""
        with self._cond:
            self._open += 1
        t = threading.Thread(target=self._read, args=(stream, f"[{tag}] " if tag else ""), daemon=True,
                             name=f"lines-{tag or len(self._threads)}")
        self._threads.append(t)
        t.start()
        return self

    def _read(self, stream: Any, prefix: str) -> None:
        log = open(self.copy_to, "ab") if self.copy_to else None
        try:
            for raw in iter(stream.readline, b""):
                if log:
                    log.write(raw)
                    log.flush()
                with self._cond:
                    self.lines.append(prefix + raw.decode(errors="replace").rstrip("\r\n"))
                    self._cond.notify_all()
        finally:
            if log:
                log.close()
            with self._cond:
                self._open -= 1
                self._cond.notify_all()

    @property
    def ended(self) -> bool:
        """True once every followed pipe was read to its end (every writer closed it: the processes exited)."""
        with self._cond:
            return self._open == 0

    def wait(self, found, timeout: float, what: str):  # type: ignore[no-untyped-def]
        """Wait until ``found(lines)`` is truthy (returned), checked at each new line; TimeoutError after ``timeout`` s,
        RuntimeError when every pipe ended first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = found(self.lines)
                if value:
                    return value
                if self._open == 0 and self._threads:
                    raise RuntimeError(f"the output ended without {what}:\n{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}:\n{self.tail()}")
                self._cond.wait(left)

    def wait_line(self, pattern: str, timeout: float, what: str | None = None) -> "re.Match[str]":
        """The first line (read so far or to come) matching the regular expression ``pattern`` (``re.search``)."""
        rx = re.compile(pattern)

        def found(lines: list[str]) -> "re.Match[str] | None":
            return next((m for m in map(rx.search, lines) if m), None)

        return self.wait(found, timeout, what or f"a line matching {pattern!r}")

    def wait_ended(self, timeout: float) -> bool:
        """Wait until every pipe was read to its end; False after ``timeout`` s."""
        with self._cond:
            return self._cond.wait_for(lambda: self._open == 0, timeout)

    def text(self) -> str:
        """Every line read so far."""
        with self._cond:
            return "".join(line + "\n" for line in self.lines)

    def tail(self, n: int = 30) -> str:
        with self._cond:
            return "\n".join(self.lines[-n:])


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


def start_worker(database_url: str, data_dir: str | os.PathLike, name: str, output: LineWaiter,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """A real ``deepsift challenges worker --verbose`` (it announces each job's steps), looking at the queue every
    0.1 s; ``output`` follows what it says, each line tagged ``[name]``."""
    proc = subprocess.Popen([sys.executable, "-m", "deepsift", "challenges", "worker", "--database-url", database_url,
                             "--data-dir", str(data_dir), "--poll-seconds", "0.1", "--name", name, "--verbose"],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output.follow(proc.stdout, name)
    return proc


def _pids_where(test) -> list[int]:  # type: ignore[no-untyped-def]
    """The running processes (from /proc) whose pid passes ``test``; one that ends meanwhile is skipped."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if test(int(d)):
                    out.append(int(d))
            except OSError:
                continue
    return out


def group_pids(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` (from /proc)."""
    return _pids_where(lambda pid: os.getpgid(pid) == pgid)


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    return _pids_where(lambda k: int(Path(f"/proc/{k}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid)


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
        self.output: LineWaiter | None = None

    def start(self, timeout: float = 180) -> "ServeProcess":
        """Start the process and wait for its "listening" line (it takes connections from then on)."""
        from deepsift.server.cli import LISTENING

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.output = LineWaiter(copy_to=self.log_path).follow(self.proc.stdout)  # its workers' output too
        try:
            self.output.wait_line("^" + re.escape(f"{LISTENING}{self.url}"), timeout, "its listening line")
        except TimeoutError:
            raise TimeoutError(f"deepsift serve said no listening line within {timeout:g} s: "
                               f"{self.log()[-2000:]}") from None
        except RuntimeError:  # its output ended: the process exited before it listened
            code = self.proc.wait(30)
            raise RuntimeError(f"deepsift serve exited ({code}) before listening: {self.log()[-2000:]}") from None
        return self

    def wait_line(self, pattern: str, timeout: float, what: str | None = None) -> "re.Match[str]":
        """The first line of the output (its workers' too) matching ``pattern``: see :meth:`LineWaiter.wait_line`."""
        assert self.output is not None, "not started"
        return self.output.wait_line(pattern, timeout, what)

    def log(self) -> str:
        """Everything the process (and its workers) said so far."""
        return self.output.text() if self.output is not None else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.output is not None and self.output.wait_ended(15):  # every writer has exited:
            self.proc.stdout.close()  # type: ignore[union-attr]  # the log is whole

    def __enter__(self) -> "ServeProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
