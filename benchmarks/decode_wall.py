"""Decoding is the wall (issue 23): decode CORE time per image by stage, and the core-sharing bound.

Core time (``time.thread_time`` for the one-thread stages, ``time.process_time`` for the forward,
whose intra-op threads all count) is what a loaded machine does not inflate much; wall-clock
figures taken on a machine shared with other runs are not to be trusted, and the printout says so.

Per format of the benchmark's mix (512 x 512 JPEG q90 and PNG), the path each took before issue 23
(Pillow: the whole JPEG, the PNG's rows down to the window) and the path it takes now
(:mod:`deepsift.fastdecode`, when its libraries are installed) are split into stages by cumulative
steps (each stage = the time of steps 1..k minus that of steps 1..k-1, the best of a few repeats):
read (open + read the file), header (JPEG header / PNG chunk walk with CRCs), entropy decode (JPEG:
Huffman + IDCT of the luma, as a greyscale decode; PNG: inflating the rows, by zlib before, by
ISA-L into stored blocks now), colour / unfilter (JPEG: chroma IDCT + upsampling + YCbCr->RGB;
PNG: Pillow's row decoder, unfiltering), crop (the 224 x 224 window as a contiguous array),
then the copies after decoding: into the uint8 batch (``np.stack``) and into the normalised
float tensor (``normalize_batch``). ``load_pixels`` is also timed whole, as the engine calls it.

The bound: ``cores / (forward + decode + copies core time per image)``, images/s, the most that
``cores`` cores can give however well decoding and the forward overlap (the forward's core time
with one intra-op thread for torch, see :func:`forward_core_ms`). It assumes the cores' forwards do not
slow each other; :func:`stream_scaling` measures how far they do (one one-thread stream alone vs one per
core at once, model-only, wall clock, paired), and the bound at that scaling, ``cores / (forward / scaling
+ decode + copies)``, is printed beside it: on a shared VM two streams at once made 0.5-1.0 of twice one,
with the load of other guests, so detect against the scaled bound says what the engine leaves, the plain
bound what the machine does.
"""
from __future__ import annotations

import io
import os
import threading
import time
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from deepsift import fastdecode
from deepsift.images import CROP_SIZE, crop_origin, crop_uint8, normalize_batch
from deepsift.model.decoding import load_pixels, read_image_bytes
from deepsift.model.engine import usable_cpus
from deepsift.pngcrop import Inflater, png_chunks

STAGES = ("read", "header", "entropy decode", "colour / unfilter", "crop")
TOP = crop_origin(512)  # the window's first row in the benchmark's 512 x 512 images


def core_ms(step: Callable[[object], object], items: list, repeats: int = 3) -> float:
    """Best-of-``repeats`` core time (this thread) per item of ``step``, in ms."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.thread_time()
        for it in items:
            step(it)
        best = min(best, time.thread_time() - t0)
    return 1e3 * best / max(1, len(items))


def _pillow(data: bytes, mode: str | None = None) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    if mode:
        im.draft(mode, im.size)
    im.load()
    return im


def _png_rows(data: bytes, fast: bool, unfilter: bool = True) -> object:
    """The rows down to the window: inflated (zlib, or ISA-L into stored blocks), then Pillow's row decoder."""
    ihdr, idat = png_chunks(data)  # type: ignore[misc]
    w, bottom = int.from_bytes(ihdr[:4], "big"), TOP + CROP_SIZE
    size = bottom * (3 * w + 1)
    if fast:
        stream = zlib.compress(Inflater(idat).read(size), 0)  # ISA-L's rows, as stored blocks
    elif not unfilter:
        return zlib.decompressobj().decompress(b"".join(idat), size)
    else:
        stream = b"".join(idat)
    return Image.frombytes("RGB", (w, bottom), stream, "zip", "RGB") if unfilter else stream


def _steps(fmt: str, fast: bool) -> list[Callable[[Path], object]] | None:
    """Cumulative steps 1..5 (read, header, entropy decode, colour / unfilter, crop) of one path for one format."""
    read = read_image_bytes
    if fmt == "JPEG" and not fast:  # Pillow, whole file (512 px is below the region path's size)
        return [read, lambda p: Image.open(io.BytesIO(read(p))).size,  # type: ignore[arg-type]
                lambda p: _pillow(read(p), "L"), lambda p: _pillow(read(p)), lambda p: crop_uint8(_pillow(read(p)))]
    if fmt == "JPEG":
        sj = fastdecode.fast_decoder("simplejpeg")
        if sj is None:
            return None
        return [read, lambda p: sj.decode_jpeg_header(read(p)), lambda p: sj.decode_jpeg(read(p), "GRAY"),
                lambda p: sj.decode_jpeg(read(p), "RGB"), lambda p: fastdecode.centre_crop_jpeg_fast(read(p))]
    if fast and fastdecode.fast_decoder("isal.isal_zlib") is None:
        return None
    box = (TOP, TOP, TOP + CROP_SIZE, TOP + CROP_SIZE)  # the window, as deepsift.pngcrop cuts it from the rows
    return [read, lambda p: png_chunks(read(p)), lambda p: _png_rows(read(p), fast, unfilter=False),  # type: ignore[arg-type]
            lambda p: _png_rows(read(p), fast),
            lambda p: np.ascontiguousarray(np.asarray(_png_rows(read(p), fast).crop(box)))]  # type: ignore[union-attr]


def stage_table(paths: list[Path], repeats: int = 3) -> dict[tuple[str, str], dict[str, float]]:
    """``{(format, "before" | "now"): {stage: ms per image}}`` over the benchmark's images."""
    by_fmt = {"JPEG": [p for p in paths if p.suffix == ".jpg"], "PNG": [p for p in paths if p.suffix == ".png"]}
    table = {}
    for fmt, items in by_fmt.items():
        for label, fast in (("before", False), ("now", True)):
            steps = _steps(fmt, fast)
            if steps is None or not items:
                continue
            cumulative = [core_ms(s, items, repeats) for s in steps]
            row = {st: max(0.0, c - (cumulative[k - 1] if k else 0.0)) for k, (st, c) in enumerate(zip(STAGES, cumulative))}
            row["stages"] = cumulative[-1]
            row["load_pixels"] = _load_pixels_ms(items, fast, repeats)
            table[(fmt, label)] = row
    return table


def _load_pixels_ms(items: list[Path], fast: bool, repeats: int) -> float:
    """Core ms per image of the engine's own ``load_pixels``, with or without the fast decoders."""
    old = os.environ.pop("DEEPSIFT_NO_FAST_DECODE", None)
    if not fast:
        os.environ["DEEPSIFT_NO_FAST_DECODE"] = "1"
    fastdecode.fast_decoder.cache_clear()
    try:
        return core_ms(lambda p: load_pixels(str(p)), items, repeats)
    finally:
        os.environ.pop("DEEPSIFT_NO_FAST_DECODE", None)
        if old is not None:
            os.environ["DEEPSIFT_NO_FAST_DECODE"] = old
        fastdecode.fast_decoder.cache_clear()


def copies_ms(paths: list[Path], batch: int, repeats: int = 3) -> dict[str, float]:
    """Core ms per image of the copies after decoding: into the uint8 batch, into the normalised tensor."""
    crops = [load_pixels(str(p)) for p in paths[:batch]]
    stacked = np.stack(crops)
    return {"uint8 batch": core_ms(lambda _: np.stack(crops), [None], repeats) / len(crops),
            "tensor": core_ms(lambda _: normalize_batch(stacked), [None], repeats) / len(crops)}


def forward_core_ms(forward: Callable[[torch.Tensor], object], tensors: list[torch.Tensor], one_thread: bool,
                    repeats: int = 2) -> float:
    """Core ms per image of the model-only forward.

    ``one_thread``: with one intra-op thread, timed by ``thread_time``: the compute alone (with
    several threads, ``process_time`` also counts OpenMP threads spinning at barriers while a
    preempted sibling catches up, which on a loaded machine inflates it several times). ONNX
    Runtime's thread pool is fixed at session start: pass its one-thread session (the one the
    engine's streams run). Otherwise ``process_time``, spin included.
    """
    threads = torch.get_num_threads()
    clock = time.thread_time if one_thread else time.process_time
    if one_thread:
        torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            forward(tensors[0])  # warm
            best = float("inf")
            for _ in range(repeats):
                t0 = clock()
                for t in tensors:
                    forward(t)
                best = min(best, clock() - t0)
    finally:
        torch.set_num_threads(threads)
    return 1e3 * best / sum(len(t) for t in tensors)


def stream_scaling(streamable: object, batches: list[np.ndarray], cores: int, repeats: int = 2) -> dict[str, float]:
    """Model-only images/s of one one-thread stream alone and of ``cores`` streams at once, paired.

    Each stream runs the engine's own stream forward (:meth:`streams`: uint8 batch -> normalise -> one-thread
    network) over all of ``batches``; alone and together alternate ``repeats`` times, the best of each kept.
    ``scaling`` = together / (cores x alone): 1.0 when the cores' forwards do not slow each other (the bound's
    assumption); less when they share something (memory bandwidth, a cache, a hypervisor's core).
    """
    n = sum(len(b) for b in batches)

    def run(make: Callable[[], Callable[[np.ndarray], np.ndarray]], k: int) -> float:
        barrier, secs = threading.Barrier(k), [0.0] * k

        def stream(i: int) -> None:
            forward = make()
            forward(batches[0][:1])  # warm this thread's team and kernels
            barrier.wait()
            t0 = time.perf_counter()
            for b in batches:
                forward(b)
            secs[i] = time.perf_counter() - t0

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(k)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return k * n / max(secs)

    alone, together = 0.0, 0.0
    with streamable.streams() as make:  # type: ignore[attr-defined]
        for _ in range(repeats):
            alone = max(alone, run(make, 1))
            together = max(together, run(make, cores))
    return {"alone": alone, "together": together, "scaling": together / (cores * alone)}


def mix_ms(table: dict, label: str) -> float | None:
    """Mean ``load_pixels`` core ms per image over the JPEG/PNG mix (half each), or None if not measured."""
    rows = [table.get((fmt, label)) for fmt in ("JPEG", "PNG")]
    return None if None in rows else sum(r["load_pixels"] for r in rows) / 2  # type: ignore[index]


def print_stages(table: dict, copies: dict[str, float]) -> None:
    """Print the stage table: core ms per image, per format, before issue 23 and now."""
    cols = [k for k in (("JPEG", "before"), ("JPEG", "now"), ("PNG", "before"), ("PNG", "now")) if k in table]
    print("decode core ms per image (thread CPU time, best of 3; core time, unlike wall time, is robust to other "
          "load on the machine)")
    print(f"{'stage':>22} " + " ".join(f"{f + ' ' + lab:>12}" for f, lab in cols))
    for st in (*STAGES, "stages", "load_pixels"):
        name = {"stages": "sum of stages", "load_pixels": "load_pixels (whole)"}.get(st, st)
        print(f"{name:>22} " + " ".join(f"{table[c][st]:12.3f}" for c in cols))
    for name, ms in copies.items():
        print(f"{'copy: ' + name:>22} {ms:12.3f} (per image, any path)")
    print(f"fast decoders here: {fastdecode.fast_decoders()}", flush=True)


def print_bound(table: dict, copies: dict[str, float], forwards: dict[str, float],
                detect: dict[str, dict[str, list[float]]], scalings: dict[str, dict[str, float]] | None = None) -> None:
    """Print, per precision, the bound before and now, beside the measured detect rate per engine and detect/bound.

    With ``scalings`` (:func:`stream_scaling` per precision), also the bound at the forward's measured
    scaling: ``cores / (forward / scaling + decode + copies)``, what the cores give when their forwards
    slow each other as measured, and detect against it.
    """
    cores = usable_cpus()
    for prec, sc in (scalings or {}).items():
        print(f"{prec:>5}: model-only streams (wall clock, uint8 batch -> embeddings): one alone {sc['alone']:6.1f} "
              f"img/s, {cores} at once {sc['together']:6.1f} img/s -> scaling {sc['scaling']:.2f} of {cores} x alone")
    extra = sum(copies.values())
    for label in ("before", "now"):
        mix = mix_ms(table, label)
        if mix is None:
            continue
        print(f"\nbound with decoding as {label} (mix {mix:.2f} ms decode + {extra:.2f} ms copies per image, "
              f"{cores} cores): cores / (forward + decode + copies)")
        for prec, fwd in forwards.items():
            bound = 1e3 * cores / (fwd + mix + extra)
            print(f"{prec:>5}: forward {fwd:5.2f} core ms/img -> bound {bound:6.1f} img/s")
            runs = dict(detect.get(prec, {})) if label == "now" else {}
            per_round = runs.pop("forward", None)  # the forward timed again in each round, beside its passes
            scaling = (scalings or {}).get(prec, {}).get("scaling") if label == "now" else None
            if scaling:
                scaled = 1e3 * cores / (fwd / scaling + mix + extra)
                print(f"{'':>7}at the forward's measured scaling {scaling:.2f}: bound {scaled:6.1f} img/s")
            for engine, rates in runs.items():
                got = float(np.median(rates))
                print(f"{'':>7}detect, {engine:>7} engine: {got:6.1f} img/s (wall clock; median of {len(rates)}, "
                      f"spread {min(rates):.1f}-{max(rates):.1f}) | detect/bound {got / bound:.2f} "
                      f"(spread {min(rates) / bound:.2f}-{max(rates) / bound:.2f})"
                      + (f" | detect/scaled bound {got / scaled:.2f}" if scaling else ""))
                if per_round:
                    paired = [r * (f + mix + extra) / (1e3 * cores) for r, f in zip(rates, per_round)]
                    print(f"{'':>7}{'':>24}paired with each round's own forward "
                          f"({min(per_round):.1f}-{max(per_round):.1f} core ms/img): detect/bound "
                          f"{float(np.median(paired)):.2f} (spread {min(paired):.2f}-{max(paired):.2f})")


def large_png(paths: list[Path]) -> dict[str, float]:
    """Core ms per image of large PNGs: the whole decode + crop, the rows down to the window in one piece,
    and in strips of :data:`~deepsift.pngcrop.STRIP_BYTES` (the engine's path); all byte-identical."""
    from deepsift.images import decode_image
    from deepsift.pngcrop import STRIP_BYTES, centre_crop_png

    blobs = [read_image_bytes(p) for p in paths]
    ref = [crop_uint8(decode_image(str(p))) for p in paths]
    ways = {"whole decode + crop": lambda b: crop_uint8(Image.open(io.BytesIO(b)).convert("RGB")),
            "rows to the window, one piece": lambda b: centre_crop_png(b, strip_bytes=1 << 40),
            f"rows to the window, {STRIP_BYTES >> 20} MiB strips": lambda b: centre_crop_png(b)}
    for name, way in ways.items():
        if not all(np.array_equal(way(b), r) for b, r in zip(blobs, ref)):
            raise AssertionError(f"{name}: not the same pixels as the whole decode")
    return {name: core_ms(way, blobs) for name, way in ways.items()}


def print_large_png(paths: list[Path]) -> None:
    """Print :func:`large_png` for ``paths``."""
    with Image.open(paths[0]) as im:
        size = f"{im.width} x {im.height}"
    print(f"\nlarge PNGs ({len(paths)} of {size}, RGB): decode core ms per image (best of 3), same pixels each way; "
          f"fast decoders {fastdecode.fast_decoders()}")
    times = large_png(paths)
    base = times["whole decode + crop"]
    for name, ms in times.items():
        print(f"{name:>34}: {ms:7.1f} ms  ({ms / base:.2f} of the whole decode)")


# -- per-core streams vs one team (``--engines``) and large PNGs (``--large``) --------------------------
def set_engine(det: object, engine: str) -> None:
    """``streams``: one batch per core, one intra-op thread each (the default); ``team``: one forward at a time
    on all cores (the engine before issue 23's streams)."""
    forward = det.onnx if det.onnx is not None else det.runner  # type: ignore[attr-defined]
    forward.streamable = engine == "streams"


def compare_engines(det: object, detect: Callable[[], float], engines: tuple[str, ...], rounds: int,
                    forward_ms: Callable[[], float] | None = None) -> dict[str, list[float]]:
    """``detect()`` images/s per engine: one warm-up pass each, then ``rounds`` passes interleaved.

    ``forward_ms`` (the bound's one-thread forward, core ms per image) is timed again in each round,
    just before that round's passes, under the key ``"forward"``: a rate and its bound measured
    minutes apart drift apart on a machine whose speed drifts (a shared VM's did by 10-20 % in an hour).
    """
    rates: dict[str, list[float]] = {e: [] for e in engines}
    if forward_ms is not None:
        rates["forward"] = []
    forward = det.onnx if det.onnx is not None else det.runner  # type: ignore[attr-defined]
    default = forward.streamable
    for engine in engines:
        set_engine(det, engine)
        detect()
    for _ in range(rounds):
        if forward_ms is not None:
            rates["forward"].append(forward_ms())
        for engine in engines:
            set_engine(det, engine)
            rates[engine].append(detect())
    forward.streamable = default  # the backend's own default engine
    return rates


def make_large_pngs(folder: Path, n: int, picture: Callable[[np.random.Generator, bool], np.ndarray],
                    size: tuple[int, int] = (3000, 2000), seed: int = 7) -> list[Path]:
    """``n`` large RGB PNGs (``picture(rng, fake)`` upscaled to ``size``), made once in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"large-{i}.png" for i in range(n)]
    rng = np.random.default_rng(seed)
    for i, p in enumerate(paths):
        if not p.is_file():
            Image.fromarray(picture(rng, i % 2 == 1)).resize(size, Image.BICUBIC).save(p)
    return paths


def spin_after_run(onnx_path: str, x: np.ndarray, window_s: float = 0.1,
                   repeats: int = 3) -> dict[str, tuple[float, float]]:
    """ONNX Runtime's pool after a run of the normalised batch ``x``, ORT's default (spin between runs) vs ours
    (stop): ``(core ms burnt in the window_s after a run, ms for one image)`` each, medians of ``repeats``."""
    from deepsift.model.onnx import OnnxEmbedder

    out = {}
    for label, spin in (("ORT default (spins between runs)", True), ("deepsift (stops when a run returns)", False)):
        emb = OnnxEmbedder(onnx_path, spin_between_runs=spin)
        emb(x)
        burnt, one = [], []
        for _ in range(repeats):
            emb(x)
            c0 = time.process_time()
            time.sleep(window_s)  # the measurement window: what the pool's threads do while nothing runs
            burnt.append(1e3 * (time.process_time() - c0))
            for _ in range(5):
                t0 = time.perf_counter()
                emb(x[:1])
                one.append(1e3 * (time.perf_counter() - t0))
        out[label] = (float(np.median(burnt)), float(np.median(one)))
    return out


def print_spin_after_run(onnx_path: str, x: np.ndarray) -> None:
    """The core time ONNX Runtime's pool burns after a run, and one image's latency, each way."""
    print(f"ONNX Runtime's pool after a batch of {len(x)} (core ms burnt in the next 100 ms; one image's wall ms, p50):")
    for label, (burnt, one) in spin_after_run(onnx_path, x).items():
        print(f"  {label:38s} {burnt:6.1f} ms burnt   one image {one:5.1f} ms")
