"""Where the demo API's fixed per-request cost goes (``bench_demo.py --profile N``, issue 23 item 4).

Two views of one plain request (a 1024x1024 JPEG, no heatmap, metadata on, as the page sends it):

* **The event loop, profiled.** ``deepsift serve`` runs under cProfile (its main thread is uvicorn's
  event loop; the forward thread and the demo's pool are not profiled, so the forward is excluded),
  timed by the thread's own CPU clock (load on the machine does not count, waiting neither), cleared
  after a warm-up (SIGUSR1); N requests follow one by one. Printed: the event loop's own CPU time per
  request by package (uvicorn/httptools, multipart, Starlette/FastAPI, pydantic, deepsift's server
  and demo code, asyncio and futures) and the top functions. cProfile inflates pure-Python code
  (~2x), so compare shares, not sums, with the event loop CPU per request of the plain run.
* **Each step alone**, timed in this process (median of 200): what the route does besides the
  forward pass, next to the bare ``Detector.predict``'s own decode.
"""
from __future__ import annotations

import asyncio
import os
import pstats
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

LAUNCH = ("import cProfile, runpy, signal, sys, time\n"
          "out = sys.argv[1]; sys.argv = ['deepsift'] + sys.argv[2:]\n"
          "p = cProfile.Profile(time.thread_time)\n"
          "def clear(*_):\n    p.disable(); p.clear(); p.enable()\n"
          "signal.signal(signal.SIGUSR1, clear)\n"
          "p.enable()\n"
          "try:\n    runpy.run_module('deepsift', run_name='__main__', alter_sys=True)\n"
          "except SystemExit:\n    pass\n"
          "finally:\n    p.disable(); p.dump_stats(out)\n")
CATEGORIES = (("httptools", "uvicorn + httptools (HTTP)"), ("uvicorn", "uvicorn + httptools (HTTP)"),
              ("multipart", "multipart parsing"), ("formparsers", "multipart parsing"),
              ("pydantic", "pydantic (response model)"), ("fastapi", "Starlette / FastAPI"),
              ("starlette", "Starlette / FastAPI"), ("anyio", "Starlette / FastAPI"),
              ("deepsift/server", "deepsift server (middleware, limits)"), ("deepsift/demo", "demo route"),
              ("deepsift", "deepsift other"), ("asyncio", "asyncio + futures (hand-offs)"),
              ("concurrent/futures", "asyncio + futures (hand-offs)"), ("threading", "asyncio + futures (hand-offs)"),
              ("json", "json"))


def category(key: tuple[str, int, str]) -> str:
    """The package a profiled function belongs to (built-ins by what they are)."""
    path, _, name = key
    if path == "~":
        if "epoll" in name:
            return "idle wait (epoll)"
        if "socket" in name or "transport" in name.lower():
            return "socket I/O"
        return "built-ins (C calls)"
    path = path.replace(os.sep, "/")
    for needle, cat in CATEGORIES:
        if needle in path:
            return cat
    return "other Python"


def median_ms(fn: Callable[[], Any], n: int = 200) -> float:
    """Median wall time of ``fn()`` in ms over ``n`` calls (after 5 unmeasured)."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def profile(build: Callable[[Path], tuple[Path, Path, Path]], n: int) -> None:
    """Profile ``n`` plain requests' event loop work in a served demo, then time each step alone."""
    import httpx

    from serverkit import ServeProcess

    with tempfile.TemporaryDirectory(prefix="bench-demo-prof-") as tmp:
        root = Path(tmp)
        model, heads, image = build(root)
        data = image.read_bytes()
        env = {"DEEPSIFT_DOMAINS": "demo", "DEEPSIFT_DEMO_MODEL": str(model), "DEEPSIFT_DEMO_HEADS": str(heads),
               "DEEPSIFT_DEMO_DETECT_RATE": "100000/minute", "DEEPSIFT_API_RATE": "100000/minute"}
        out = root / "serve.prof"
        srv = ServeProcess(f"sqlite:///{root / 'bench.db'}", root / "data", extra_env=env)
        srv.cmd = [sys.executable, "-c", LAUNCH, str(out), *srv.cmd[3:]]  # [python, -m, deepsift, serve, ...]
        walls = []
        with srv, httpx.Client(base_url=srv.url, timeout=120) as c:
            def post() -> float:
                t = time.perf_counter()
                r = c.post("/api/v1/detect", files={"files": ("photo.jpg", data, "image/jpeg")})
                assert r.status_code == 200, r.text
                return time.perf_counter() - t

            for _ in range(10):
                post()
            srv.proc.send_signal(signal.SIGUSR1)  # type: ignore[union-attr]
            post()  # the signal is handled on the loop's next turn: this request may be half counted
            t0 = time.perf_counter()
            walls = [post() for _ in range(n)]
            span = time.perf_counter() - t0
        stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
        report(stats, walls, span, n)
        steps(model, heads, image, data)


def report(stats: dict, walls: list[float], span: float, n: int) -> None:
    """Print the event loop's own time per request by package, and its top functions."""
    by_cat: dict[str, float] = {}
    for key, (_, _, tt, _, _) in stats.items():
        by_cat[category(key)] = by_cat.get(category(key), 0.0) + tt
    print(f"bench_demo --profile: {n} plain requests (1024x1024 JPEG, metadata on), one by one; request p50 "
          f"{statistics.median(walls) * 1000:.1f} ms under the profiler; load average "
          f"{' '.join(open('/proc/loadavg').read().split()[:3])}")
    print(f"event loop thread, own CPU time per request by package (cProfile-inflated; {span / n * 1000:.1f} ms wall per request):")
    for cat, tt in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        print(f"  {cat:<40}{tt / n * 1000:>7.2f} ms")
    print("top functions by own CPU time per request:")
    top = sorted(((tt, key) for key, (_, _, tt, _, _) in stats.items() if "epoll" not in key[2]), reverse=True)[:15]
    for tt, (path, line, name) in top:
        where = "/".join(Path(path).parts[-2:]) if path != "~" else ""
        print(f"  {tt / n * 1000:>6.3f} ms  {name} {where}:{line}" if where else f"  {tt / n * 1000:>6.3f} ms  {name}")


def steps(model: Path, heads: Path, image: Path, data: bytes) -> None:
    """Time each step of a plain request alone (median of 200), next to the bare predict's decode."""
    import httpx
    import numpy as np
    from starlette.requests import Request

    from deepsift.demo.engine import DemoEngine
    from deepsift.demo.inputs import Decoded, prepare, sniff
    from deepsift.demo.metadata import metadata_signals
    from deepsift.demo.schemas import DetectResponse
    from deepsift.demo.settings import DemoSettings
    from deepsift.demo.upload import read_form
    from deepsift.model.decoding import window_pixels
    from deepsift.model.detector import Detector

    det = Detector.load(str(model), heads=heads, workers=1)
    eng = DemoEngine(DemoSettings(model=str(model), heads=str(heads)))
    eng.set_detector(det)
    req = httpx.Request("POST", "http://x/api/v1/detect", files={"files": ("photo.jpg", data, "image/jpeg")})
    body = req.read()
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(k.lower(), v) for k, v in req.headers.raw]}

    async def parse() -> None:
        sent = False

        async def receive() -> dict:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        form = await read_form(Request(scope, receive), 16, 64 << 20)
        await form.close()

    loop = asyncio.new_event_loop()
    d = prepare(data, "photo.jpg", 200_000_000, 64 << 20, det.preprocessing)
    assert isinstance(d, Decoded)
    emb = det.embed_pixels(np.stack([d.pixels]))
    with_crops = prepare(data, "photo.jpg", 200_000_000, 64 << 20, det.preprocessing, heatmap_grid=4)
    assert with_crops is not None and with_crops.grid is not None
    grid = with_crops.grid
    res = {**eng._answers([d], [], emb, [])[0], "format": "JPEG", "width": 1024, "height": 1024,
           "metadata": metadata_signals(data, "image/jpeg"), "generator_name": None}
    rows: list[tuple[str, float]] = [
        ("multipart parsing (read_form)", median_ms(lambda: loop.run_until_complete(parse()))),
        ("sniff", median_ms(lambda: sniff(data, "photo.jpg"))),
        ("prepare (the API's decode: sniff + region decode)",
         median_ms(lambda: prepare(data, "photo.jpg", 200_000_000, 64 << 20, det.preprocessing))),
        ("  the bare's decode (window_pixels)", median_ms(lambda: window_pixels(data))),
        ("metadata_signals (EXIF, C2PA)", median_ms(lambda: metadata_signals(data, "image/jpeg"))),
        ("classify + every head + per-generator (_answers)", median_ms(lambda: eng._answers([d], [], emb, []))),
        ("  the bare's classify", median_ms(lambda: det.classify(emb))),
        ("response model + JSON", median_ms(lambda: DetectResponse(
            model="m", classifier=det.classifier, threshold=0.5, unsure_band=None, rule="r",
            results=[res]).model_dump_json())),
        ("forward pass (embed_pixels, batch of 1)", median_ms(lambda: det.embed_pixels(np.stack([d.pixels])), 50)),
        ("heatmap: prepare with its crops (reduced decode, 4x4)",
         median_ms(lambda: prepare(data, "photo.jpg", 200_000_000, 64 << 20, det.preprocessing, heatmap_grid=4), 50)),
        ("heatmap: forward of its 16 crops (embed_pixels)", median_ms(lambda: det.embed_pixels(grid[0]), 10)),
        ("bare Detector.predict (decode + forward + classify)", median_ms(lambda: det.predict([str(image)]), 50)),
    ]
    loop.close()
    eng.close()
    print("each step alone, in this process (median ms):")
    for name, ms in rows:
        print(f"  {name:<54}{ms:>8.3f} ms")
