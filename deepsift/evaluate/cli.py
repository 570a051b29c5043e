"""``deepsift eval ...``: one command per evaluation protocol.

    deepsift eval generators DATA --model M [--classifier linear --classifier knn] [--report DIR]
    deepsift eval logo DATA --model M [--classifier linear]
    deepsift eval robustness DATA --model M [--transforms jpeg,blur] [--metric auroc]
    deepsift eval fpr FOLDER --model M
    deepsift eval scores --labels labels.csv --scores a.csv [--scores b.json]
    deepsift eval calibrate --labels val.csv --scores val_scores.csv --method platt --out cal.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..exceptions import UsageError
from .calibration import CALIBRATION_METHODS, Calibrator, parse_band, threshold_for_fpr
from .datasets import LAYOUTS, load_eval_set
from .metrics import METRIC_NAMES
from .scorefiles import RAW_SCORE_COLUMNS, join, read_labels, read_scores


def _common(p: argparse.ArgumentParser, detectors: bool = True) -> None:
    if detectors:
        p.add_argument("--model", help="CoDE model folder or hub id (e.g. aimagelab/CoDE)")
        p.add_argument("--heads", help="classifier heads folder (default: beside the model or cached)")
        p.add_argument("--classifier", action="append", default=None, help="head kind; repeat to compare heads")
        p.add_argument("--detector", action="append", default=[], metavar="[NAME=]KIND:ARG",
                       help="another detector (e.g. a baseline); repeat to compare")
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--preprocessing", default="official", choices=("official", "resize"))
    p.add_argument("--bootstrap", type=int, default=0, metavar="N", help="bootstrap resamples for 95%% intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", metavar="DIR", help="write report.html, report.md and metrics.json here")


def _data(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="dataset: " + "; ".join(f"{k}: {v}" for k, v in LAYOUTS.items() if k != "real-only"))
    p.add_argument("--layout", default="auto", choices=["auto", *[k for k in LAYOUTS if k != "real-only"]])
    p.add_argument("--real", metavar="DIR", help="folder of real images (required with parquet shards)")


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    """Add the ``eval`` command group."""
    from ..cli import subgroup

    ev = subgroup(sub, groups, "eval", "evaluate detectors: metrics, protocols, reports")
    p = ev.add_parser("generators", help="real vs each generator and all together (folders, D3 test, parquet)")
    _data(p)
    _common(p)
    p.add_argument("--unsure", metavar="LOW,HIGH", help="report predictions with LOW <= P(fake) < HIGH separately")
    p.add_argument("--val", metavar="DATA", help="validation dataset for --calibrate / --target-fpr")
    p.add_argument("--calibrate", choices=CALIBRATION_METHODS, help="fit this calibration on --val")
    p.add_argument("--target-fpr", type=float, help="set each detector's threshold for this FPR on --val")
    p.add_argument("--calibration", metavar="JSON", help="apply a saved calibration to the raw scores")
    p.add_argument("--embedding-map", default="pca", choices=("pca", "tsne"))
    p.set_defaults(func=_cmd_generators)

    p = ev.add_parser("logo", help="leave one generator out: fit heads without G, test on G, for every G")
    _data(p)
    _common(p)
    p.add_argument("--real-train-fraction", type=float, default=0.5)
    p.set_defaults(func=_cmd_logo)

    p = ev.add_parser("robustness", help="metric against JPEG/WebP/resize/blur/crop/noise/social strength")
    _data(p)
    _common(p)
    p.add_argument("--transforms", help="comma-separated families (default: all)")
    p.add_argument("--metric", default="auroc", choices=METRIC_NAMES)
    p.set_defaults(func=_cmd_robustness)

    p = ev.add_parser("fpr", help="false-positive rate on a folder of real photos")
    p.add_argument("folder")
    _common(p)
    p.set_defaults(func=_cmd_fpr)

    p = ev.add_parser("scores", help="evaluate prediction files against a label file")
    p.add_argument("--labels", required=True, help="CSV/JSON: id, label (0 real / 1 fake) [, generator]")
    p.add_argument("--scores", required=True, action="append", help="CSV/JSON/JSONL of id -> score; repeat to compare")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--unsure", metavar="LOW,HIGH")
    _common(p, detectors=False)
    p.set_defaults(func=_cmd_scores)

    p = ev.add_parser("calibrate", help="fit Platt/isotonic calibration and a target-FPR threshold on validation scores")
    p.add_argument("--labels", required=True)
    p.add_argument("--scores", required=True,
                   help="validation scores; the raw 'score' column is preferred (a calibration maps raw scores)")
    p.add_argument("--method", default="platt", choices=CALIBRATION_METHODS)
    p.add_argument("--target-fpr", type=float)
    p.add_argument("--out", required=True, metavar="JSON")
    p.set_defaults(func=_cmd_calibrate)


def _detectors(args: argparse.Namespace) -> dict:
    from .detectors import load_detectors

    return load_detectors(model=args.model, heads=args.heads, classifiers=args.classifier or ["linear"],
                          specs=args.detector, batch_size=args.batch_size, preprocessing=args.preprocessing)


def _finish(args: argparse.Namespace, report, summary: list[str]) -> int:
    for line in summary:
        print(line)
    if args.report:
        paths = report.write(args.report)
        print(f"report: {paths['html']} ({paths['md'].name}, {paths['json'].name})")
    return 0


def _cmd_generators(args: argparse.Namespace) -> int:
    from .runs import run_generators

    if (args.calibrate or args.target_fpr is not None) and not args.val:
        raise UsageError("--calibrate and --target-fpr need a validation set (--val DATA)")
    data = load_eval_set(args.data, args.layout, args.real)
    val = load_eval_set(args.val, "auto", args.real) if args.val else None
    cal = Calibrator.load(args.calibration) if args.calibration else None
    report, summary = run_generators(
        _detectors(args), data, bootstrap=args.bootstrap, seed=args.seed,
        unsure=parse_band(args.unsure) if args.unsure else None, val=val, calibration=args.calibrate,
        target_fpr=args.target_fpr, embedding_method=args.embedding_map, calibrator=cal)
    return _finish(args, report, summary)


def _cmd_logo(args: argparse.Namespace) -> int:
    from .runs import run_logo
    from .scoring import is_code_detector

    data = load_eval_set(args.data, args.layout, args.real)
    dets = _detectors(args)
    code = [d for d in dets.values() if is_code_detector(d)]
    others = [n for n, d in dets.items() if not is_code_detector(d)]
    if len(others) > (0 if code else 1):  # one run per command: CoDE heads, or a single other detector
        raise UsageError(f"eval logo evaluates the CoDE heads (--classifier, repeatable) or one --detector; "
                         f"run it separately for {', '.join(others if code else others[1:])}")
    kinds = list(dict.fromkeys(args.classifier or ["linear"]))
    if code:
        report, summary = run_logo(code[0], data, kinds=kinds, bootstrap=args.bootstrap, seed=args.seed,
                                   real_train_fraction=args.real_train_fraction)
    else:
        name, det = next(iter(dets.items()))
        report, summary = run_logo(det, data, kinds=[name], bootstrap=args.bootstrap, seed=args.seed,
                                   real_train_fraction=args.real_train_fraction, name=name)
    return _finish(args, report, summary)


def _cmd_robustness(args: argparse.Namespace) -> int:
    from .runs import run_robustness

    data = load_eval_set(args.data, args.layout, args.real)
    fams = [f.strip() for f in args.transforms.split(",") if f.strip()] if args.transforms else None
    try:
        report, summary = run_robustness(_detectors(args), data, families=fams, metric=args.metric, seed=args.seed,
                                         bootstrap=args.bootstrap)
    except ValueError as exc:  # unknown transform family
        raise UsageError(str(exc)) from None
    return _finish(args, report, summary)


def _cmd_fpr(args: argparse.Namespace) -> int:
    from .runs import run_fpr

    report, summary = run_fpr(_detectors(args), args.folder, bootstrap=args.bootstrap, seed=args.seed)
    return _finish(args, report, summary)


def _cmd_scores(args: argparse.Namespace) -> int:
    from .runs import run_scores

    labels = read_labels(args.labels)
    runs = {}
    for path in args.scores:
        ids, y, s = join(labels, read_scores(path), path)
        name = Path(path).stem if Path(path).stem not in runs else path
        runs[name] = (y, s, [labels.generators[i] for i in ids])
    report, summary = run_scores(labels, runs, threshold=args.threshold, bootstrap=args.bootstrap, seed=args.seed,
                                 unsure=parse_band(args.unsure) if args.unsure else None)
    return _finish(args, report, summary)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    labels = read_labels(args.labels)
    _, y, s = join(labels, read_scores(args.scores, RAW_SCORE_COLUMNS), args.scores)
    cal = Calibrator(args.method).fit(y, s)
    if args.target_fpr is not None:
        cal.params["threshold"] = threshold_for_fpr(y, cal.transform(s), args.target_fpr)
        cal.params["target_fpr"] = args.target_fpr
    cal.save(args.out)
    extra = f", threshold {cal.params['threshold']:.4g} for FPR <= {args.target_fpr}" if args.target_fpr is not None else ""
    print(f"calibration ({args.method}) fitted on {len(y)} validation scores{extra}: {args.out}", file=sys.stdout)
    return 0
