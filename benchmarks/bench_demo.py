"""Speed of the demo's ``POST /api/v1/detect`` (issue 11) against the bare ``Detector.predict``, side by side.

Builds a random-weight CoDE ViT-Tiny from its config (no network), heads (linear, kNN, SVM and two
per-generator heads) fitted on random embeddings, and one 1024x1024 JPEG; starts the real
``deepsift serve`` (demo domain only, SQLite) in a child process, then measures in one run:

* p50/p95 latency of ``POST /api/v1/detect`` for the JPEG, without and with the heatmap (target
  p95 <= 80 ms and <= 400 ms), each next to the bare ``Detector.predict`` on the same file in this
  process (target overhead ratio p50 API / p50 bare <= 1.2); the heatmap is also set next to its
  own bare work (predict + the crop batch through ``Detector.embed_pixels``);
* throughput (images/s) with 4 concurrent clients, next to the bare predict's sequential rate
  (the server runs one forward pass at a time; requests queued together share it).

The API and the bare calls alternate one by one (API, bare, API, bare, ...) on the same file, so
load drifting on a shared machine hits both alike; after a warm-up of 10 pairs (2 with the heatmap)
there are 5 rounds (``--rounds``) of 60 pairs (``--requests``; ``--heatmap-requests`` 8 with the
heatmap). Printed: each round's API / bare p50 ratio, their median and spread (min-max), API p50
minus bare p50 in ms (the API's fixed per-request cost) per round, and the CPU time per request of
the API path (every thread of the server process from ``/proc/<pid>/task/*/schedstat``, and its
event loop thread alone) beside the bare ``Detector.predict``'s (this process), and the server's
minor page faults per request (memory mapped in anew, e.g. after a heap trim). On oversubscribed
cores torch's OpenMP threads spin-wait for preempted siblings and that counts as CPU too: on a
loaded machine only the event loop's figure means much.

``--profile N`` says where the fixed cost goes (:mod:`demo_profile`): the served event loop under
cProfile (its own CPU clock) for N plain requests, by package, and each step of the route timed
alone next to the bare predict's own decode and classify.

With ``--memory`` (issue 18) it measures memory instead: the server's peak RSS (``VmHWM``, reset
between phases through ``/proc/<pid>/clear_refs``) during one request of 8 black 6000 x 6000 PNGs
with ``heatmap`` and ``preview`` (what the page sends), then during 3 such requests at once
(target: <= 1.5x the peak of one), and the RSS left afterwards.

    python benchmarks/bench_demo.py               # 5 rounds of 60 API / bare pairs (8 with the heatmap)
    python benchmarks/bench_demo.py --quick       # 3 rounds of 12 (4)
    python benchmarks/bench_demo.py --profile 300 # where the API's fixed per-request cost goes
    python benchmarks/bench_demo.py --memory      # peak RSS, 1 vs 3 concurrent 8 x 36 MP requests (Linux)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # serverkit: the same `deepsift serve` runner the tests use
sys.path.insert(0, str(REPO / "benchmarks"))  # demo_profile (--profile)


def build(root: Path) -> tuple[Path, Path, Path]:
    """A random CoDE model, fitted heads and a 1024x1024 JPEG under ``root``."""
    from PIL import Image

    from deepsift.model.backbone import create_backbone, save_backbone
    from deepsift.model.heads import make_head
    from deepsift.model.headset import save_headset

    model = root / "model"
    net = create_backbone(seed=0)
    save_backbone(net, model)
    rng = np.random.default_rng(0)
    dim = int(net.config.hidden_size)
    X = rng.normal(size=(96, dim)).astype(np.float32)
    y = np.r_[np.zeros(48), np.ones(48)].astype(np.int64)
    X[y == 1] += 0.3
    import warnings

    with warnings.catch_warnings():  # random embeddings: the one-class SVM's fit warning says nothing here
        warnings.simplefilter("ignore")
        heads = {k: make_head(k).fit(X, y) for k in ("linear", "knn", "svm")}
    for g, sl in (("gen_a", slice(48, 72)), ("gen_b", slice(72, 96))):
        idx = np.r_[np.arange(48), np.arange(96)[sl]]
        heads[f"linear:{g}"] = make_head("linear").fit(X[idx], y[idx])
    save_headset(heads, root / "heads", model=str(model), embedding_dim=dim)
    small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    image = root / "photo.jpg"
    Image.fromarray(small).resize((1024, 1024), Image.BICUBIC).save(image, quality=90)
    return model, root / "heads", image


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def cpu_ns(pid: int | None = None, main_only: bool = False) -> int:
    """CPU time (ns) the threads of process ``pid`` (this one when None; only its main thread with
    ``main_only``) have run, from their schedstat."""
    if pid is None:
        return time.process_time_ns()
    total = 0
    for task in [Path(f"/proc/{pid}/task/{pid}")] if main_only else Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that just ended
            pass
    return total


def minor_faults(pid: int) -> int:
    """Minor page faults of process ``pid`` so far (memory the kernel had to map in, e.g. after a heap trim)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def rounds_ratio(api: list[list[float]], bare: list[list[float]]) -> list[float]:
    """The per-round p50 ratio API / bare (each round a list of paired request times)."""
    return [statistics.median(a) / statistics.median(b) for a, b in zip(api, bare)]


def paired(first: Callable[[], float], second: Callable[[], float], rounds: int, per: int) -> tuple[list[list[float]], list[list[float]]]:
    """``rounds`` rounds of ``per`` pairs, one by one: first, second, first, second... (load drift hits both)."""
    a: list[list[float]] = []
    b: list[list[float]] = []
    for _ in range(rounds):
        a.append([])
        b.append([])
        for _ in range(per):
            a[-1].append(first())
            b[-1].append(second())
    return a, b


def flat(rows: list[list[float]]) -> list[float]:
    return [x for row in rows for x in row]


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds of 12 pairs (4 with the heatmap)")
    ap.add_argument("--memory", action="store_true", help="peak RSS of 1 vs 3 concurrent 8 x 36 MP requests")
    ap.add_argument("--phases", default="1,3",
                    help="with --memory: concurrent clients per phase, e.g. 1,3,3,3 to see whether memory keeps growing")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (the ratio's median and spread are over them)")
    ap.add_argument("--requests", type=int, default=60, help="API / bare pairs per round without the heatmap")
    ap.add_argument("--heatmap-requests", type=int, default=8, help="API / bare pairs per round with the heatmap")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="instead: where the API's fixed cost goes (N requests to a server under cProfile, and "
                         "each step of the route timed alone)")
    args = ap.parse_args()
    if args.memory:
        memory(tuple(int(c) for c in args.phases.split(",")))
        return
    if args.profile:
        from demo_profile import profile

        profile(build, args.profile)
        return
    rounds, per, per_hm = (3, 12, 4) if args.quick else (args.rounds, args.requests, args.heatmap_requests)
    import httpx

    from deepsift.demo.heatmap import crops
    from deepsift.images import decode_image
    from deepsift.model.detector import Detector
    from serverkit import ServeProcess

    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        root = Path(tmp)
        model, heads, image = build(root)
        data = image.read_bytes()
        det = Detector.load(str(model), heads=heads, workers=1)
        # the limiter still runs on every request (its cost is part of the overhead); only its budget is raised
        env = {"DEEPSIFT_DOMAINS": "demo", "DEEPSIFT_DEMO_MODEL": str(model), "DEEPSIFT_DEMO_HEADS": str(heads),
               "DEEPSIFT_DEMO_DETECT_RATE": "100000/minute", "DEEPSIFT_API_RATE": "100000/minute"}
        with ServeProcess(f"sqlite:///{root / 'bench.db'}", root / "data", extra_env=env) as srv, \
                httpx.Client(base_url=srv.url, timeout=120) as c:
            pid = srv.proc.pid
            loop_cpu = server_cpu = faults = 0  # the server's event loop thread (its main thread), all its threads

            def api(heatmap: bool) -> float:
                nonlocal loop_cpu, server_cpu, faults
                l0, s0, f0 = cpu_ns(pid, main_only=True), cpu_ns(pid), minor_faults(pid)
                for attempt in range(2):  # a kept-alive connection the server closed meanwhile: once more, anew
                    t = time.perf_counter()
                    try:
                        r = c.post("/api/v1/detect", files={"files": ("photo.jpg", data, "image/jpeg")},
                                   data={"heatmap": "true" if heatmap else "false"})
                        break
                    except httpx.RemoteProtocolError:
                        if attempt:
                            raise
                took = time.perf_counter() - t
                if not heatmap:
                    loop_cpu += cpu_ns(pid, main_only=True) - l0
                    server_cpu += cpu_ns(pid) - s0
                    faults += minor_faults(pid) - f0
                assert r.status_code == 200 and r.json()["results"][0]["error"] is None, r.text
                return took

            def bare() -> float:
                t = time.perf_counter()
                det.predict([str(image)])
                return time.perf_counter() - t

            def bare_heatmap() -> float:
                t = time.perf_counter()
                det.predict([str(image)])
                batch, *_ = crops(decode_image(str(image)), 4)
                det.embed_pixels(batch)
                return time.perf_counter() - t

            same = c.post("/api/v1/detect", files={"files": ("photo.jpg", data)}).json()["results"][0]
            assert abs(same["probability"] - det.predict([str(image)])[0].probability) < 1e-9
            for _ in range(10):  # warm up both sides (allocator, torch's thread team, the connection)
                api(False), bare()
            for _ in range(2):
                api(True), bare_heatmap()
            loop_cpu = server_cpu = faults = 0
            t_api, t_bare = paired(lambda: api(False), bare, rounds, per)
            t_hm, t_bare_hm = paired(lambda: api(True), bare_heatmap, rounds, per_hm)
            n = rounds * per
            cpu_bare = 0
            for _ in range(n // 2):  # bare CPU alone (this process also runs the HTTP client during API calls)
                c0 = cpu_ns()
                bare()
                cpu_bare += cpu_ns() - c0
            cpu_bare *= 2

            done = []
            lock = threading.Lock()

            def client_loop(k: int) -> None:
                with httpx.Client(base_url=srv.url, timeout=120) as cc:
                    for _ in range(k):
                        r = cc.post("/api/v1/detect", files={"files": ("photo.jpg", data, "image/jpeg")})
                        assert r.status_code == 200
                        with lock:
                            done.append(1)

            k4 = max(per // 4, 3)
            conc_rates, bare_rates = [], []
            for _ in range(2):  # interleaved: bare, 4 clients, bare, 4 clients; the best of each
                t0 = time.perf_counter()
                for _ in range(2 * k4):
                    det.predict([str(image)])
                bare_rates.append(2 * k4 / (time.perf_counter() - t0))
                done.clear()
                t0 = time.perf_counter()
                threads = [threading.Thread(target=client_loop, args=(k4,)) for _ in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                conc_rates.append(len(done) / (time.perf_counter() - t0))
            conc, bare_rate = max(conc_rates), max(bare_rates)

    print(f"bench_demo: POST /api/v1/detect, one 1024x1024 JPEG, {rounds} rounds of {per} API / bare pairs "
          f"({per_hm} with the heatmap), one by one; random-weight CoDE ViT-Tiny, torch CPU threads "
          f"{__import__('torch').get_num_threads()}; load average {load_before} before, {loadavg()} after")
    rows = [
        ("no heatmap", flat(t_api), flat(t_bare), 80, "Detector.predict"),
        ("heatmap", flat(t_hm), flat(t_bare_hm), 400, "predict + crop batch"),
    ]
    print(f"{'request':<12}{'API p50':>9}{'API p95':>9}{'target p95':>12}{'bare p50':>10}{'bare p95':>10}"
          f"{'ratio p50':>11}{'API - bare':>12}  baseline")
    for name, a, b, target, base in rows:
        print(f"{name:<12}{pct(a, 50):>7.1f}ms{pct(a, 95):>7.1f}ms{'<= ' + str(target) + 'ms':>12}{pct(b, 50):>8.1f}ms"
              f"{pct(b, 95):>8.1f}ms{statistics.median(a) / statistics.median(b):>10.2f}x"
              f"{pct(a, 50) - pct(b, 50):>+10.1f}ms  {base}")
    for name, a, b in (("no heatmap", t_api, t_bare), ("heatmap", t_hm, t_bare_hm)):
        ratios = rounds_ratio(a, b)
        fixed = [pct(x, 50) - pct(y, 50) for x, y in zip(a, b)]
        print(f"{name:<12} API / bare p50 per round: {' '.join(f'{r:.2f}' for r in ratios)} -> median "
              f"{statistics.median(ratios):.2f}x (spread {min(ratios):.2f}-{max(ratios):.2f}; target <= 1.2 on every "
              f"run); API p50 - bare p50 per round: {' '.join(f'{f:+.1f}' for f in fixed)} ms")
    print(f"CPU per request (no heatmap): API server {server_cpu / n / 1e6:.1f} ms, of which its event loop thread "
          f"{loop_cpu / n / 1e6:.1f} ms | bare Detector.predict {cpu_bare / n / 1e6:.1f} ms | ratio "
          f"{server_cpu / max(cpu_bare, 1):.2f}x | server minor page faults {faults / n:.0f} per request")
    print(f"4 concurrent clients: {conc:.1f} images/s   bare Detector.predict sequential: {bare_rate:.1f} images/s   "
          f"bare/API time ratio {bare_rate / conc:.2f} (target <= 1.2)")


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def memory(phases: tuple[int, ...] = (1, 3)) -> None:
    """Peak RSS of the serving process: one request of 8 x 36 MP PNGs, then three at once (more phases: growth?)."""
    import io

    import httpx
    from PIL import Image

    from serverkit import ServeProcess

    buf = io.BytesIO()
    Image.new("RGB", (6000, 6000)).save(buf, "PNG")
    png = buf.getvalue()
    files = [("files", (f"{i}.png", png, "image/png")) for i in range(8)]
    form = {"heatmap": "true", "preview": "true"}
    with tempfile.TemporaryDirectory(prefix="bench-demo-mem-") as tmp:
        root = Path(tmp)
        model, heads, image = build(root)
        env = {"DEEPSIFT_DOMAINS": "demo", "DEEPSIFT_DEMO_MODEL": str(model), "DEEPSIFT_DEMO_HEADS": str(heads),
               "DEEPSIFT_DEMO_DETECT_RATE": "100000/minute", "DEEPSIFT_DEMO_BUSY_WAIT_S": "300"}
        with ServeProcess(f"sqlite:///{root / 'bench.db'}", root / "data", extra_env=env) as srv:
            pid = srv.proc.pid  # one process: uvicorn serves in it

            def post() -> float:
                t = time.perf_counter()
                r = httpx.post(srv.url + "/api/v1/detect", files=files, data=form, timeout=1200)
                assert r.status_code == 200 and all(x["error"] is None for x in r.json()["results"]), r.text[:500]
                return time.perf_counter() - t

            httpx.post(srv.url + "/api/v1/detect", files={"files": ("p.jpg", image.read_bytes())}, timeout=300)
            base = _status_kb(pid, "VmRSS")
            figures = []
            for clients in phases:
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
                times: list[float] = []
                threads = [threading.Thread(target=lambda: times.append(post())) for _ in range(clients)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                peak = _status_kb(pid, "VmHWM")
                time.sleep(2)  # the server hands freed memory back just after its last answer
                figures.append((clients, peak, _status_kb(pid, "VmRSS"), max(times)))
    print(f"bench_demo --memory: requests of 8 black 6000x6000 PNGs ({len(png) * 8 / 1024:.0f} KiB) with heatmap "
          f"and preview; server RSS before: {base / 1024:.0f} MiB")
    print(f"{'clients':>8}{'peak RSS':>11}{'RSS after':>11}{'kept':>9}{'slowest':>9}")
    for clients, peak, after, slowest in figures:
        print(f"{clients:>8}{peak / 1024:>8.0f}MiB{after / 1024:>8.0f}MiB{(after - base) / 1024:>+6.0f}MiB"
              f"{slowest:>8.1f}s")
    print(f"RSS after the last phase vs before: {(figures[-1][2] - base) / 1024:+.0f} MiB")
    one = [peak for clients, peak, _, _ in figures if clients == 1]
    three = [peak for clients, peak, _, _ in figures if clients == 3]
    if one and three:
        print(f"peak with 3 concurrent / peak with 1: {max(three) / one[0]:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
