"""``deepsift data ...`` commands: info, fetch-real, export-wds, split (``data build`` lives in generate)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cliargs import (
    EXIT_OK,
    add_folder_options,
    add_group_options,
    EXIT_PARTIAL,
    add_command,
    existing_dir,
    existing_path,
    non_negative_float,
    non_negative_int,
    path_or_hub_id,
    positive_float,
    positive_int,
    subgroup,
    user_url_policy,
)
from ..cliargs import fraction as fraction_type
from ..exceptions import DataError, UsageError, unknown_generator

SPLIT_EPILOG = """\
A plain folder dataset is split in place: OUT/splits.csv names each image's split (id, path, label,
generator, group, split). Real images split by group (--group; a whole source on one side), generated
images by id; with --leave-out G every image of G is in test and no other generated image is.
"""

FETCH_EPILOG = """\
Exit codes: 0 every id has its image; 3 some ids failed (dead links are normal on LAION: the
tally by status says which; --allow-failures exits 0 anyway); 1 an error stopped the command.
Each id's status is in OUT/status.jsonl; a re-run fetches only what is missing.
"""


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    """Add the data commands under ``deepsift data``."""
    data = subgroup(sub, groups, "data", "D3 dataset tools: read, fetch real images, export, split, build")

    p = add_command(data, "info", "summarise D3/ELSA1M shards: records, images per generator, sizes")
    p.add_argument("sources", nargs="+", metavar="SHARDS", type=path_or_hub_id,
                   help="parquet file, folder of shards, or hub dataset id (owner/name)")
    p.add_argument("--split", default="train", help="split of a hub dataset")
    p.add_argument("--check-images", action="store_true", help="decode every image and count failures")
    p.set_defaults(func=cmd_info)

    p = add_command(data, "fetch-real", "download the real (LAION) images of D3 records, resumably",
                    epilog=FETCH_EPILOG)
    p.add_argument("sources", nargs="+", metavar="SHARDS", type=path_or_hub_id,
                   help="parquet file, folder of shards, or hub dataset id (owner/name)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the images and status.jsonl")
    p.add_argument("--split", default="train", help="split of a hub dataset")
    p.add_argument("--concurrency", type=positive_int, default=64, help="downloads at once")
    p.add_argument("--per-host", type=positive_int, default=8, help="downloads at once per host")
    p.add_argument("--timeout", type=positive_float, default=20.0, metavar="SECONDS",
                   help="time limit of one attempt (connect, headers and body)")
    p.add_argument("--retries", type=non_negative_int, default=3, help="retries on 5xx/429/timeouts")
    p.add_argument("--backoff", type=non_negative_float, default=0.5, metavar="SECONDS",
                   help="first backoff, doubled each retry")
    p.add_argument("--max-bytes", type=positive_int, default=16 * 1024 * 1024, help="byte cap per image")
    p.add_argument("--max-pixels", type=positive_int, default=None,
                   help="pixel cap per image (default: deepsift's 80 MP)")
    p.add_argument("--retry-failed", action="store_true", help="also retry ids that failed for good before")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 even when some ids have no image (dead links)")
    p.add_argument("--limit", type=non_negative_int, default=None, help="only the first N records (default: all)")
    p.set_defaults(func=cmd_fetch_real)

    p = add_command(data, "export-wds", "export records to WebDataset tars (gen_0..gen_k, real, caption, url)")
    p.add_argument("sources", nargs="+", metavar="SHARDS", type=path_or_hub_id,
                   help="parquet file, folder of shards, or hub dataset id (owner/name)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the tars")
    p.add_argument("--real", default=None, metavar="DIR", type=existing_dir,
                   help="a fetch-real output folder: adds the 'real' images (default: none)")
    p.add_argument("--allow-missing-real", action="store_true", help="keep records whose real image is missing")
    p.add_argument("--split", default="train", type=_key_part, help="split name used in sample keys")
    p.add_argument("--prefix", default="elsa_v2", type=_key_part, help="tar and sample-key prefix")
    p.add_argument("--samples-per-shard", type=positive_int, default=1000, help="samples per tar")
    p.add_argument("--format", default="auto", choices=("auto", "jpeg", "png"),
                   help="image format of every sample (auto: JPEG when all its images are JPEG, else PNG)")
    p.add_argument("--overwrite", action="store_true", help="replace the tars of an earlier export in --out")
    p.set_defaults(func=cmd_export_wds)

    p = add_command(data, "split", "deterministic train/val/test split by id hash; leave one generator out",
                    epilog=SPLIT_EPILOG)
    p.add_argument("sources", nargs="+", metavar="DATA", type=existing_path,
                   help="local parquet files or folders of shards, or one plain folder dataset "
                        "(real/<source>/... with fake/<generator>/..., or real/ plus one folder per generator)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder ({train,val,test}/ and splits.csv)")
    p.add_argument("--val-fraction", type=fraction_type, default=0.05, help="share of records for validation")
    p.add_argument("--test-fraction", type=fraction_type, default=0.05, help="share of records for test")
    p.add_argument("--salt", default="deepsift", help="hash salt; change it for a different split")
    p.add_argument("--leave-out", default=None, metavar="GENERATOR",
                   help="train/val without this generator, test on it only: its exact name as 'data info' "
                        "lists it (the name given to 'data build -g NAME=...', or model_gen{k} of D3 shards; "
                        "default: none, a plain split)")
    p.add_argument("--max-shard-mb", type=positive_float, default=512.0, help="largest output shard, in MB")
    add_group_options(p)
    add_folder_options(p)
    p.set_defaults(func=cmd_split)


def _key_part(text: str) -> str:
    """argparse type: a part of tar names and sample keys (letters, digits, '_', '-')."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise argparse.ArgumentTypeError(f"only letters, digits, '_' and '-' are allowed (it names tars and "
                                          f"sample keys), got {text!r}")
    return text


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
    return EXIT_OK


def cmd_fetch_real(args: argparse.Namespace) -> int:
    """``deepsift data fetch-real``: the tally by status; exit 3 when some id has no image (unless allowed)."""
    import itertools

    from ..images import MAX_PIXELS
    from ..outplaces import ensure_writable_dir
    from ..output import note
    from .fetch import STATUS_FILE, Fetcher, FetchConfig

    config = FetchConfig(
        concurrency=args.concurrency, per_host=args.per_host, timeout=args.timeout, retries=args.retries,
        backoff=args.backoff, max_bytes=args.max_bytes,
        max_pixels=MAX_PIXELS if args.max_pixels is None else args.max_pixels, retry_failed=args.retry_failed,
        url_policy=user_url_policy(),  # a user's own run: URLs may lead to the local network (a server stays strict)
    )
    ensure_writable_dir(args.out)  # before reading any shard
    items = ((r.id, r.url) for r in _records(args, images=False))
    total = _total(args.sources)
    if args.limit is not None:
        items = itertools.islice(items, args.limit)
        total = min(total, args.limit) if total is not None else args.limit
    summary = Fetcher(args.out, config).run(items, total=total)
    note(f"fetch-real: {summary.line()}")
    note(f"status per id: {Path(args.out) / STATUS_FILE}")
    if summary.failed and not args.allow_failures:
        note(f"fetch-real: {summary.failed} id(s) have no image (--allow-failures accepts that)")
        return EXIT_PARTIAL
    return EXIT_OK


def cmd_export_wds(args: argparse.Namespace) -> int:
    """``deepsift data export-wds``: exit 3 when records were skipped; nothing exported is an error."""
    from ..output import note
    from .webdataset import export_webdataset

    from ..outplaces import output_dir

    out = output_dir(args.out)  # a file, device or unwritable place: one line, before reading any shard
    if not args.overwrite and out.is_dir() and any(out.iterdir()):
        raise UsageError(f"{out}: output folder is not empty; add --overwrite to replace an earlier export's tars")
    summary = export_webdataset(
        _records(args), out, real_dir=args.real, split=args.split, prefix=args.prefix,
        samples_per_shard=args.samples_per_shard, fmt=args.format, require_real=not args.allow_missing_real,
        overwrite=args.overwrite,
    )
    if summary.samples == 0:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(summary.skipped.items())) or "the input has no records"
        raise DataError(f"export-wds wrote no sample ({skipped})")
    note(summary.line())
    return EXIT_PARTIAL if sum(summary.skipped.values()) else EXIT_OK


def cmd_split(args: argparse.Namespace) -> int:
    """``deepsift data split``."""
    from ..output import note
    from .info import generators_in
    from .reader import n_generators_in
    from .split import split_records

    if args.val_fraction + args.test_fraction > 1:
        raise UsageError(f"--val-fraction {args.val_fraction:g} and --test-fraction {args.test_fraction:g} "
                         f"add up to more than 1")
    from ..outplaces import ensure_writable_dir

    ensure_writable_dir(args.out)  # before reading every shard
    folder = _folder_dataset(args.sources)
    if folder is not None:
        return _split_folder(args, folder)
    n_gen = max(n_generators_in(s) for s in args.sources)
    if args.leave_out is not None:
        names = generators_in(_records(args, images=False))
        if args.leave_out not in names:
            raise unknown_generator("leave-out generator", [args.leave_out], names)
    summary = split_records(
        _records(args), args.out, n_generators=n_gen, val=args.val_fraction, test=args.test_fraction,
        salt=args.salt, leave_out_generator=args.leave_out, max_shard_bytes=max(1, int(args.max_shard_mb * 1024 * 1024)),
    )
    note(summary.line())
    note(f"manifest: {Path(args.out) / 'splits.csv'}")
    return EXIT_OK


def _folder_dataset(sources: list[str]) -> str | None:
    """The one plain folder dataset among ``sources`` (None: parquet shards)."""
    from pathlib import Path

    from .layout import detect_layout

    if len(sources) != 1 or not Path(sources[0]).is_dir():
        return None
    try:
        layout = detect_layout(Path(sources[0]))
    except DataError:
        return None
    return None if layout == "parquet" else sources[0]


def _split_folder(args: argparse.Namespace, folder: str) -> int:
    """``data split`` of a plain folder dataset: a manifest, reals grouped by source."""
    from ..output import note
    from .groups import assign_groups, read_group_file
    from .layout import read_dataset
    from .split import split_samples

    data = read_dataset(folder, follow_links=args.follow_links)
    samples = assign_groups(data.samples, args.group, read_group_file(args.groups) if args.groups else None)
    if args.leave_out is not None and args.leave_out not in {s.generator for s in samples if s.label == 1}:
        raise unknown_generator("leave-out generator", [args.leave_out], {s.generator for s in samples if s.label == 1})
    summary = split_samples(samples, args.out, val=args.val_fraction, test=args.test_fraction, salt=args.salt,
                            leave_out_generator=args.leave_out)
    for err in data.skipped:
        note(f"deepsift: {err.source}: {err.error}")
    n_groups = len({s.group for s in samples if s.label == 0 and s.group})
    note(summary.line("images") + f"; reals split by {args.group} ({n_groups} group(s))")
    note(f"manifest: {Path(args.out) / 'splits.csv'}")
    return EXIT_PARTIAL if data.skipped else EXIT_OK
