"""Detector commands: detect, embed, heads fit, weights import-official, export onnx.

Exit codes: 0 all inputs scored; 1 an error stopped the command; 2 bad usage;
3 the command finished but some inputs could not be read (each has its error row).
"""
from __future__ import annotations

import argparse

from ..choices import DEFAULT_MODEL, HEAD_KINDS
from ..cliargs import (
    EXIT_OK,
    EXIT_PARTIAL,
    add_command,
    add_detector_options,
    add_folder_options,
    add_output_options,
    detector_kwargs,
    device_list,
    existing_dir,
    image_input,
    int_range,
    path_or_hub_id,
    positive_int,
    subgroup,
)

DETECT_EPILOG = """\
An image is called fake when its calibrated P(fake) >= the threshold (0.5 unless --threshold):
the one decision rule of deepsift, whatever the head.

Exit codes: 0 all inputs scored; 1 an error stopped the command; 2 bad usage;
3 finished, but some inputs could not be read (each has its error row).
"""


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    """Add the detector commands to the ``deepsift`` parser."""
    p = add_command(sub, "detect", "real or AI-generated? for images, folders, globs, URLs or '-' (stdin)",
                    epilog=DETECT_EPILOG)
    p.add_argument("paths", nargs="+", metavar="PATH", type=image_input,
                   help="image file, folder (recursive), glob, http(s) URL, or '-' (a list on stdin)")
    add_output_options(p)
    add_folder_options(p)
    add_detector_options(p, threshold=True)
    add_devices_option(p)
    add_ray_options(p, "OUT-00000.jsonl, OUT-00001.jsonl, ... (needs --out and --format jsonl)")
    p.set_defaults(func=cmd_detect)

    p = add_command(sub, "embed", "write CoDE embeddings of images to a parquet file")
    p.add_argument("paths", nargs="+", metavar="PATH", type=image_input,
                   help="image file, folder (recursive), glob, http(s) URL, or '-' (a list on stdin)")
    p.add_argument("--out", required=True, metavar="FILE", help="output .parquet file (source, embedding, error)")
    add_folder_options(p)
    add_detector_options(p, heads=False, classifier=None)
    add_devices_option(p)
    add_ray_options(p, "OUT-00000.parquet, OUT-00001.parquet, ...")
    p.set_defaults(func=cmd_embed)

    heads = subgroup(sub, groups, "heads", "fit classifier heads on embeddings")
    p = add_command(heads, "fit", "fit linear, kNN and one-class SVM heads from labelled folders")
    p.add_argument("--real", required=True, action="append", type=existing_dir, metavar="DIR",
                   help="folder of real images (repeatable)")
    p.add_argument("--fake", required=True, action="append", type=existing_dir, metavar="DIR",
                   help="folder of generated images; repeat per generator (named by the folder) "
                        "or give one folder whose sub-folders are generators")
    p.add_argument("--out", required=True, metavar="DIR", help="output heads folder")
    p.add_argument("--classifier", choices=HEAD_KINDS, action="append", default=None,
                   help=f"head kind to fit; repeat for several (default: {' '.join(HEAD_KINDS)})")
    p.add_argument("--no-per-generator", action="store_true", help="skip the per-generator heads")
    add_folder_options(p)
    add_detector_options(p, heads=False, classifier=None)
    p.set_defaults(func=cmd_heads_fit)

    weights = subgroup(sub, groups, "weights", "published weights")
    p = add_command(weights, "import-official", "convert the published pickled sklearn classifiers once")
    p.add_argument("source", type=path_or_hub_id,
                   help="hub id (e.g. aimagelab/CoDE) or a folder holding the sklearn/ files")
    p.add_argument("--trust-pickles", action="store_true",
                   help="required: unpickling runs code from the file; only for a publisher you trust")
    p.add_argument("--out", metavar="DIR", help="heads folder to write (default: the deepsift cache for a hub "
                                                "id, SOURCE/heads for a folder)")
    p.set_defaults(func=cmd_import_official)

    export = subgroup(sub, groups, "export", "export the embedding network")
    p = add_command(export, "onnx", "export to ONNX and check it against torch (1e-4)")
    p.add_argument("--model", default=DEFAULT_MODEL, type=path_or_hub_id, help="CoDE hub id or local model folder")
    p.add_argument("--out", required=True, metavar="FILE", help="output .onnx file")
    p.add_argument("--opset", type=int_range(14, 30), default=18, help="ONNX opset version")
    p.set_defaults(func=cmd_export_onnx)


def add_devices_option(p: argparse.ArgumentParser) -> None:
    """``--devices``: several devices of this machine share every batch (detect, embed)."""
    p.add_argument("--devices", type=device_list, metavar="DEV,DEV,...",
                   help="use several devices of this machine, e.g. cuda:0,cuda:1 (each takes a share of every batch; "
                        "the output stays in input order; overrides --device; default: --device alone)")


def add_ray_options(p: argparse.ArgumentParser, shards: str) -> None:
    """``--ray``, ``--ray-actors``, ``--ray-chunk-size``: the same engine as Ray actors, sharded outputs."""
    p.add_argument("--ray", metavar="auto|ADDRESS", default=None,
                   help=f"run on a Ray cluster: auto (join or start one) or its address; writes {shards}, whose "
                        f"rows in name order are those of the local run (default: no Ray)")
    p.add_argument("--ray-actors", type=positive_int, default=None,
                   help="engine actors (default: one per GPU, else 1)")
    p.add_argument("--ray-chunk-size", type=positive_int, default=4096, help="inputs per shard")


def _on_ray(args: argparse.Namespace, task: str) -> int:
    """detect/embed --ray: run the chunks on the cluster, one shard each; exit code as the local run."""
    from ..exceptions import UsageError

    if task == "detect" and (args.out is None or args.format != "jsonl"):  # before torch and Ray load
        raise UsageError("detect with --ray writes JSONL shards: give --out FILE.jsonl and --format jsonl")
    from ..output import note
    from ..sources import expand_inputs
    from .ray_run import run_on_ray

    kwargs = detector_kwargs(args)
    kwargs.pop("backend", None)
    if getattr(args, "threshold", None) is not None:
        kwargs["threshold"] = args.threshold
    total = failed = shards = 0
    for _, rows, bad in run_on_ray(task, expand_inputs(args.paths, follow_links=args.follow_links), args.out,
                                   model=str(args.model), address=args.ray, heads=getattr(args, "heads", None),
                                   classifier=getattr(args, "classifier", None) if task == "detect" else None,
                                   actors=args.ray_actors, chunk_size=args.ray_chunk_size, kwargs=kwargs):
        total, failed, shards = total + rows, failed + bad, shards + 1
    note(f"deepsift: {task} on Ray wrote {total - failed} row(s) in {shards} shard(s) beside {args.out}; "
         f"{failed} input(s) failed")
    return EXIT_PARTIAL if failed else EXIT_OK


def _check_model(model: str) -> None:
    """A hub model that is neither cached nor reachable: one line at once, before torch loads."""
    from pathlib import Path

    from ..hub import hub_access, looks_like_hub_id

    if looks_like_hub_id(model) and not Path(model).expanduser().exists():
        hub_access(model, marker="config.json", what="model")


def cmd_detect(args: argparse.Namespace) -> int:
    """deepsift detect."""
    _check_model(args.model)
    if args.ray:
        return _on_ray(args, "detect")
    from ..output import write_predictions
    from ..sources import expand_inputs
    from .detector import Detector

    det = Detector.load(args.model, heads=args.heads, classifier=args.classifier,
                        threshold=args.threshold, **detector_kwargs(args))
    return write_predictions(det.predict_iter(expand_inputs(args.paths, follow_links=args.follow_links)),
                             args.format, args.out)


def cmd_embed(args: argparse.Namespace) -> int:
    """deepsift embed."""
    _check_model(args.model)
    from ..sources import expand_inputs
    from .detector import Detector
    from ..output import note, progress
    from .embeddings import EmbeddingWriter

    if args.ray:
        return _on_ray(args, "embed")
    det = Detector.load_backbone_only(args.model, **detector_kwargs(args))
    failed = total = 0
    with EmbeddingWriter(args.out, dim=int(det.backbone.config.hidden_size), model=str(args.model)) as writer:
        sources = expand_inputs(args.paths, follow_links=args.follow_links)
        for items, emb in progress(det.embed_batches(sources), "embed", unit="batch"):
            writer.write_batch(items, emb)
            total += len(items)
            failed += sum(it.row is None for it in items)
    note(f"deepsift: wrote {total - failed} embedding(s) to {args.out}; {failed} input(s) failed")
    return EXIT_PARTIAL if failed else EXIT_OK


def cmd_heads_fit(args: argparse.Namespace) -> int:
    """deepsift heads fit."""
    from .headset import check_heads_folder

    check_heads_folder(args.out)  # first: an unwritable --out fails at once, not after the model and the embedding
    _check_model(args.model)
    from ..output import note
    from .fitting import fit_heads_from_folders

    kinds = list(dict.fromkeys(args.classifier or HEAD_KINDS))
    summary = fit_heads_from_folders(args.real, args.fake, args.model, args.out, kinds=kinds,
                                     per_generator=not args.no_per_generator, follow_links=args.follow_links,
                                     **detector_kwargs(args))
    for line in summary:
        note(line)
    return EXIT_OK


def official_backbone_fingerprint(source: str) -> str | None:
    """The weights fingerprint of the backbone published with the classifiers; None if there is none beside them."""
    from ..exceptions import DeepsiftError
    from .backbone import load_backbone, weights_fingerprint

    try:
        return weights_fingerprint(load_backbone(source, "cpu"))
    except DeepsiftError:  # only the sklearn/ folder was copied: the heads are not tied to a backbone
        return None


def cmd_import_official(args: argparse.Namespace) -> int:
    """deepsift weights import-official."""
    if not args.trust_pickles:
        from ..exceptions import UsageError

        raise UsageError("the published classifiers are pickles, and unpickling runs code from the file: "
                         "add --trust-pickles (only for a publisher you trust)")
    from pathlib import Path

    from ..output import note
    from .headset import cached_heads_dir, save_headset
    from .official import import_official

    heads = import_official(args.source, trust_pickles=args.trust_pickles)
    src = Path(args.source).expanduser()
    out = Path(args.out) if args.out else (src / "heads" if src.is_dir() else cached_heads_dir(args.source))
    dims = {h.n_features for h in heads.values()}
    save_headset(heads, out, model=str(args.source), embedding_dim=dims.pop() if len(dims) == 1 else None,
                 backbone_sha256=official_backbone_fingerprint(args.source))
    note(f"deepsift: converted {', '.join(heads)} to {out} (JSON + safetensors; no pickle needed from now on)")
    return EXIT_OK


def cmd_export_onnx(args: argparse.Namespace) -> int:
    """deepsift export onnx."""
    from ..outplaces import output_file
    from ..output import note
    from .backbone import load_backbone
    from .onnx import ONNX_TOLERANCE, check_onnx, export_onnx

    output_file(args.out)  # before loading the model: one line, nothing replaced
    net = load_backbone(args.model)
    out = export_onnx(net, args.out, opset=args.opset)
    diff = check_onnx(net, out)
    ok = diff <= ONNX_TOLERANCE
    note(f"deepsift: exported {out}; max |onnx - torch| = {diff:.2e} ({'ok' if ok else 'FAILED'}, "
         f"tolerance {ONNX_TOLERANCE:g})")
    if not ok:
        from ..exceptions import ModelError

        raise ModelError(f"the ONNX export {out} differs from torch by {diff:.2e} (> {ONNX_TOLERANCE:g})")
    return EXIT_OK
