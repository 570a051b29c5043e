"""Detector commands: ``detect``, ``embed``, ``heads fit``, ``weights import-official``, ``export onnx``.

Exit codes: 0 all inputs scored; 1 an error stopped the command; 2 bad usage;
3 the command finished but some inputs could not be read (each has its error row).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..output import EXIT_SOME_FAILED, OUTPUT_FORMATS, progress, write_predictions
from .backbone import DEFAULT_MODEL


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    """Add the detector commands to the ``deepsift`` parser."""
    from ..cli import subgroup

    p = sub.add_parser("detect", help="real or AI-generated? for images, folders, globs, URLs or '-' (stdin)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image file, folder (recursive), glob, URL, or '-'")
    _model_args(p)
    p.add_argument("--heads", help="heads folder (default: beside the model, or the deepsift cache)")
    p.add_argument("--classifier", choices=("linear", "knn", "svm"), default="linear")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default="table")
    p.add_argument("--out", help="write results to this file instead of stdout")
    p.add_argument("--threshold", type=float, help="P(fake) at or above which an image is called fake "
                   "(default: the head's own decision rule)")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("embed", help="write CoDE embeddings of images to a parquet file")
    p.add_argument("paths", nargs="+", metavar="PATH")
    _model_args(p)
    p.add_argument("--out", required=True, help="output .parquet file")
    p.set_defaults(func=cmd_embed)

    heads = subgroup(sub, groups, "heads", "fit classifier heads on embeddings")
    p = heads.add_parser("fit", help="fit linear, kNN and one-class SVM heads from labelled folders")
    p.add_argument("--real", required=True, action="append", help="folder of real images (repeatable)")
    p.add_argument("--fake", required=True, action="append",
                   help="folder of generated images; repeat per generator (named by the folder) "
                        "or give one folder whose sub-folders are generators")
    _model_args(p)
    p.add_argument("--out", required=True, help="output heads folder")
    p.add_argument("--classifiers", default="linear,knn,svm", help="comma-separated subset of linear,knn,svm")
    p.add_argument("--no-per-generator", action="store_true", help="skip the per-generator heads")
    p.set_defaults(func=cmd_heads_fit)

    weights = subgroup(sub, groups, "weights", "published weights")
    p = weights.add_parser("import-official", help="convert the published pickled sklearn classifiers once")
    p.add_argument("source", help="hub id (e.g. aimagelab/CoDE) or a folder holding the sklearn/ files")
    p.add_argument("--trust-pickles", action="store_true",
                   help="required: unpickling runs code from the file; only for a publisher you trust")
    p.add_argument("--out", help="heads folder to write (default: the deepsift cache for a hub id, "
                                 "SOURCE/heads for a folder)")
    p.set_defaults(func=cmd_import_official)

    export = subgroup(sub, groups, "export", "export the embedding network")
    p = export.add_parser("onnx", help="export to ONNX and check it against torch (1e-4)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=18)
    p.set_defaults(func=cmd_export_onnx)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id or local folder (default {DEFAULT_MODEL})")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--preprocessing", choices=("official", "resize"), default="official",
                   help="official: centre crop 224, no resize; resize: resize 248 then crop (training style)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    p.add_argument("--device", default="cpu", help="torch device for the network, e.g. cpu, cuda, cuda:1")
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: min(4, CPUs))")
    p.add_argument("--url-timeout", type=float, default=20.0, help="seconds before an image URL times out")


def _detector_kwargs(args: argparse.Namespace) -> dict:
    return dict(device=args.device, batch_size=args.batch_size, precision=args.precision,
                preprocessing=args.preprocessing,
                workers=args.workers, backend=args.backend, url_timeout=args.url_timeout)


def cmd_detect(args: argparse.Namespace) -> int:
    """deepsift detect."""
    from ..sources import expand_inputs
    from .detector import Detector

    det = Detector.load(args.model, heads=args.heads, classifier=args.classifier,
                        threshold=args.threshold, **_detector_kwargs(args))
    return write_predictions(det.predict_iter(expand_inputs(args.paths)), args.format, args.out)


def cmd_embed(args: argparse.Namespace) -> int:
    """deepsift embed."""
    from ..sources import expand_inputs
    from .detector import Detector
    from .embeddings import EmbeddingWriter

    det = Detector.load_backbone_only(args.model, **_detector_kwargs(args))
    failed = total = 0
    with EmbeddingWriter(args.out, dim=int(det.backbone.config.hidden_size), model=str(args.model)) as writer:
        for items, emb in progress(det.embed_batches(expand_inputs(args.paths)), "embed", unit="batch"):
            writer.write_batch(items, emb)
            total += len(items)
            failed += sum(it.row is None for it in items)
    print(f"deepsift: wrote {total - failed} embedding(s) to {args.out}; {failed} input(s) failed",
          file=sys.stderr)
    return EXIT_SOME_FAILED if failed else 0


def cmd_heads_fit(args: argparse.Namespace) -> int:
    """deepsift heads fit."""
    from .fitting import fit_heads_from_folders

    kinds = [k.strip() for k in args.classifiers.split(",") if k.strip()]
    summary = fit_heads_from_folders(args.real, args.fake, args.model, args.out, kinds=kinds,
                                     per_generator=not args.no_per_generator, **_detector_kwargs(args))
    for line in summary:
        print(line, file=sys.stderr)
    return 0


def cmd_import_official(args: argparse.Namespace) -> int:
    """deepsift weights import-official."""
    from .headset import cached_heads_dir, save_headset
    from .official import import_official

    heads = import_official(args.source, trust_pickles=args.trust_pickles)
    src = Path(args.source).expanduser()
    out = Path(args.out) if args.out else (src / "heads" if src.is_dir() else cached_heads_dir(args.source))
    dims = {h.references_.shape[1] if h.kind == "knn" else (h.coef_.shape[0] if h.kind == "linear"
            else h.support_vectors_.shape[1]) for h in heads.values()}
    save_headset(heads, out, model=str(args.source), embedding_dim=dims.pop() if len(dims) == 1 else None)
    print(f"deepsift: converted {', '.join(heads)} to {out} (JSON + safetensors; no pickle needed from now on)",
          file=sys.stderr)
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    """deepsift export onnx."""
    from .backbone import load_backbone
    from .onnx import ONNX_TOLERANCE, check_onnx, export_onnx

    net = load_backbone(args.model)
    out = export_onnx(net, args.out, opset=args.opset)
    diff = check_onnx(net, out)
    ok = diff <= ONNX_TOLERANCE
    print(f"deepsift: exported {out}; max |onnx - torch| = {diff:.2e} ({'ok' if ok else 'FAILED'}, "
          f"tolerance {ONNX_TOLERANCE:g})", file=sys.stderr)
    return 0 if ok else 1
