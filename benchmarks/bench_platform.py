"""Speed and integrity of the benchmark platform, on loopback, with the real server and workers.

    python benchmarks/bench_platform.py                 # both parts, SQLite and PostgreSQL
    python benchmarks/bench_platform.py --part load --db sqlite --seconds 20 --clients 20   # shorter
    python benchmarks/bench_platform.py --part million
    python benchmarks/bench_platform.py --part memory [--quick]   # no server, no database

Targets (issue 10):
* ``load``: 50 concurrent clients submitting predictions and polling for 60 s: 0 lost or duplicated
  submissions; p50/p95 API latency (baseline: GET /healthz under the same load, same process).
* ``million``: a 1 M-row predictions file end to end (upload, validation, scoring) <= 5 s (baseline:
  the bare minimum in this process: parse the same file with pyarrow and compute the metrics once).
* ``memory`` (issue 17): peak RSS of validating a 200 MiB hostile predictions file (too many rows,
  one endless line, a huge JSON object, ...) vs a valid file of the test set's size, each in a fresh
  process: ratio <= 1.5.

The server is ``deepsift serve`` and the workers ``deepsift challenges worker`` processes (2 by
default); PostgreSQL is a throwaway server (tests/pgserver.py, Debian's postgresql). Run as root
inside ``unshare -n`` (scripts/test.sh does the same for the tests) or on an idle machine.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # pgserver, serverkit: the same helpers the tests use


def _cmd(*args: str, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "deepsift", *args], env={**os.environ, **(env or {})},
                            stdout=out, stderr=subprocess.STDOUT)


def _run(*args: str, stdin: str | None = None) -> None:
    subprocess.run([sys.executable, "-m", "deepsift", *args], input=stdin, text=True, check=True,
                   stdout=subprocess.DEVNULL)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


class Platform:
    """A data folder, a database, `deepsift serve`, workers, a hosted challenge with a labels-only test set."""

    def __init__(self, root: Path, db: str, n_ids: int, workers: int, bootstrap: int, pg=None) -> None:  # type: ignore[no-untyped-def]
        self.root, self.db_kind = root, db
        self.data = root / "data"
        self.url = pg.url if pg else f"sqlite:///{root / 'bench.db'}"
        env = {"DEEPSIFT_LOGIN_RATE": "100000/minute", "DEEPSIFT_SUBMIT_RATE": "1000000/minute",
               "DEEPSIFT_API_RATE": "10000000/minute", "DEEPSIFT_SECRET_KEY": "bench",
               "DEEPSIFT_CHALLENGES_MAX_PREDICTIONS_MB": "400", "DEEPSIFT_MAX_UPLOAD_MB": "500",
               "DEEPSIFT_CHALLENGES_SERVE_WORKERS": "0"}  # the workers are started below, counted
        os.environ.update(env)
        dbargs = ["--database-url", self.url, "--data-dir", str(self.data)]
        _run("admin", "add-user", "host", "--role", "host", "--password-stdin", *dbargs, stdin="host-password\n")
        self.ids = [f"img{i:07d}.png" for i in range(n_ids)]
        rng = np.random.default_rng(0)
        self.labels = rng.integers(0, 2, n_ids)
        gens = np.where(self.labels == 1, np.where(rng.random(n_ids) < 0.5, "sdxl", "sd21"), "real")
        key = root / "key.csv"
        with open(key, "w") as fh:
            fh.write("id,label,generator,transformed\n")
            fh.writelines(f"{i},{y},{g},{k % 2}\n" for k, (i, y, g) in enumerate(zip(self.ids, self.labels, gens)))
        (root / "spec.yaml").write_text(f"""
slug: bench
title: Benchmark
phases:
  - slug: dev
    starts: 2020-01-01T00:00:00Z
    ends: 2099-01-01T00:00:00Z
    bootstrap: {bootstrap}
    testset: {{source: labels, labels: key.csv}}
""")
        _run("challenges", "create", str(root / "spec.yaml"), "--host-user", "host", *dbargs)
        port = __import__("pgserver").free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.server = _cmd("serve", "--port", str(port), *dbargs, "--log-level", "warning", log=root / "serve.log")
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.server.poll() is not None:
                raise RuntimeError("deepsift serve did not start: " + (root / "serve.log").read_text()[-2000:])
            time.sleep(0.2)
        self.workers = [_cmd("challenges", "worker", *dbargs, "--poll-seconds", "0.05", "--name", f"w{i}",
                             log=root / f"worker{i}.log") for i in range(workers)]
        for i in range(workers):  # measured runs start once every worker says it is ready
            while "ready" not in (root / f"worker{i}.log").read_text():
                if time.monotonic() > deadline + 120 or self.workers[i].poll() is not None:
                    raise RuntimeError("a worker did not start: " + (root / f"worker{i}.log").read_text()[-2000:])
                time.sleep(0.2)

    def user(self, name: str) -> str:
        httpx.post(self.base + "/api/auth/register", json={"username": name, "password": "password-123"})
        tok = httpx.post(self.base + "/api/auth/token", json={"username": name, "password": "password-123"}).json()["token"]
        httpx.post(self.base + "/api/challenges/bench/teams", json={"name": f"team {name}"},
                   headers={"Authorization": f"Bearer {tok}"})
        return tok

    def predictions(self, path: Path, noise: float, seed: int) -> Path:
        rng = np.random.default_rng(seed)
        s = np.clip(0.3 + 0.4 * self.labels + rng.normal(0, noise, len(self.ids)), 0, 1)
        with open(path, "w") as fh:
            fh.write("id,score\n")
            fh.writelines(f"{i},{v:.6f}\n" for i, v in zip(self.ids, s))
        return path

    def close(self) -> None:
        for p in [*self.workers, self.server]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [*self.workers, self.server]:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def bench_load(db: str, clients: int, seconds: float, workers: int, pg=None) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from deepsift.challenges.models import Submission, SubmissionEvent
    from deepsift.server.db import Database

    with tempfile.TemporaryDirectory(prefix="bench-platform-") as d:
        plat = Platform(Path(d), db, n_ids=500, workers=workers, bootstrap=50, pg=pg)
        try:
            tokens = [plat.user(f"client{i}") for i in range(clients)]
            files = [plat.predictions(Path(d) / f"p{i % 5}.csv", 0.2 + 0.05 * (i % 5), i) for i in range(5)]
            lat: dict[str, list[float]] = {"submit": [], "status": [], "leaderboard": [], "healthz": []}
            accepted: list[list[str]] = [[] for _ in range(clients)]
            errors: list[str] = []
            lock = threading.Lock()
            stop = time.monotonic() + seconds

            def client(k: int) -> None:
                h = {"Authorization": f"Bearer {tokens[k]}"}
                with httpx.Client(base_url=plat.base, headers=h, timeout=120) as c:
                    n = 0
                    while time.monotonic() < stop:
                        def timed(kind: str, fn):  # type: ignore[no-untyped-def]
                            t = time.perf_counter()
                            r = fn()
                            with lock:
                                lat[kind].append(time.perf_counter() - t)
                            if r.status_code >= 400:
                                errors.append(f"{kind} {r.status_code} {r.text[:100]}")
                            return r
                        if n % 4 == 0:
                            key = f"bench-c{k}-{n}-{os.getpid()}"
                            with open(files[k % 5], "rb") as fh:
                                r = timed("submit", lambda: c.post("/api/challenges/bench/phases/dev/submissions",
                                                                   files={"file": ("p.csv", fh)},
                                                                   headers={"Idempotency-Key": key}))
                            if r.status_code == 201:
                                accepted[k].append(r.json()["id"])
                        elif n % 4 == 3:
                            timed("leaderboard", lambda: c.get("/api/challenges/bench/phases/dev/leaderboard"))
                        else:
                            sid = accepted[k][-1] if accepted[k] else None
                            if sid:
                                timed("status", lambda: c.get(f"/api/submissions/{sid}"))
                        timed("healthz", lambda: c.get("/healthz"))
                        n += 1

            threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.monotonic() - t0
            ids = [i for a in accepted for i in a]
            database = Database(plat.url)
            try:
                drain_start = time.monotonic()
                while True:
                    with database.session() as s:
                        pending = s.scalar(select(func.count()).select_from(Submission).where(
                            (Submission.state != "scored") | (Submission.intervals_done.is_(False))))
                    if pending == 0 or time.monotonic() - drain_start > 600:
                        break
                    time.sleep(0.5)
                drain = time.monotonic() - drain_start
                with database.session() as s:
                    in_db = s.scalars(select(Submission.id)).all()
                    states = dict(s.execute(select(Submission.state, func.count()).group_by(Submission.state)).all())
                    scored_events = s.scalars(select(SubmissionEvent.submission_id)
                                              .where(SubmissionEvent.state == "scored")).all()
            finally:
                database.dispose()
            lost = len(set(ids) - set(in_db))
            dup = len(ids) - len(set(ids)) + (len(in_db) - len(set(ids)))
            twice = len(scored_events) - len(set(scored_events))
            api = lat["submit"] + lat["status"] + lat["leaderboard"]
            print(f"load [{db}]: {clients} clients x {wall:.0f} s, {workers} workers: {len(ids)} submissions accepted, "
                  f"{len(in_db)} in the database, lost {lost}, duplicated {dup}, scored twice {twice}, "
                  f"states {states}, queue drained {drain:.1f} s after the clients stopped, {len(errors)} error answers")
            for kind in ("submit", "status", "leaderboard"):
                v = lat[kind]
                print(f"  {kind:12s} n={len(v):6d}  p50 {_pct(v, 50):7.1f} ms  p95 {_pct(v, 95):7.1f} ms")
            base50, base95 = _pct(lat["healthz"], 50), _pct(lat["healthz"], 95)
            print(f"  {'all API':12s} n={len(api):6d}  p50 {_pct(api, 50):7.1f} ms  p95 {_pct(api, 95):7.1f} ms  "
                  f"| baseline GET /healthz p50 {base50:.1f} ms p95 {base95:.1f} ms; ratio p95 {_pct(api, 95) / base95:.2f}")
            if errors:
                print("  first errors:", errors[:3])
                log = [ln for ln in (Path(d) / "serve.log").read_text().splitlines() if "unavailable" in ln]
                print("  server log:", log[:3])
        finally:
            plat.close()


def bench_million(db: str, n: int, pg=None) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.csv as pacsv

    from deepsift.evaluate.metrics import compute_metrics

    with tempfile.TemporaryDirectory(prefix="bench-platform-") as d:
        t_setup = time.perf_counter()
        plat = Platform(Path(d), db, n_ids=n, workers=1, bootstrap=100, pg=pg)
        try:
            tok = plat.user("million")
            preds = plat.predictions(Path(d) / "million.csv", 0.25, 1)
            size = preds.stat().st_size
            print(f"million [{db}]: set-up (key of {n:,} ids, server, worker) {time.perf_counter() - t_setup:.1f} s; "
                  f"file {size / 1e6:.1f} MB")
            times = []
            with httpx.Client(base_url=plat.base, headers={"Authorization": f"Bearer {tok}"}, timeout=300) as c:
                for rep in range(2):  # the first also warms the server's key cache
                    t = time.perf_counter()
                    with open(preds, "rb") as fh:
                        r = c.post("/api/challenges/bench/phases/dev/submissions", files={"file": ("m.csv", fh)})
                    r.raise_for_status()
                    t_upload = time.perf_counter() - t
                    sid = r.json()["id"]
                    while (sub := c.get(f"/api/submissions/{sid}").json())["state"] not in ("scored", "failed"):
                        time.sleep(0.02)
                    t_scored = time.perf_counter() - t
                    while not (sub := c.get(f"/api/submissions/{sid}").json())["intervals"] == "done":
                        time.sleep(0.05)
                    t_ci = time.perf_counter() - t
                    times.append((t_upload, t_scored, t_ci))
                    print(f"  run {rep + 1}: upload + validation answered in {t_upload:.2f} s; scored after "
                          f"{t_scored:.2f} s (target <= 5 s); with 100-resample intervals {t_ci:.2f} s; "
                          f"state {sub['state']}, public AUROC {sub['public_score']:.4f}")
            t = time.perf_counter()
            table = pacsv.read_csv(preds)
            s = table["score"].to_numpy()
            compute_metrics(plat.labels, s)
            bare = time.perf_counter() - t
            best = min(x[1] for x in times)
            print(f"  baseline (same process: pyarrow parse + all metrics once, no HTTP, no checks, no parts): "
                  f"{bare:.2f} s; ratio end-to-end / baseline {best / bare:.1f}")
        finally:
            plat.close()


MEMORY_CHILD = r"""
import resource, sys, time
from pathlib import Path
from deepsift.challenges.predictions import validate
from deepsift.challenges.testsets import load_key
from deepsift.exceptions import InvalidInputError
key, path = load_key(Path(sys.argv[1])), Path(sys.argv[2])
t = time.perf_counter()
try:
    validate(path, key, path.name)
    out = "accepted"
except InvalidInputError as exc:
    out = "422 " + str(exc)[:110]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t, out, sep="\t")
"""


def _fill(path: Path, head: bytes, row: bytes, size: int, tail: bytes = b"") -> Path:
    """``head`` + ``row`` repeated up to ``size`` bytes + ``tail``, written in large blocks."""
    with open(path, "wb") as fh:
        fh.write(head)
        block = row * max(1, (8 << 20) // len(row))
        left = size - len(head) - len(tail)
        while left > 0:
            fh.write(block[:left])
            left -= len(block)
        fh.write(tail)
    return path


def bench_memory(n: int, mib: int, quick: bool, code: str) -> None:
    """Peak RSS of validating hostile ``mib`` MiB predictions files vs a valid file of the test set's size."""
    from deepsift.challenges.testsets import write_key

    env = {**os.environ, "PYTHONPATH": code}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as d:
        root = Path(d)
        ids = [f"{i:016x}.png" for i in range(n)]  # the platform's random 16-hex-digit names
        write_key(root / "key.parquet", ids, np.arange(n) % 2, ["real", "sdxl"] * (n // 2) + ["real"] * (n % 2),
                  [False] * n, np.arange(n) % 2 == 0)
        valid = "id,score,label\n" + "".join(f"{k},{(i % 997) / 997!r},{i % 2}\n" for i, k in enumerate(ids))
        jsonl = "".join(f'{{"id": "{k}", "score": 0.5}}\n' for k in ids)
        size = mib << 20
        cases = [("valid.csv", lambda p: p.write_text(valid)),
                 ("too-many-rows.csv", lambda p: _fill(p, valid.encode(), b"ffffffffffffffff.png,0.5,1\n", size)),
                 ("one-line.csv", lambda p: _fill(p, b"id,score\n", b"x", size)),
                 ("json-object.json", lambda p: _fill(p, b"{", b'"0000000000000000.png": 1, ', size, b'"z": 1}'))]
        def at_cap(p: Path) -> None:  # n rows, each padded so that the file is just under the size cap
            import pyarrow as pa

            from deepsift.evaluate.scorefiles import size_cap

            pad = (size_cap(pa.array(ids)) - 16) // n - len(ids[0]) - 5
            p.write_text("id,score\n" + "".join(f"{k}{'x' * pad},0.5\n" for k in ids))

        def wide(p: Path) -> None:  # rows of 4,000 columns each, as many as fit under the size cap
            import pyarrow as pa

            from deepsift.evaluate.scorefiles import size_cap

            row = '{"id": "%s", "score": 0.5, ' + ", ".join(f'"c{i}": 1' for i in range(4000)) + "}\n"
            p.write_text("".join(row % k for k in ids[:size_cap(pa.array(ids)) // len(row % ids[0]) - 1]))

        cases.append(("at-the-size-cap.csv", at_cap))
        if not quick:
            cases += [("unknown-ids.csv", lambda p: _fill(p, b"id,score\n", b"not-in-the-test-set.png,0.5\n", size)),
                      ("padded-rows.csv", lambda p: _fill(p, b"id,score\n", b"0000000000000000.png," + b" " * 2000
                                                          + b"0.5\n", size)),
                      ("too-many-rows.jsonl", lambda p: _fill(p, jsonl.encode(), b'{"id": "x", "score": 0.5}\n', size)),
                      ("wide-rows.jsonl", wide)]
        print(f"memory: a test set of {n:,} ids; hostile files of {mib} MiB; each validated in a fresh process "
              f"(predictions.validate, the server's path); peak RSS by getrusage")
        base = None
        for name, make in cases:
            path = root / name
            make(path)
            # through a shell that forks: a child started from this process directly would report
            # this process's peak too (Linux carries ru_maxrss over the exec of a forked copy)
            r = subprocess.run(["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-c", MEMORY_CHILD, str(root),
                                str(path)], env=env, cwd=d, capture_output=True, text=True)
            path.unlink()
            if r.returncode:
                print(f"  {name}: the child failed ({r.returncode}): {r.stderr.strip()[-300:]}")
                continue
            rss, secs, out = r.stdout.strip().split("\t", 2)
            peak = int(rss) / 1024
            base = base or peak
            print(f"  {name:22s} peak RSS {peak:7.1f} MiB  ratio {peak / base:4.2f} (target <= 1.5)  "
                  f"{float(secs):5.2f} s  {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("load", "million", "memory", "all"), default="all")
    ap.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--ids", type=int, default=100_000, help="memory: the test set's size")
    ap.add_argument("--mib", type=int, default=200, help="memory: the hostile files' size")
    ap.add_argument("--quick", action="store_true", help="memory: 20,000 ids, three hostile files")
    ap.add_argument("--code", default=str(REPO), help="memory: the checkout to measure (e.g. an older one)")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    if args.part in ("memory", "all"):
        bench_memory(20_000 if args.quick else args.ids, args.mib, args.quick, args.code)
        if args.part == "memory":
            return
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    for kind in kinds:
        pg = None
        if kind == "postgresql":
            from pgserver import PgServer

            pg = PgServer(tempfile.mkdtemp(prefix="bench-pg-")).start()
        try:
            if args.part in ("load", "all"):
                if pg:
                    pg.reset_database()
                bench_load(kind, args.clients, args.seconds, args.workers, pg)
            if args.part in ("million", "all"):
                if pg:
                    pg.reset_database()
                bench_million(kind, args.rows, pg)
        finally:
            if pg:
                pg.destroy()
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
