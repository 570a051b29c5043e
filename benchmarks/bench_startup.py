"""Start-up time of the command line: ``deepsift --help``, ``--version``, ``data info`` and the platform.

Targets (issue 7): ``deepsift --help`` < 0.5 s and ``data info`` on a small shard < 1.5 s. Each command
runs in a fresh process ``--rounds`` times; the figure is the median wall time. Baselines measured in
the same run: the bare interpreter (``python -c pass``), the import of the detector stack (torch +
transformers: what every command loaded up front before the imports were made lazy) and the import
of the server app (FastAPI + SQLAlchemy + argon2: what ``deepsift --help`` loaded while the server
package imported its app eagerly).

The platform (``--platform``, on by default): ``deepsift serve --help`` and ``challenges submit
--help`` (same target as ``--help``); ``deepsift serve`` until ``/healthz`` answers, on a migrated
SQLite database; ``deepsift challenges worker`` until it says it is ready; and the client command
``deepsift challenges leaderboard`` against that server (a whole round trip). Those three have no
target in the issues; they are printed against the server-app and detector-stack baselines.

    python benchmarks/bench_startup.py [--rounds 7] [--records 50] [--no-platform]
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable


def timed(argv: list[str], rounds: int) -> float:
    """Median wall time of ``argv`` in a fresh process (it must exit 0)."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return statistics.median(times)


def timed_until(argv: list[str], ready: Callable[[subprocess.Popen, Path], bool], rounds: int, log: Path,
                env: dict | None = None) -> float:
    """Median wall time from starting ``argv`` (a server or worker) until ``ready``; then it is stopped."""
    times = []
    for _ in range(rounds):
        with open(log, "wb") as out:
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
            try:
                while not ready(proc, log):
                    if proc.poll() is not None or time.perf_counter() - t0 > 300:
                        raise SystemExit(f"{' '.join(argv)} did not start: {log.read_text()[-1500:]}")
                    time.sleep(0.01)
                times.append(time.perf_counter() - t0)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return statistics.median(times)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    """Whether ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def platform_rows(py: str, tmp: Path, rounds: int) -> list[tuple[str, float, float | None]]:
    """(label, median seconds, target) of the platform's commands, on a fresh SQLite platform in ``tmp``."""
    ds = [py, "-m", "deepsift"]
    db = ["--data-dir", str(tmp / "data"), "--database-url", f"sqlite:///{tmp / 'p.db'}"]
    env = {"DEEPSIFT_SECRET_KEY": "bench", "DEEPSIFT_CHALLENGES_SERVE_WORKERS": "0", "DEEPSIFT_API_RATE": "100000/minute"}
    os.environ.update(env)
    subprocess.run([*ds, "admin", "add-user", "host", "--role", "host", "--password-stdin", *db], input="host-pw-1\n",
                   text=True, check=True, capture_output=True)
    (tmp / "key.csv").write_text("id,label\n" + "".join(f"i{k},{k % 2}\n" for k in range(20)))
    (tmp / "spec.yaml").write_text("slug: bench\ntitle: Bench\nphases:\n  - slug: dev\n    starts: 2020-01-01T00:00:00Z\n"
                                   "    ends: 2099-01-01T00:00:00Z\n    testset: {source: labels, labels: key.csv}\n")
    subprocess.run([*ds, "challenges", "create", str(tmp / "spec.yaml"), "--host-user", "host", *db], check=True,
                   capture_output=True)
    rows: list[tuple[str, float, float | None]] = [
        ("deepsift serve --help", timed([*ds, "serve", "--help"], rounds), 0.5),
        ("deepsift challenges submit --help", timed([*ds, "challenges", "submit", "--help"], rounds), 0.5),
    ]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [*ds, "serve", "--port", str(port), *db, "--log-level", "warning"]
    rows.append(("deepsift serve until /healthz answers",
                 timed_until(serve, lambda p, log: answers(url + "/healthz"), rounds, tmp / "serve.log"), None))
    worker = [*ds, "challenges", "worker", *db, "--poll-seconds", "0.05"]
    rows.append(("deepsift challenges worker until ready",
                 timed_until(worker, lambda p, log: b"ready" in log.read_bytes(), rounds, tmp / "worker.log"), None))
    server = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not answers(url + "/healthz"):
            if server.poll() is not None:
                raise SystemExit("deepsift serve did not start")
            time.sleep(0.05)
        rows.append(("deepsift challenges leaderboard (client, one call)",
                     timed([*ds, "challenges", "leaderboard", "--server", url, "--challenge", "bench", "--phase",
                            "dev"], rounds), None))
    finally:
        server.terminate()
        server.wait(30)
    return rows


def small_shard(folder: Path, records: int) -> Path:
    """A D3 shard of ``records`` records with two tiny generated images each."""
    import io

    import numpy as np
    from PIL import Image

    from deepsift.data.schema import D3Record, Generation
    from deepsift.data.writer import write_shard

    rng = np.random.default_rng(0)

    def png() -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    recs = [D3Record(f"{i:06d}", f"prompt {i}", f"prompt {i}", None, f"http://example.org/{i}.jpg",
                     [Generation(m, 32, 32, 20, f"{m}/{i}.png", png()) for m in ("sd-1-4", "sd-2-1")])
            for i in range(records)]
    path = folder / "d3-00000.parquet"
    write_shard(recs, path, n_generators=2)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7, help="runs per command (median)")
    ap.add_argument("--records", type=int, default=50, help="records in the small shard")
    ap.add_argument("--no-platform", dest="platform", action="store_false", help="skip serve / challenges")
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        shard = small_shard(Path(tmp), args.records)
        bare = timed([py, "-c", "pass"], args.rounds)
        stack = timed([py, "-c", "import deepsift.model.detector"], args.rounds)
        server = timed([py, "-c", "import deepsift.server.app"], args.rounds)
        rows = [
            ("deepsift --help", timed([py, "-m", "deepsift", "--help"], args.rounds), 0.5),
            ("deepsift --version", timed([py, "-m", "deepsift", "--version"], args.rounds), 0.5),
            (f"deepsift data info ({args.records}-record shard)",
             timed([py, "-m", "deepsift", "data", "info", str(shard)], args.rounds), 1.5),
        ]
        if args.platform:
            (Path(tmp) / "platform").mkdir()
            rows += platform_rows(py, Path(tmp) / "platform", args.rounds)
        print(f"baseline: bare interpreter (python -c pass)            {bare:6.3f} s")
        print(f"baseline: import torch + transformers (old eager CLI)   {stack:6.3f} s")
        print(f"baseline: import deepsift.server.app (FastAPI, SQLAlchemy) {server:6.3f} s")
        for label, t, target in rows:
            verdict = f"target < {target:.1f} s ({'ok' if t < target else 'OVER TARGET'}); " if target else ""
            print(f"{label:52s} {t:6.3f} s  {verdict}{t / bare:5.1f}x bare python; {t / server:4.2f}x the server-app "
                  f"import; {stack / t:5.1f}x faster than loading the detector stack")


if __name__ == "__main__":
    main()
