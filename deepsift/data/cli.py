"""``deepsift data ...`` commands: info, fetch-real, export-wds, split (``data build`` lives in generate)."""
from __future__ import annotations

import argparse
import sys

from ..cli import subgroup
from ..exceptions import DataError, UsageError


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    """Add the data commands under ``deepsift data``."""
    data = subgroup(sub, groups, "data", "D3 dataset tools: read, fetch real images, export, split, build")

    p = data.add_parser("info", help="summarise D3/ELSA1M shards: records, images per generator, sizes")
    p.add_argument("sources", nargs="+", metavar="SHARDS", help="parquet file, folder of shards or hub dataset id")
    p.add_argument("--split", default="train", help="split of a hub dataset (default: train)")
    p.add_argument("--check-images", action="store_true", help="decode every image and count failures")
    p.set_defaults(func=cmd_info)

    p = data.add_parser("fetch-real", help="download the real (LAION) images of D3 records, resumably")
    p.add_argument("sources", nargs="+", metavar="SHARDS")
    p.add_argument("--out", required=True, help="folder for the images and status.jsonl")
    p.add_argument("--split", default="train")
    p.add_argument("--concurrency", type=int, default=64, help="downloads at once (default: 64)")
    p.add_argument("--per-host", type=int, default=8, help="downloads at once per host (default: 8)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per attempt (default: 20)")
    p.add_argument("--retries", type=int, default=3, help="retries on 5xx/429/timeouts (default: 3)")
    p.add_argument("--backoff", type=float, default=0.5, help="first backoff in seconds, doubled each retry")
    p.add_argument("--max-bytes", type=int, default=16 * 1024 * 1024, help="byte cap per image (default: 16 MiB)")
    p.add_argument("--max-pixels", type=int, default=None, help="pixel cap per image (default: deepsift's 80 MP)")
    p.add_argument("--retry-failed", action="store_true", help="also retry ids that failed for good before")
    p.add_argument("--limit", type=int, default=None, help="only the first N records")
    p.set_defaults(func=cmd_fetch_real)

    p = data.add_parser("export-wds", help="export records to WebDataset tars (gen_0..gen_k, real, caption, url)")
    p.add_argument("sources", nargs="+", metavar="SHARDS")
    p.add_argument("--out", required=True)
    p.add_argument("--real", default=None, metavar="DIR", help="a fetch-real output folder: adds the 'real' images")
    p.add_argument("--allow-missing-real", action="store_true", help="keep records whose real image is missing")
    p.add_argument("--split", default="train", help="split name used in sample keys (default: train)")
    p.add_argument("--prefix", default="elsa_v2", help="tar and sample-key prefix (default: elsa_v2)")
    p.add_argument("--samples-per-shard", type=int, default=1000)
    p.add_argument("--format", default="auto", choices=("auto", "jpeg", "png"), help="image format of every sample")
    p.add_argument("--overwrite", action="store_true", help="replace the tars of an earlier export in --out")
    p.set_defaults(func=cmd_export_wds)

    p = data.add_parser("split", help="deterministic train/val/test split by id hash; leave-generator-out")
    p.add_argument("sources", nargs="+", metavar="SHARDS", help="local parquet files or folders")
    p.add_argument("--out", required=True)
    p.add_argument("--val", type=float, default=0.05, help="validation fraction (default: 0.05)")
    p.add_argument("--test", type=float, default=0.05, help="test fraction (default: 0.05)")
    p.add_argument("--salt", default="deepsift", help="hash salt; change it for a different split")
    p.add_argument("--leave-out", default=None, metavar="GENERATOR",
                   help="train/val without this generator, test on it only (model name or a whole word of it, e.g. IF)")
    p.add_argument("--max-shard-mb", type=float, default=512.0)
    p.set_defaults(func=cmd_split)


def _records(args: argparse.Namespace, **kwargs):
    """Records of every source, in order."""
    from .reader import read_many

    return read_many(args.sources, split=getattr(args, "split", "train"), **kwargs)


def _total(sources: list[str]) -> int | None:
    """Row count of local sources (None if any is remote)."""
    from .reader import count_records

    total = 0
    for s in sources:
        n = count_records(s)
        if n is None:
            return None
        total += n
    return total


def cmd_info(args: argparse.Namespace) -> int:
    """``deepsift data info``."""
    from .info import summarize

    for source in args.sources:
        info = summarize(source, check_images=args.check_images, split=args.split)
        print(f"{source}:")
        for line in info.lines():
            print(f"  {line}")
    return 0


def cmd_fetch_real(args: argparse.Namespace) -> int:
    """``deepsift data fetch-real``."""
    import itertools

    from ..images import MAX_PIXELS
    from .fetch import Fetcher, FetchConfig

    config = FetchConfig(
        concurrency=args.concurrency, per_host=args.per_host, timeout=args.timeout, retries=args.retries,
        backoff=args.backoff, max_bytes=args.max_bytes,
        max_pixels=MAX_PIXELS if args.max_pixels is None else args.max_pixels, retry_failed=args.retry_failed,
    )
    if args.limit is not None and args.limit < 0:
        raise UsageError(f"--limit must be >= 0, got {args.limit}")
    items = ((r.id, r.url) for r in _records(args, images=False))
    total = _total(args.sources)
    if args.limit is not None:
        items = itertools.islice(items, args.limit)
        total = min(total, args.limit) if total is not None else args.limit
    summary = Fetcher(args.out, config).run(items, total=total)
    print(summary.line(), file=sys.stderr)
    print(f"status per id: {args.out}/status.jsonl", file=sys.stderr)
    return 0


def cmd_export_wds(args: argparse.Namespace) -> int:
    """``deepsift data export-wds``."""
    from .webdataset import export_webdataset

    summary = export_webdataset(
        _records(args), args.out, real_dir=args.real, split=args.split, prefix=args.prefix,
        samples_per_shard=args.samples_per_shard, fmt=args.format, require_real=not args.allow_missing_real,
        overwrite=args.overwrite,
    )
    print(summary.line(), file=sys.stderr)
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    """``deepsift data split``."""
    from .info import models_in
    from .reader import is_local, n_generators_in
    from .split import model_matches, split_records

    if not int(args.max_shard_mb * 1024 * 1024) >= 1:
        raise UsageError(f"--max-shard-mb must be > 0, got {args.max_shard_mb:g}")
    remote = [s for s in args.sources if not is_local(s)]
    if remote:
        raise UsageError(f"split reads local shards only; not found: {', '.join(remote)}")
    n_gen = max(n_generators_in(s) for s in args.sources)
    if args.leave_out is not None:
        models = models_in(_records(args, images=False))
        if not any(model_matches(m, args.leave_out) for m in models):
            raise DataError(f"--leave-out {args.leave_out!r} matches no generator; models: {', '.join(sorted(models))}")
    summary = split_records(
        _records(args), args.out, n_generators=n_gen, val=args.val, test=args.test, salt=args.salt,
        leave_out_generator=args.leave_out, max_shard_bytes=int(args.max_shard_mb * 1024 * 1024),
    )
    print(summary.line(), file=sys.stderr)
    print(f"manifest: {args.out}/splits.csv", file=sys.stderr)
    return 0
