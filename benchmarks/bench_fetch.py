"""Benchmark the real-image fetcher against a loopback HTTP server (small JPEGs, 64 concurrent).

Targets (issue 3): >= 300 images/s on the first run, and the resumed re-run >= 50x faster.
Also (issue 8): the same first run under the strict URL policy (every connection's address
checked, 127.0.0.1 allowed as an exception so that the loopback server stands in for the web)
against the user policy the CLI uses: the cost of the checks, as a ratio.

    python benchmarks/bench_fetch.py [--quick] [--n 3000]
"""
from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image


def _jpeg(seed: int) -> bytes:
    """A small (64x64) JPEG."""
    arr = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _serve(port_q: mp.Queue, stop: mp.Event) -> None:
    """Serve the same small JPEG for every path, HTTP/1.1 keep-alive, until ``stop``."""
    body = _jpeg(0)

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # listen() backlog: must be set before the socket listens
        daemon_threads = True

    srv = Server(("127.0.0.1", 0), H)
    import threading

    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port_q.put(srv.server_address[1])
    stop.wait()
    srv.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print figures and ratios."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--quick", action="store_true", help="1000 images")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2, help="strict/user policy rounds after the first run (default 2)")
    args = ap.parse_args(argv)
    n = 1000 if args.quick else args.n

    from deepsift.data.fetch import Fetcher, FetchConfig
    from deepsift.urlfetch import USER_POLICY, FetchPolicy

    port_q: mp.Queue = mp.Queue()
    stop = mp.Event()
    proc = mp.Process(target=_serve, args=(port_q, stop), daemon=True)
    proc.start()
    try:
        port = port_q.get(timeout=30)
        items = [(str(i), f"http://127.0.0.1:{port}/img/{i}.jpg") for i in range(n)]
        cfg = FetchConfig(concurrency=args.concurrency, per_host=args.concurrency, timeout=30, trust_env=False,
                          url_policy=USER_POLICY)
        strict = FetchConfig(concurrency=args.concurrency, per_host=args.concurrency, timeout=30, trust_env=False,
                             url_policy=FetchPolicy(allow_networks=("127.0.0.1/32",)))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "real"
            t0 = time.perf_counter()
            first = Fetcher(out, cfg).run(items, total=n, progress=False)
            t_first = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = Fetcher(out, cfg).run(items, total=n, progress=False)
            t_again = time.perf_counter() - t0
            t_user, t_strict = [t_first], []
            for r in range(args.rounds):  # alternate, so that load from other processes hits both alike
                for config, times in ((strict, t_strict), (cfg, t_user)):
                    t0 = time.perf_counter()
                    got = Fetcher(Path(tmp) / f"round{r}-{len(times)}-{id(config)}", config).run(items, total=n,
                                                                                              progress=False)
                    times.append(time.perf_counter() - t0)
                    assert got.statuses["ok"] == n, got.statuses
        assert first.statuses["ok"] == n, first.statuses
        assert again.skipped == n and again.fetched == 0
    finally:
        stop.set()
        proc.join(10)
    rate = n / t_first
    print(f"fetch first run : {n} images in {t_first:.2f} s = {rate:.0f} images/s "
          f"(target >= 300/s: {'PASS' if rate >= 300 else 'FAIL'}, {rate / 300:.2f}x target)")
    print(f"fetch resumed   : {n} ids checked in {t_again:.3f} s = {n / t_again:.0f} ids/s; "
          f"speed-up {t_first / t_again:.0f}x (target >= 50x: {'PASS' if t_first / t_again >= 50 else 'FAIL'})")
    best_user, best_strict = min(t_user), min(t_strict)
    print(f"strict policy   : best of {len(t_strict)}: {n / best_strict:.0f} images/s vs {n / best_user:.0f}/s under the "
          f"user policy (best of {len(t_user)}): {best_user / best_strict:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
