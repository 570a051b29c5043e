"""``deepsift data build``: generate images for prompts (or grow shards) with diffusers generators."""
from __future__ import annotations

import argparse
import logging
import sys

from ..cli import subgroup
from .spec import SPEC_HELP, parse_spec

BUILD_EPILOG = f"""\
generator spec:
  {SPEC_HELP}

examples:
  deepsift data build --prompts prompts.jsonl --out d3new \\
      --generator sd14=t2i:CompVis/stable-diffusion-v1-4,steps=25,width=512,height=512 \\
      --generator vae=vae:stabilityai/sd-vae-ft-mse
  deepsift data build --add-to d3new --out d3new --generator mine=plugin:my_generator
  deepsift data build --prompts shards/ --out d3new --generator sdxl=t2i:/models/sdxl --ray auto
  deepsift data fetch-real shards/ --out real/
  deepsift data build --prompts shards/ --real-dir real/ --out d3new \\
      --generator rec=vae:stabilityai/sd-vae-ft-mse --generator sd14=t2i:CompVis/stable-diffusion-v1-4

prompt sources: D3/ELSA parquet shards (file, folder, hub id), or JSONL/CSV with
prompt|original_prompt, positive_prompt, negative_prompt, url, id, image (real image path
relative to the file's folder). Seeds derive from (record id, generator name). Blank prompts
and prompts over 10000 characters are skipped with a logged reason; prompts over the
tokenizer's limit (77 CLIP tokens) are truncated by the pipeline to that limit and counted.
A record whose real image does not decode is logged and skipped. --real-dir DIR (the --out
folder of 'deepsift data fetch-real') gives vae generators each record's real image, looked up
by id (D3 shards only carry its URL; a JSONL/CSV 'image' field takes precedence); a record whose
image was not fetched or does not decode is logged and skipped by the vae generators only
(counted as no_real_image, image_decode_error, ...), the text-to-image generators still run.
A killed build restarts where it stopped when run again with the same options (--real-dir
included).
"""


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    """Add ``deepsift data build``."""
    data = subgroup(sub, groups, "data", "D3 dataset tools")
    p = data.add_parser(
        "build", help="generate images for prompts with diffusers/plugin generators (D3 shards)",
        description="Generate one image per record and generator, written as D3 parquet shards.",
        epilog=BUILD_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", metavar="SRC", help="D3 shards, JSONL or CSV of prompts")
    src.add_argument("--add-to", metavar="EXISTING", help="existing D3 shards to add the generators' columns to")
    p.add_argument("--generator", "-g", metavar="NAME=SPEC", action="append", required=True, help=SPEC_HELP)
    p.add_argument("--out", metavar="DIR", help="output folder (default with --add-to: EXISTING, in place)")
    p.add_argument("--real-dir", metavar="DIR", default=None,
                   help="fetch-real output folder (status.jsonl + images): real images for vae generators, by id")
    p.add_argument("--chunk-size", type=int, default=64, help="records per output shard (unit of restart)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (same value = same bytes)")
    p.add_argument("--ray", metavar="auto|ADDRESS", default=None, help="run on a Ray cluster")
    p.add_argument("--ray-actors", type=int, default=None, help="generator actors (default: one per GPU, else 1)")
    p.add_argument("--quiet", "-q", action="store_true", help="no per-record log lines")
    p.add_argument("--verbose", "-v", action="store_true", help="also log each shard written")
    p.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    """Handler of ``deepsift data build``."""
    from ..exceptions import UsageError
    from .builder import build

    level = logging.ERROR if args.quiet else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(name)s: %(message)s")
    logging.getLogger("deepsift").setLevel(level)
    specs = [parse_spec(text) for text in args.generator]
    out = args.out or args.add_to
    if out is None:
        raise UsageError("--out DIR is required with --prompts")
    summary = build(args.prompts, specs, out, add_to=args.add_to, chunk_size=args.chunk_size,
                    threads=args.threads, ray_address=args.ray, ray_actors=args.ray_actors, real_dir=args.real_dir)
    for line in summary.lines():
        print(line, file=sys.stderr)
    print(f"output: {out}", file=sys.stderr)
    return 0
