"""Builder speed: images/s per generator and deepsift's overhead around the generator itself.

For each generator, the same prompts (and real images) go once through bare calls
(``pipe(...)`` on the same batches with the same seeded generators, or the VAE round-trip)
and once through ``deepsift.generate.builder.build`` (reading prompts, checking, decoding
real images, seeding, PNG-encoding, writing parquet shards). The overhead is
builder time / bare time (loading excluded from both; target <= 1.1).

    python benchmarks/bench_build.py [--quick] [--records N] [--size 64] [--steps 2]
        [--model DIR_OR_HUB_ID]   # a real pipeline instead of the tiny random one

By default it builds tiny random-weight models (as the tests do) in a temp dir, offline.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _tiny_models(root: Path):
    """Build the tests' tiny models (tests/tiny_models.py, loaded by file path)."""
    spec = importlib.util.spec_from_file_location("tiny_models", Path(__file__).resolve().parents[1] / "tests" / "tiny_models.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["tiny_models"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.build_tiny_models(root)


def _prompts(folder: Path, n: int) -> Path:
    """A JSONL prompt file with n records and 96x80 real images."""
    rows = []
    for i in range(n):
        Image.fromarray(np.random.RandomState(i).randint(0, 255, (80, 96, 3), dtype=np.uint8)).save(folder / f"real{i}.png")
        rows.append(json.dumps({"id": f"b{i}", "prompt": f"a photograph of object number {i}", "image": f"real{i}.png"}))
    path = folder / "prompts.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def _bare_seconds(gen, src: Path) -> float:
    """Seconds of the bare generator calls over the same inputs and batches (loading excluded)."""
    import torch

    from deepsift.generate.sources import iter_source
    from deepsift.generate.spec import derive_seed

    items = list(iter_source(src))
    reals = [Image.open(it.real).convert("RGB") for it in items] if gen.needs_real_image else None
    t0 = time.perf_counter()
    bs = gen.batch_size
    for s in range(0, len(items), bs):
        batch = items[s:s + bs]
        seeds = [derive_seed(it.id, gen.name) for it in batch]
        if gen.needs_real_image:
            gen.generate([""] * len(batch), [None] * len(batch), seeds, reals[s:s + bs])
        else:  # the diffusers pipeline itself, as a user would call it
            gen.pipe(prompt=[it.prompt for it in batch], height=gen.height, width=gen.width,
                     num_inference_steps=gen.steps, generator=[torch.Generator("cpu").manual_seed(x) for x in seeds])
    return time.perf_counter() - t0


def main() -> None:
    """Run the benchmark and print images/s and the overhead ratio per generator."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 records")
    ap.add_argument("--records", type=int, default=48)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (best of each is reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--model", default=None, help="text-to-image pipeline (default: tiny random one)")
    args = ap.parse_args()
    n = 16 if args.quick else args.records
    if args.quick:
        args.repeats = min(args.repeats, 2)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from deepsift.generate.backends import load_generators
    from deepsift.generate.builder import build
    from deepsift.generate.spec import parse_spec

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        models = _tiny_models(tmp_path / "models")
        src = _prompts(tmp_path, n)
        sd = args.model or str(models.sd)
        specs = {
            "t2i": f"t2i=t2i:{sd},steps={args.steps},width={args.size},height={args.size},batch={args.batch}",
            "vae": f"vae=vae:{models.vae}",
        }
        print(f"bench_build: {n} records, {args.size}x{args.size}, {args.steps} steps, batch {args.batch}, "
              f"torch threads {__import__('torch').get_num_threads()}")
        for name, text in specs.items():
            spec = parse_spec(text)
            bares, builds = [], []
            for r in range(args.repeats):  # interleaved, best of each: robust to a busy machine
                [gen] = load_generators([spec])  # a fresh pipeline, as build() gets (first calls are slower)
                bares.append(_bare_seconds(gen, src))
                del gen
                t0 = time.perf_counter()
                summary = build(str(src), [spec], tmp_path / f"out-{name}-{r}", chunk_size=16, progress=False)
                # build() loads the generator itself; its loading time is not generation
                builds.append(time.perf_counter() - t0 - summary.load_seconds)
                assert summary.images[name] == n, summary.lines()
            bare, builder = min(bares), min(builds)
            print(f"{name:4s} bare generator: {n / bare:7.2f} images/s ({bare:.2f} s) | "
                  f"deepsift build: {n / builder:7.2f} images/s ({builder:.2f} s + {summary.load_seconds:.2f} s load) | "
                  f"overhead build/bare = {builder / bare:.3f} (target <= 1.1)")


if __name__ == "__main__":
    main()
