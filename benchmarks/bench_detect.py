"""Speed of ``deepsift detect`` (issue 2): end-to-end vs model-only ceiling, vs naive, bf16, ONNX, memory.

Builds everything it needs in a temporary folder (a random CoDE ViT-Tiny in the published
layout, heads fit on a few embeddings, 512 mixed JPEG/PNG 512x512 images, and folders of small
PNGs for the memory check), then measures in ONE process, side by side:

* end-to-end ``Detector.predict_iter`` over the folder vs the model-only forward of pre-decoded,
  pre-normalised tensors through the same backbone at the same precision and batch size
  (target ratio >= 0.8);
* end-to-end vs the naive path: open one image, preprocess, forward with batch 1, classify
  (target >= 3x);
* bf16 vs fp32 images/s and the fraction of images given the same label (target >= 99.5 %);
* the ONNX backend vs torch fp32;
* peak RSS of ``deepsift detect`` (fresh subprocess each) over 2k and 20k small images
  (with a 1-layer CoDE network: the engine's memory, not the network's compute, is measured).

Both paths are first warmed up at the measured shapes (one whole untimed pass of each: the
forward at the benchmark's batch size, the decoding workers started), then timed passes are
interleaved (ceiling, end-to-end, ceiling, ...); each figure is the median of the rounds, printed
with their spread (min-max), so load from other processes on a shared machine shows instead of
hiding. Issue 12 adds: end-to-end with decoding in threads vs worker processes, and exact JPEG
region decoding and PNG window decoding vs whole-file decoding (speed and byte identity).

    python benchmarks/bench_detect.py            # full: 512 images, 2k/20k memory (< 10 min, 2 cores)
    python benchmarks/bench_detect.py --quick    # smaller counts, about a minute
    python benchmarks/bench_detect.py --quick --part decode   # issue 23: decode core time by stage, the bound

The decode section (:mod:`decode_wall`, also part of the full run) prints decode CORE time per
image by stage and the core-sharing bound ``cores / (forward + decode + copies)`` beside detect;
with ``--part decode`` the detect rate of each engine in ``--engines`` (``streams``: per-core
streams, torch's default; ``team``: one forward at a time on all cores, ONNX Runtime's default),
interleaved in one process,
and with ``--large`` the core time of large PNGs' strip decoding vs the whole decode.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # the one-off ONNX export

from deepsift.images import crop_uint8, decode_image, normalize_batch  # noqa: E402
from deepsift.model.backbone import build_code_config, create_backbone, embed_tensor, save_backbone  # noqa: E402,F401
from deepsift.model.decoding import load_pixels  # noqa: E402
from deepsift.model.detector import Detector  # noqa: E402
from deepsift.model.engine import usable_cpus  # noqa: E402
from deepsift.model.headset import save_headset  # noqa: E402
from deepsift.model.onnx import OnnxRunner  # noqa: E402
from deepsift.model.heads import HEAD_KINDS, make_head  # noqa: E402
from deepsift.sources import expand_inputs  # noqa: E402

SIZE = 512


# -- data -----------------------------------------------------------------------------------
def natural_image(rng: np.random.Generator, fake: bool, size: int = SIZE) -> np.ndarray:
    """A natural-ish picture: smooth colour field + fine grain; 'fake' ones add a faint periodic grid."""
    small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC)).astype(np.float32)
    base += rng.normal(0.0, 3.0, (size, size, 1)).astype(np.float32)  # sensor-like grain
    if fake:
        yy, xx = np.mgrid[0:size, 0:size]
        base += (((yy // 4) + (xx // 4)) % 2 * 12.0 - 6.0)[..., None]
    return np.clip(base, 0, 255).astype(np.uint8)


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Write ``n`` images, alternating JPEG (q 90) and PNG, half of them 'fake'."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"{i:05d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(natural_image(rng, fake=(i // 2) % 2 == 1)).save(p, quality=90)
        paths.append(p)
    return paths


def make_small_pngs(folder: Path, n: int, seed: int = 1) -> None:
    """Write ``n`` 64x64 PNGs quickly (a few distinct images, re-encoded bytes are shared)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(16):
        tmp = folder / "_tmp.png"
        Image.fromarray(natural_image(rng, fake=bool(len(blobs) % 2), size=64)).save(tmp)
        blobs.append(tmp.read_bytes())
        tmp.unlink()
    for i in range(n):
        (folder / f"{i:06d}.png").write_bytes(blobs[i % len(blobs)])


def build_model(root: Path, images: list[Path], name: str = "model", layers: int = 12) -> Path:
    """Random CoDE ViT-Tiny in the published layout, with heads fit on a few embeddings beside it."""
    model_dir = save_backbone(create_backbone(build_code_config(num_hidden_layers=layers), seed=0), root / name)
    det = Detector.load_backbone_only(str(model_dir))
    fit_paths = images[:64]
    X = det.embed([str(p) for p in fit_paths]).astype(np.float64)
    y = np.array([(i // 2) % 2 for i in range(len(fit_paths))], np.int64)
    heads = {kind: make_head(kind).fit(X, y) for kind in HEAD_KINDS}
    save_headset(heads, model_dir / "heads", model=str(model_dir), embedding_dim=X.shape[1])
    return model_dir


# -- measurements ---------------------------------------------------------------------------
def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def model_only(det: Detector, tensors: list[torch.Tensor]) -> tuple[float, np.ndarray]:
    """Images/s of the bare forward over pre-normalised batches, and the embeddings."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = [det.onnx(t) if det.onnx is not None else embed_tensor(det.backbone, t).numpy() for t in tensors]
    secs = time.perf_counter() - t0
    return rate(sum(len(t) for t in tensors), secs), np.concatenate(out)


def end_to_end(det: Detector, folder: Path) -> tuple[float, np.ndarray]:
    """Images/s of ``predict_iter`` over the folder (expansion, decoding, forward, heads), and labels."""
    t0 = time.perf_counter()
    labels = [p.label if p.error is None else -1 for p in det.predict_iter(expand_inputs([str(folder)]))]
    secs = time.perf_counter() - t0
    return rate(len(labels), secs), np.asarray(labels)


def naive(det: Detector, paths: list[Path]) -> float:
    """Images/s of the naive path: one image at a time, decode, preprocess, batch-1 forward, classify."""
    head = det.heads[det.classifier]
    t0 = time.perf_counter()
    for p in paths:
        x = normalize_batch(crop_uint8(decode_image(str(p))))
        with torch.inference_mode():
            emb = embed_tensor(det.backbone, x).numpy()
        head.predict(emb), head.probability(head.decision_function(emb))
    return rate(len(paths), time.perf_counter() - t0)


def paired(det: Detector, tensors: list[torch.Tensor], folder: Path, rounds: int) -> dict:
    """Warm both paths up at the measured shapes, then interleave timed passes; medians and all rounds."""
    model_only(det, tensors)  # warm-up: every batch shape the timed passes use (allocator, oneDNN kernels)
    end_to_end(det, folder)  # and the engine's (workers, page cache)
    ceil, e2e = [], []
    for _ in range(rounds):
        r, emb = model_only(det, tensors)
        ceil.append(r)
        r, labels = end_to_end(det, folder)
        e2e.append(r)
    return {"ceiling": float(np.median(ceil)), "e2e": float(np.median(e2e)), "ceilings": ceil, "e2es": e2e,
            "emb": emb, "labels": labels}


def spread(values: list[float]) -> str:
    """``min-max`` of the rounds."""
    return f"{min(values):.0f}-{max(values):.0f}"


def partial_vs_whole(root: Path, n: int, size: int, fmt: str, partial, label: str, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Decode-only images/s of ``n`` ``size`` px images, whole file + crop vs ``partial(bytes)``; byte identity."""
    rng = np.random.default_rng(seed)
    blobs = []
    for i in range(n):
        p = root / f"partial-{size}-{i}.{fmt.lower()}"
        Image.fromarray(natural_image(rng, fake=bool(i % 2), size=size)).save(p, fmt, quality=90)
        blobs.append(p.read_bytes())
    whole, part = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        ref = [crop_uint8(decode_image(b)) for b in blobs]
        whole.append(rate(n, time.perf_counter() - t0))
        t0 = time.perf_counter()
        got = [partial(b) for b in blobs]
        part.append(rate(n, time.perf_counter() - t0))
    same = sum(g is not None and np.array_equal(g, r) for g, r in zip(got, ref))
    print(f"{size}x{size} {fmt}{' q90' if fmt == 'JPEG' else ''}, one core: whole decode + crop {np.median(whole):.0f} "
          f"img/s | {label} {np.median(part):.0f} img/s | {np.median(part) / np.median(whole):.2f}x; "
          f"byte-identical {same}/{n}")


def jpeg_region(root: Path, n: int) -> None:
    """Decode-only images/s of 1024x1024 JPEGs, whole file vs exact region, and their byte identity."""
    from deepsift.jpegcrop import centre_crop_jpeg, turbojpeg

    if turbojpeg() is None:
        print("libturbojpeg not installed: region decoding falls back to whole-file decoding")
        return
    partial_vs_whole(root, n, 1024, "JPEG", centre_crop_jpeg, "region", seed=5)


def png_window(root: Path, n: int) -> None:
    """Decode-only images/s of 512 and 1024 px PNGs, whole file vs rows down to the window, and byte identity."""
    from deepsift.pngcrop import centre_crop_png

    for size in (512, 1024):
        partial_vs_whole(root, n, size, "PNG", centre_crop_png, "rows down to the window", seed=6)


def peak_rss_mib(model_dir: Path, folder: Path, precision: str, batch_size: int) -> tuple[float, int, float]:
    """Run ``deepsift detect FOLDER`` in a fresh process; return (peak RSS MiB, inputs, seconds)."""
    code = (
        "import resource, sys, time\n"
        "from deepsift.cli import main\n"
        "t0 = time.perf_counter()\n"
        f"rc = main(['detect', {str(folder)!r}, '--model', {str(model_dir)!r}, '--format', 'jsonl', "
        f"'--out', {os.devnull!r}, '--precision', {precision!r}, '--batch-size', '{batch_size}'])\n"
        "secs = time.perf_counter() - t0\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
        "kib = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print('RESULT', rc, kib, secs)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    if not line:
        raise RuntimeError(f"memory subprocess failed:\n{proc.stderr[-2000:]}")
    _, rc, kib, secs = line[0].split()
    n = len(list(folder.iterdir()))
    if int(rc) != 0:
        raise RuntimeError(f"deepsift detect exited {rc} on {folder}")
    return int(kib) / 1024, n, float(secs)


def generator_heads(model_dir: Path, paths: list[Path], e32: np.ndarray) -> dict:
    """Per-generator heads of every kind, as ``deepsift heads fit`` makes them: real vs one generator's fakes.

    The benchmark's fakes come in two kinds, JPEG and PNG files; each is a "generator" here. The
    heads are fitted on the same first 64 images (fp32 embeddings) as the pooled heads.
    """
    from deepsift.model.headset import load_headset

    heads = dict(load_headset(model_dir / "heads")[0])
    fit = np.arange(min(64, len(paths)))
    fake = np.array([(i // 2) % 2 for i in fit], bool)
    for gen, parity in (("jpeg", 0), ("png", 1)):
        keep = ~fake | (fit % 2 == parity)
        y = fake[keep].astype(np.int64)
        for kind in HEAD_KINDS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                heads[f"{kind}:{gen}"] = make_head(kind).fit(e32[fit][keep].astype(np.float64), y)
    return heads


def head_agreement(heads: dict, e32: np.ndarray, e16: np.ndarray) -> dict[str, float]:
    """Per head: the share of images whose label (the detector's rule, P(fake) >= 0.5) is the same in bf16 and fp32."""
    from deepsift.decision import decide

    return {name: float(np.mean(decide(h.probability(h.decision_function(e32)))
                                == decide(h.probability(h.decision_function(e16))))) for name, h in heads.items()}


def print_head_agreement(model_dir: Path, paths: list[Path], e32: np.ndarray, e16: np.ndarray) -> None:
    """Print the bf16 label agreement of every head (pooled and per generator) and whether auto may use bf16."""
    from deepsift.model.autobackend import BF16_MIN_AGREEMENT, bf16_agreement, head_kind_key

    agree = head_agreement(generator_heads(model_dir, paths, e32), e32, e16)
    print(f"bf16 vs fp32 label agreement per head on {len(e32)} images (the detector's rule; bf16 stays opt-in "
          f"below {100 * BF16_MIN_AGREEMENT:.1f} %):")
    for name, share in agree.items():
        table = bf16_agreement(name)
        said = "auto may use bf16" if share >= BF16_MIN_AGREEMENT else "opt-in"
        known = "unmeasured" if table is None else f"{100 * table:.1f} %"
        print(f"  {name:>12}: {100 * share:6.2f} %  ({said} on this run; deepsift's table for {head_kind_key(name)}: "
              f"{known})")


def bf16_heads_only(root: Path, n_images: int, bs: int) -> int:
    """``--bf16-heads``: only the per-head bf16 agreement (no timing), on the benchmark's model and images."""
    folder = root / "images"
    paths = sorted(folder.glob("*")) if folder.is_dir() else []
    if len(paths) != n_images:
        paths = make_images(folder, n_images)
    model_dir = build_model(root, paths)
    emb = {}
    for prec in ("fp32", "bf16"):
        det = Detector.load_backbone_only(str(model_dir), precision=prec, batch_size=bs, device="cpu")
        emb[prec] = det.embed([str(p) for p in paths])
    print_head_agreement(model_dir, paths, emb["fp32"], emb["bf16"])
    return 0


def cpu_bf16_flags() -> str:
    """The CPU's bf16-relevant flags from /proc/cpuinfo (what lscpu prints)."""
    try:
        flags = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    found = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16") if f in flags]
    return ", ".join(found) if found else "none (bf16 is emulated: expect it slower than fp32)"


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def decode_section(model_dir: Path, paths: list[Path], tensors: list[torch.Tensor], folder: Path, bs: int,
                   rounds: int, res: dict | None, precisions: tuple[str, ...] = ("fp32", "bf16", "onnx"),
                   engines: tuple[str, ...] = ("streams",)) -> None:
    """Issue 23: decode core time per image by stage, and the bound beside detect (measured here if ``res`` is None)."""
    import decode_wall

    print("\n== decoding is the wall: decode CORE time per image by stage, and the core-sharing bound "
          "(detect rates are wall clock: on a machine loaded by other runs they are low, the core times are not)")
    table, copies = decode_wall.stage_table(paths), decode_wall.copies_ms(paths, bs)
    decode_wall.print_stages(table, copies)
    forwards, detect, scalings = {}, {}, {}
    crops = np.stack([load_pixels(str(p)) for p in paths[:bs]])
    for prec in precisions:
        det = res[prec]["det"] if res and "det" in res[prec] else Detector.load(
            str(model_dir), batch_size=bs, **({"backend": "onnx"} if prec == "onnx" else {"precision": prec}))
        single = det.onnx.single_threaded() if det.onnx is not None else None  # the streams' one-thread session
        one = (lambda t, d=det, s=single: s(t) if s is not None else embed_tensor(d.backbone, t))
        forwards[prec] = decode_wall.forward_core_ms(one, tensors[:3], one_thread=True, repeats=3)
        # 3 x 3 batches: one-thread timings here varied by ~10 % with 2 x 2
        scalings[prec] = decode_wall.stream_scaling(OnnxRunner(det.onnx) if det.onnx is not None else det.runner,
                                                    [crops, crops], usable_cpus())
        if res:
            detect[prec] = {"streams": [res[prec]["e2e"]]}
        else:  # --part decode: a warm-up pass of each engine, then ``rounds`` interleaved (1 unless asked),
            # each round with its own timing of the forward (best of 2 over 2 batches)
            detect[prec] = decode_wall.compare_engines(
                det, lambda d=det: end_to_end(d, folder)[0], engines, rounds,
                forward_ms=lambda f=one: decode_wall.forward_core_ms(f, tensors[:2], one_thread=True, repeats=2))
    decode_wall.print_bound(table, copies, forwards, detect, scalings)
    onnx_det = res["onnx"].get("det") if res and "onnx" in res else None
    if "onnx" in precisions:
        det = onnx_det or Detector.load(str(model_dir), batch_size=bs, backend="onnx")
        decode_wall.print_spin_after_run(det.onnx.path, tensors[0].numpy())


# -- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print figure + ratio lines."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller counts (about a minute)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, help="interleaved timing rounds (default 5, quick 3)")
    ap.add_argument("--workdir", help="keep the generated data here (default: a temporary folder)")
    ap.add_argument("--part", choices=("all", "decode"), default="all",
                    help="decode: only the decode core time by stage and the core-sharing bound (issue 23)")
    ap.add_argument("--precisions", default="fp32,bf16,onnx",
                    help="with --part decode: the comma-separated paths to measure (fp32, bf16, onnx)")
    ap.add_argument("--engines", default="streams,team",
                    help="with --part decode: the engines whose detect rate is measured, interleaved (streams: one "
                         "batch per core, one intra-op thread each; team: one forward at a time on all cores)")
    ap.add_argument("--large", action="store_true",
                    help="with --part decode: also large PNGs (3000 x 2000): strip decoding vs the rows in one piece "
                         "vs the whole decode, core ms per image")
    ap.add_argument("--bf16-heads", action="store_true", help="only the bf16 label agreement per head (no timing)")
    args = ap.parse_args(argv)
    unknown = set(args.precisions.split(",")) - {"fp32", "bf16", "onnx"}
    if unknown:
        ap.error(f"--precisions: unknown {', '.join(sorted(unknown))} (choose from fp32, bf16, onnx)")
    engines = tuple(args.engines.split(","))
    if set(engines) - {"streams", "team"}:
        ap.error(f"--engines: unknown {', '.join(sorted(set(engines) - {'streams', 'team'}))} (choose from streams, team)")
    n_images = 128 if args.quick else 512
    n_naive = 32 if args.quick else 96
    mem_counts = (500, 5000) if args.quick else (2000, 20000)
    rounds = args.rounds or (3 if args.quick else 5)
    bs = args.batch_size

    with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmp:
        root = Path(args.workdir or tmp)
        os.environ["DEEPSIFT_HOME"] = str(root / "home")  # the ONNX export cache stays in the work dir
        if args.bf16_heads:
            return bf16_heads_only(root, n_images, bs)
        t0 = time.perf_counter()
        folder = root / "images"
        paths = sorted(folder.glob("*")) if folder.is_dir() else []
        if len(paths) != n_images:
            paths = make_images(folder, n_images)
        model_dir = build_model(root, paths)
        sizes = [p.stat().st_size for p in paths]
        print(f"setup: {n_images} images {SIZE}x{SIZE} (JPEG q90 / PNG, mean {np.mean(sizes) / 1024:.0f} KiB), "
              f"random CoDE ViT-Tiny, heads {','.join(HEAD_KINDS)}, batch {bs}; {time.perf_counter() - t0:.1f} s")
        print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} intra-op threads), "
              f"bf16 CPU flags: {cpu_bf16_flags()}; load average {loadavg()}")

        arrays = np.stack([crop_uint8(decode_image(str(p))) for p in paths])
        tensors = [normalize_batch(arrays[i : i + bs]) for i in range(0, len(arrays), bs)]
        del arrays

        if args.part == "decode":
            if args.large:
                import decode_wall

                decode_wall.print_large_png(decode_wall.make_large_pngs(root / "large", 4, natural_image))
            decode_section(model_dir, paths, tensors, folder, bs, args.rounds or 1, None, tuple(args.precisions.split(",")),
                           engines)
            print(f"\ntotal {time.perf_counter() - t0:.0f} s; load average {loadavg()}")
            return 0
        res = {}
        for prec in ("fp32", "bf16"):
            det = Detector.load(str(model_dir), precision=prec, batch_size=bs)
            res[prec] = paired(det, tensors, folder, rounds)
            res[prec]["naive"] = naive(det, paths[:n_naive])
            res[prec]["det"] = det
        onnx_det = Detector.load(str(model_dir), backend="onnx", batch_size=bs)
        res["onnx"] = paired(onnx_det, tensors, folder, rounds)

        print(f"\n== end-to-end vs model-only ceiling (median of {rounds} interleaved rounds after a warm-up pass "
              f"of each at the measured shapes; target ratio >= 0.80)")
        for prec in ("fp32", "bf16", "onnx"):
            r = res[prec]
            print(f"{prec:>5}: detect {r['e2e']:7.1f} img/s (spread {spread(r['e2es'])}) | model-only "
                  f"{r['ceiling']:7.1f} img/s (spread {spread(r['ceilings'])}) | ratio {r['e2e'] / r['ceiling']:.2f}")

        print(f"\n== decoding in threads vs worker processes (fp32 detect, {os.cpu_count()} CPUs; auto picks "
              f"{'threads' if os.cpu_count() <= 2 else 'processes'} here)")
        det = res["fp32"]["det"]
        kinds = {}
        for label, workers in (("2 threads (auto on <= 2 CPUs; before issue 12)", "auto"),
                               (f"{os.cpu_count()} worker processes", os.cpu_count())):
            det.workers = workers
            end_to_end(det, folder)  # warm-up (process start-up is paid once per run, in the figure below)
            kinds[label] = [end_to_end(det, folder)[0] for _ in range(rounds)]
        det.workers = None
        for label, rates in kinds.items():
            print(f"{label:>48}: {np.median(rates):6.1f} img/s (spread {spread(rates)})")

        print("\n== exact JPEG region decoding (decode only the centre window + margin)")
        jpeg_region(root, 32 if args.quick else 96)
        print("\n== exact PNG window decoding (decode only the rows down to the window's bottom)")
        png_window(root, 16 if args.quick else 48)

        decode_section(model_dir, paths, tensors, folder, bs, rounds, res)

        print(f"\n== end-to-end vs naive path (one image at a time, batch 1; {n_naive} images; target >= 3x)")
        nf, nb = res["fp32"]["naive"], res["bf16"]["naive"]
        print(f"naive fp32 {nf:6.1f} img/s | naive bf16 {nb:6.1f} img/s")
        print(f"detect fp32 / naive fp32 = {res['fp32']['e2e'] / nf:.2f}x")
        print(f"detect bf16 / naive bf16 = {res['bf16']['e2e'] / nb:.2f}x")
        print(f"detect bf16 / naive fp32 = {res['bf16']['e2e'] / nf:.2f}x  (fastest detect vs the published fp32 path)")

        print("\n== bf16 vs fp32 (target: same label on >= 99.5 % of images)")
        print(f"fp32 {res['fp32']['e2e']:.1f} img/s | bf16 {res['bf16']['e2e']:.1f} img/s | "
              f"bf16/fp32 {res['bf16']['e2e'] / res['fp32']['e2e']:.2f}x end-to-end, "
              f"{res['bf16']['ceiling'] / res['fp32']['ceiling']:.2f}x model-only")
        agree = float(np.mean(res["bf16"]["labels"] == res["fp32"]["labels"]))
        print(f"same label (detect, linear head): {100 * agree:.2f} % of {len(res['fp32']['labels'])}")
        e32, e16 = res["fp32"]["emb"], res["bf16"]["emb"]
        heads = res["fp32"]["det"].heads
        for kind in HEAD_KINDS:
            same = float(np.mean(heads[kind].predict(e32) == heads[kind].predict(e16)))
            fake = float(np.mean(heads[kind].predict(e32)))
            print(f"same label ({kind:>6} head, its native rule, not the detector's): {100 * same:.2f} %  "
                  f"(fp32 calls {100 * fake:.0f} % fake)")
        print_head_agreement(model_dir, paths, e32, e16)
        cos = np.sum(e32 * e16, 1) / (np.linalg.norm(e32, axis=1) * np.linalg.norm(e16, axis=1))
        print(f"embedding cosine bf16 vs fp32: min {cos.min():.5f}, mean {cos.mean():.5f}")

        print("\n== ONNX backend vs torch fp32 (is --backend onnx a faster CPU backend?)")
        o, f = res["onnx"], res["fp32"]
        print(f"onnx {o['e2e']:.1f} img/s detect, {o['ceiling']:.1f} img/s model-only | torch fp32 {f['e2e']:.1f} "
              f"detect, {f['ceiling']:.1f} model-only | onnx/torch {o['e2e'] / f['e2e']:.2f}x detect, "
              f"{o['ceiling'] / f['ceiling']:.2f}x model-only; max |emb diff| {np.abs(o['emb'] - e32).max():.1e}")
        del tensors, res, onnx_det

        # RSS flatness is a property of the streaming engine, not of the network's compute: a 1-layer
        # CoDE network (same layout, input pipeline and heads; 1/12 of the forward) keeps 20k images quick.
        mem_model = build_model(root, paths, name="model-1layer", layers=1)
        print(f"\n== peak memory of `deepsift detect` (fresh process each, 64x64 PNGs, bf16, batch {bs}, "
              f"1-layer CoDE network)")
        peaks = []
        for n in mem_counts:
            small = root / f"small-{n}"
            if not small.is_dir() or len(list(small.iterdir())) != n:
                make_small_pngs(small, n)
            mib, count, secs = peak_rss_mib(mem_model, small, "bf16", bs)
            peaks.append(mib)
            print(f"{count:>6} images: peak RSS {mib:7.1f} MiB  ({rate(count, secs):.0f} img/s)")
        print(f"peak RSS {mem_counts[1]} / {mem_counts[0]} images = {peaks[1] / peaks[0]:.3f} (flat = 1.00)")
        print(f"\ntotal {time.perf_counter() - t0:.0f} s; load average {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
