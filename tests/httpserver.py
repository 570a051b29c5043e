"""A tiny HTTP server on 127.0.0.1 for URL tests: routes are bytes or callables, in a thread."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

Route = tuple[int, str, bytes]


def read_head(sock) -> bytes:  # type: ignore[no-untyped-def]
    """An HTTP message head read from ``sock`` up to its blank line, or what came before the peer closed."""
    out = b""
    while b"\r\n\r\n" not in out:
        chunk = sock.recv(4096)
        if not chunk:
            break
        out += chunk
    return out


class LocalServer:
    """Serve ``routes`` (path -> (status, content-type, body) or a callable returning one)."""

    def __init__(self, routes: dict[str, Route | Callable[[], Route]]) -> None:
        self.routes = routes
        self.release = threading.Event()  # set to let slow handlers finish
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                server.hits[path] = server.hits.get(path, 0) + 1
                route = server.routes.get(path)
                if route is None:
                    status, ctype, body = 404, "text/plain", b"not found"
                else:
                    status, ctype, body = route() if callable(route) else route
                try:
                    self.send_response(status)
                    if status in (301, 302):
                        self.send_header("Location", body.decode())
                        body = b""
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def slow(self, route: Route) -> Callable[[], Route]:
        """A route that answers only once :attr:`release` is set (or after 30 s)."""
        def handler() -> Route:
            self.release.wait(30)
            return route
        return handler

    def __enter__(self) -> "LocalServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class DripServer:
    """An HTTP server on 127.0.0.1 that answers every GET with headers, then one body byte every
    ``interval`` seconds until :attr:`release` is set (a slow-loris image URL)."""

    def __init__(self, interval: float = 1.0) -> None:
        import socket

        self.interval = interval
        self.release = threading.Event()
        self.dripping = 0  # connections now dripping
        self.cond = threading.Condition()
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def wait_dripping(self, n: int, timeout: float) -> bool:
        """Block until ``n`` connections are dripping at once; False on timeout."""
        with self.cond:
            return self.cond.wait_for(lambda: self.dripping >= n, timeout)

    def _accept(self) -> None:
        while not self.release.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn) -> None:  # type: ignore[no-untyped-def]
        with conn:
            try:
                if b"\r\n\r\n" not in read_head(conn):
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n")
                with self.cond:
                    self.dripping += 1
                    self.cond.notify_all()
                try:
                    while not self.release.wait(self.interval):
                        conn.sendall(b"\xff")
                finally:
                    with self.cond:
                        self.dripping -= 1
            except OSError:
                return

    def __enter__(self) -> "DripServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.sock.close()
