"""``deepsift data build``: generate images for prompts (or grow shards) with diffusers generators."""
from __future__ import annotations

import argparse

from ..cliargs import EXIT_OK, EXIT_PARTIAL, add_command, existing_dir, existing_path, path_or_hub_id, positive_int, subgroup
from .spec import SPEC_HELP

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
    p = add_command(data, "build", "generate images for prompts with diffusers/plugin generators (D3 shards)",
                    description="Generate one image per record and generator, written as D3 parquet shards.",
                    epilog=BUILD_EPILOG)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", metavar="SRC", type=path_or_hub_id,
                     help="D3 shards (file, folder or hub id), JSONL or CSV of prompts")
    src.add_argument("--add-to", metavar="EXISTING", type=existing_path,
                     help="existing D3 shards to add the generators' columns to")
    p.add_argument("--generator", "-g", metavar="NAME=SPEC", action="append", required=True, type=_spec,
                   help="a generator (repeatable): " + SPEC_HELP)
    p.add_argument("--out", metavar="DIR", help="output folder (default with --add-to: EXISTING, in place)")
    p.add_argument("--real-dir", metavar="DIR", default=None, type=existing_dir,
                   help="fetch-real output folder (status.jsonl + images): real images for vae generators, by id "
                        "(default: none)")
    p.add_argument("--chunk-size", type=positive_int, default=64, help="records per output shard (unit of restart)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads; the same value gives the same bytes (default: torch's choice)")
    p.add_argument("--ray", metavar="auto|ADDRESS", default=None,
                   help="run on a Ray cluster: auto (join or start one) or its address (default: no Ray)")
    p.add_argument("--ray-actors", type=positive_int, default=None,
                   help="generator actors (default: one per GPU, else 1)")
    p.set_defaults(func=run_build)


def _spec(text: str) -> str:
    """argparse type: a generator spec that parses (a bad one is bad usage, exit 2)."""
    from ..exceptions import GeneratorError
    from .spec import parse_spec

    try:
        parse_spec(text)
    except GeneratorError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def run_build(args: argparse.Namespace) -> int:
    """Handler of ``deepsift data build``."""
    from ..exceptions import DataError, UsageError
    from ..output import note
    from .builder import build
    from .spec import parse_spec

    specs = [parse_spec(text) for text in args.generator]
    out = args.out or args.add_to
    if out is None:
        raise UsageError("--out DIR is required with --prompts")
    summary = build(args.prompts, specs, out, add_to=args.add_to, chunk_size=args.chunk_size,
                    threads=args.threads, ray_address=args.ray, ray_actors=args.ray_actors, real_dir=args.real_dir)
    for line in summary.lines():
        note(line)
    if summary.records == 0:
        raise DataError(f"data build wrote no record to {out}: {summary.input_records} input record(s), "
                        + (", ".join(f"{k}={v}" for k, v in sorted(summary.failures.items())) or "no input"))
    note(f"output: {out}")
    return EXIT_PARTIAL if sum(summary.failures.values()) else EXIT_OK
