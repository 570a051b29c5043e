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

Timed rounds are interleaved (bare, API, bare, API, ...) so load from other processes on a shared
machine distorts the ratios less.

    python benchmarks/bench_demo.py               # 40 requests per figure
    python benchmarks/bench_demo.py --quick       # 12
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

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # serverkit: the same `deepsift serve` runner the tests use


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="12 requests per figure instead of 40")
    args = ap.parse_args()
    n = 12 if args.quick else 40
    import httpx

    from deepsift.demo.heatmap import crops
    from deepsift.images import decode_image
    from deepsift.model.detector import Detector
    from serverkit import ServeProcess

    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        root = Path(tmp)
        model, heads, image = build(root)
        data = image.read_bytes()
        det = Detector.load(str(model), heads=heads, workers=1)
        env = {"DEEPSIFT_DOMAINS": "demo", "DEEPSIFT_DEMO_MODEL": str(model), "DEEPSIFT_DEMO_HEADS": str(heads)}
        with ServeProcess(f"sqlite:///{root / 'bench.db'}", root / "data", extra_env=env) as srv, \
                httpx.Client(base_url=srv.url, timeout=120) as c:
            def api(heatmap: bool) -> float:
                t = time.perf_counter()
                r = c.post("/api/v1/detect", files={"files": ("photo.jpg", data, "image/jpeg")},
                           data={"heatmap": "true" if heatmap else "false"})
                assert r.status_code == 200 and r.json()["results"][0]["error"] is None, r.text
                return time.perf_counter() - t

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
            for _ in range(3):  # warm up both sides
                api(False), api(True), bare(), bare_heatmap()
            t_api, t_hm, t_bare, t_bare_hm = [], [], [], []
            for _ in range(n):
                t_bare.append(bare())
                t_api.append(api(False))
                t_bare_hm.append(bare_heatmap())
                t_hm.append(api(True))

            done = []
            lock = threading.Lock()

            def client_loop(k: int) -> None:
                with httpx.Client(base_url=srv.url, timeout=120) as cc:
                    for _ in range(k):
                        r = cc.post("/api/v1/detect", files={"files": ("photo.jpg", data, "image/jpeg")})
                        assert r.status_code == 200
                        with lock:
                            done.append(1)

            per = max(n // 4, 3)
            conc_rates, bare_rates = [], []
            for _ in range(2):  # interleaved: bare, 4 clients, bare, 4 clients; the best of each
                t0 = time.perf_counter()
                for _ in range(2 * per):
                    det.predict([str(image)])
                bare_rates.append(2 * per / (time.perf_counter() - t0))
                done.clear()
                t0 = time.perf_counter()
                threads = [threading.Thread(target=client_loop, args=(per,)) for _ in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                conc_rates.append(len(done) / (time.perf_counter() - t0))
            conc, bare_rate = max(conc_rates), max(bare_rates)

    print(f"bench_demo: POST /api/v1/detect, one 1024x1024 JPEG, {n} requests per figure, random-weight CoDE "
          f"ViT-Tiny, torch CPU threads {__import__('torch').get_num_threads()}")
    rows = [
        ("no heatmap", t_api, t_bare, 80, "Detector.predict"),
        ("heatmap", t_hm, t_bare, 400, "Detector.predict"),
        ("heatmap", t_hm, t_bare_hm, 400, "predict + crop batch"),
    ]
    print(f"{'request':<12}{'API p50':>9}{'API p95':>9}{'target p95':>12}{'bare p50':>10}{'bare p95':>10}"
          f"{'ratio p50':>11}  baseline")
    for name, a, b, target, base in rows:
        print(f"{name:<12}{pct(a, 50):>7.1f}ms{pct(a, 95):>7.1f}ms{'<= ' + str(target) + 'ms':>12}{pct(b, 50):>8.1f}ms"
              f"{pct(b, 95):>8.1f}ms{statistics.median(a) / statistics.median(b):>10.2f}x  {base}")
    print(f"4 concurrent clients: {conc:.1f} images/s   bare Detector.predict sequential: {bare_rate:.1f} images/s   "
          f"bare/API time ratio {bare_rate / conc:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
