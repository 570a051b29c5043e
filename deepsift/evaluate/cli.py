"""deepsift eval ...: one command per evaluation protocol.

    deepsift eval generators DATA --model M [--classifier linear --classifier knn] [--control jpeg:90] [--report DIR]
    deepsift eval logo DATA --model M [--classifier linear] [--group folder|camera|image] [--groups CSV]
    deepsift eval audit DATA [--warn-above 0.7] [--report DIR]
    deepsift eval robustness DATA --model M [--transform jpeg --transform blur] [--metric auroc]
    deepsift eval fpr FOLDER --model M
    deepsift eval scores --labels labels.csv --scores a.csv [--scores b.json]
    deepsift eval calibrate --labels val.csv --scores val_scores.csv --method platt --out cal.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..choices import CALIBRATION_METHODS, DATASET_LAYOUTS, METRIC_NAMES
from ..cliargs import (
    EXIT_OK,
    EXIT_PARTIAL,
    add_command,
    add_detector_options,
    add_folder_options,
    add_group_options,
    detector_kwargs,
    existing_dir,
    existing_file,
    existing_path,
    float_range,
    non_negative_int,
    open_fraction,
    probability,
    probability_band,
    subgroup,
)
from ..exceptions import UsageError

AUDIT_EPILOG = """\
Reads file headers only (no pixel decode where the format allows). Exit codes: 0 audited (warnings
are printed, not errors); 3 some headers could not be read (left out, counted in the report);
1 an error stopped the command; 2 bad usage.
"""

EVAL_EPILOG = """\
Exit codes: 0 every image was scored; 3 finished, but some images could not be read (they are
listed in the report and left out of the metrics); 1 an error stopped the command; 2 bad usage.
"""


def _common(p: argparse.ArgumentParser, detectors: bool = True, heads: bool = True) -> None:
    if detectors:
        g = add_detector_options(p, model_default=None, classifier="many", heads=heads)
        if not heads:  # accepted from older scripts, never used: the protocol fits its own heads
            g.add_argument("--heads", metavar="DIR", type=existing_dir,
                           help="ignored: this protocol fits its own heads in every fold, from the model's "
                                "backbone (default: none)")
        g.add_argument("--detector", action="append", default=[], metavar="[NAME=]KIND:ARG",
                       help="another detector, e.g. a trained baseline (frequency:runs/freq); repeat to compare")
    p.add_argument("--bootstrap", type=non_negative_int, default=0, metavar="N",
                   help="bootstrap resamples for 95%% intervals (0: none)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the bootstrap and random splits")
    p.add_argument("--report", metavar="DIR", help="write report.html, report.md and metrics.json here "
                                                   "(default: print the summary only)")


def _control_type(text: str):
    """argparse type of --control: jpeg:Q, png or resize:N (range-checked at parsing)."""
    from .control import parse_control

    try:
        return parse_control(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _control(p: argparse.ArgumentParser, how: str = "fittable detectors are refitted on the controlled images") -> None:
    p.add_argument("--control", type=_control_type, metavar="TRANSFORM",
                   help="re-encoding control: pass every image, real and fake, through jpeg:Q (1-100), png or "
                        f"resize:N (shorter side, 8-4096) too, and report both side by side with the drop; {how} "
                        "(default: none)")


def _data(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", type=existing_path,
                   help="dataset: " + "; ".join(f"{k}: {v}" for k, v in DATASET_LAYOUTS.items() if k != "real-only"))
    p.add_argument("--layout", default="auto", choices=["auto", *[k for k in DATASET_LAYOUTS if k != "real-only"]],
                   help="dataset layout (auto: detected from what is on disk)")
    p.add_argument("--real", metavar="DIR", type=existing_dir,
                   help="folder of real images (required with parquet shards; default: none)")
    add_folder_options(p)


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    """Add the ``eval`` command group."""
    ev = subgroup(sub, groups, "eval", "evaluate detectors: metrics, protocols, reports")
    p = add_command(ev, "generators", "real vs each generator and all together (folders, D3 test, parquet)",
                    epilog=EVAL_EPILOG)
    _data(p)
    _common(p)
    p.add_argument("--unsure", metavar="LOW,HIGH", type=probability_band,
                   help="report predictions with LOW <= P(fake) < HIGH separately (default: no band)")
    p.add_argument("--val", metavar="DATA", type=existing_path,
                   help="validation dataset for --calibrate / --target-fpr (default: none)")
    p.add_argument("--calibrate", choices=CALIBRATION_METHODS, help="fit this calibration on --val (default: none)")
    p.add_argument("--target-fpr", type=probability,
                   help="set each detector's threshold for this false-positive rate on --val (default: none)")
    p.add_argument("--calibration", metavar="JSON", type=existing_file,
                   help="apply a calibration saved by 'eval calibrate' to the raw scores (default: none)")
    p.add_argument("--embedding-map", default="pca", choices=("pca", "tsne"), help="projection of the embedding map")
    _control(p)
    p.set_defaults(func=_cmd_generators)

    p = add_command(ev, "logo", "leave one generator out: fit heads without G, test on G, for every G "
                                "(the model's backbone only: no heads folder needed)", epilog=EVAL_EPILOG)
    _data(p)
    _common(p, heads=False)
    p.add_argument("--real-train-fraction", type=open_fraction, default=0.5,
                   help="share of the real images (of their groups) that train the heads; the rest are tested")
    add_group_options(p)
    _control(p)
    p.set_defaults(func=_cmd_logo)

    p = add_command(ev, "robustness", "metric against JPEG/WebP/resize/blur/crop/noise/social strength",
                    epilog=EVAL_EPILOG)
    _data(p)
    _common(p)
    p.add_argument("--transform", action="append", default=None, metavar="FAMILY",
                   help="perturbation family (jpeg, webp, resize, blur, crop, noise, social); repeat for several "
                        "(default: all)")
    p.add_argument("--metric", default="auroc", choices=METRIC_NAMES, help="metric plotted against strength")
    _control(p, "test side only: the detectors are swept as given, never refitted")
    p.set_defaults(func=_cmd_robustness)

    p = add_command(ev, "audit", "confound audit: can file format, JPEG quality, size or metadata alone tell "
                                 "real from fake?", epilog=AUDIT_EPILOG)
    _data(p)
    p.add_argument("--warn-above", type=float_range(0.5, 1.0), default=0.7, metavar="AUROC",
                   help="warn when one feature alone separates real from fake (or from one generator) above this")
    p.add_argument("--report", metavar="DIR", help="write report.html, report.md and metrics.json here "
                                                   "(default: print the summary only)")
    p.set_defaults(func=_cmd_audit)

    p = add_command(ev, "fpr", "false-positive rate on a folder of real photos", epilog=EVAL_EPILOG)
    p.add_argument("folder", type=existing_dir, help="folder of real photos (recursive)")
    add_folder_options(p)
    _common(p)
    p.set_defaults(func=_cmd_fpr)

    p = add_command(ev, "scores", "evaluate prediction files against a label file")
    p.add_argument("--labels", required=True, type=existing_file, metavar="FILE",
                   help="CSV/JSON/JSONL: id, label (0 real / 1 fake) [, generator]")
    p.add_argument("--scores", required=True, action="append", type=existing_file, metavar="FILE",
                   help="CSV/JSON/JSONL of id -> P(fake) or score; repeat to compare")
    p.add_argument("--threshold", type=probability, default=0.5,
                   help="call an image fake when its score >= this")
    p.add_argument("--unsure", metavar="LOW,HIGH", type=probability_band,
                   help="report predictions with LOW <= score < HIGH separately (default: no band)")
    _common(p, detectors=False)
    p.set_defaults(func=_cmd_scores)

    p = add_command(ev, "calibrate", "fit Platt/isotonic calibration and a target-FPR threshold on validation scores")
    p.add_argument("--labels", required=True, type=existing_file, metavar="FILE",
                   help="CSV/JSON/JSONL: id, label (0 real / 1 fake)")
    p.add_argument("--scores", required=True, type=existing_file, metavar="FILE",
                   help="validation scores; the raw 'score' column is preferred (a calibration maps raw scores)")
    p.add_argument("--method", default="platt", choices=CALIBRATION_METHODS, help="calibration method")
    p.add_argument("--target-fpr", type=probability,
                   help="also choose the threshold with at most this false-positive rate (default: none)")
    p.add_argument("--out", required=True, metavar="JSON", help="calibration file to write")
    p.set_defaults(func=_cmd_calibrate)


def _detectors(args: argparse.Namespace, backbone_only: bool = False) -> dict:
    from ..hub import hub_access, looks_like_hub_id
    from .detectors import load_detectors

    if not args.model and not args.detector:
        raise UsageError("nothing to evaluate: give --model (CoDE) and/or --detector [NAME=]KIND:ARG")
    if args.model and looks_like_hub_id(args.model) and not Path(args.model).expanduser().exists():
        hub_access(args.model, marker="config.json", what="model")  # at once, before torch loads
    return load_detectors(model=args.model, heads=None if backbone_only else args.heads,
                          classifiers=args.classifier or ["linear"], specs=args.detector,
                          backbone_only=backbone_only, **detector_kwargs(args))


def _check_report(args: argparse.Namespace) -> None:
    """Check the ``--report`` folder before any work (one line, exit 1, when it cannot be written)."""
    if getattr(args, "report", None) and getattr(args, "data", None):
        data_root, rep = Path(args.data).resolve(), Path(args.report).resolve()
        if data_root.is_dir() and (rep == data_root or data_root in rep.parents):
            raise UsageError(f"--report {args.report} is inside the dataset {args.data}: its plots would be read "
                             f"as images by the next run; write the report elsewhere")
    if getattr(args, "report", None):
        from ..outplaces import ensure_writable_dir

        ensure_writable_dir(args.report)


def _finish(args: argparse.Namespace, report, summary: list[str], unreadable: int = 0) -> int:
    for line in summary:
        print(line)
    if args.report:
        paths = report.write(args.report)
        print(f"report: {paths['html']} ({paths['md'].name}, {paths['json'].name})")
    if unreadable:
        from ..output import note

        note(f"deepsift: {unreadable} image(s) could not be read and were left out of the metrics")
        return EXIT_PARTIAL
    return EXIT_OK


def _unreadable(report) -> int:
    """Images left out because they could not be read (the most of any detector)."""
    errors = report.results.get("errors") or {}
    return max((len(v) for v in errors.values()), default=0)


def _eval_set(args: argparse.Namespace):
    """The dataset of ``args.data`` (parquet shards need ``--real``: said before any work)."""
    from .datasets import detect_layout, load_eval_set

    layout = args.layout if args.layout != "auto" else detect_layout(Path(args.data))
    if layout == "parquet" and args.real is None:
        raise UsageError(f"{args.data}: D3 parquet shards hold no real images; add --real DIR (a folder of real images)")
    data = load_eval_set(args.data, layout, args.real, follow_links=args.follow_links)
    _note_skipped(data)
    return data


def _note_skipped(data) -> None:
    """Say which folders the walk could not read (they are left out, never silently)."""
    from ..output import note

    for err in data.skipped[:5]:
        note(f"deepsift: {err.source}: {err.error}")
    if len(data.skipped) > 5:
        note(f"deepsift: ... and {len(data.skipped) - 5} more folder(s) left out")


def _cmd_generators(args: argparse.Namespace) -> int:
    _check_report(args)
    from .calibration import Calibrator
    from .datasets import load_eval_set
    from .runs import run_generators

    if (args.calibrate or args.target_fpr is not None) and not args.val:
        raise UsageError("--calibrate and --target-fpr need a validation set (--val DATA)")
    data = _eval_set(args)
    val = load_eval_set(args.val, "auto", args.real, follow_links=args.follow_links) if args.val else None
    cal = Calibrator.load(args.calibration) if args.calibration else None
    report, summary = run_generators(
        _detectors(args), data, bootstrap=args.bootstrap, seed=args.seed, unsure=args.unsure, val=val,
        calibration=args.calibrate, target_fpr=args.target_fpr, embedding_method=args.embedding_map,
        calibrator=cal, control=args.control)
    return _finish(args, report, summary, _unreadable(report))


def _cmd_logo(args: argparse.Namespace) -> int:
    _check_report(args)
    from .runs import run_logo
    from .scoring import is_code_detector

    from ..data.groups import assign_groups, read_group_file

    data = _eval_set(args)
    data.samples = assign_groups(data.samples, args.group, read_group_file(args.groups) if args.groups else None)
    if args.heads and args.model:
        from ..output import note

        note(f"deepsift: eval logo fits its own heads in every fold; --heads {args.heads} is not used")
    dets = _detectors(args, backbone_only=True)
    code = [d for d in dets.values() if is_code_detector(d)]
    others = [n for n, d in dets.items() if not is_code_detector(d)]
    if len(others) > (0 if code else 1):  # one run per command: CoDE heads, or a single other detector
        raise UsageError(f"eval logo evaluates the CoDE heads (--classifier, repeatable) or one --detector; "
                         f"run it separately for {', '.join(others if code else others[1:])}")
    kinds = list(dict.fromkeys(args.classifier or ["linear"]))
    if code:
        report, summary = run_logo(code[0], data, kinds=kinds, bootstrap=args.bootstrap, seed=args.seed,
                                   real_train_fraction=args.real_train_fraction, control=args.control)
    else:
        name, det = next(iter(dets.items()))
        report, summary = run_logo(det, data, kinds=[name], bootstrap=args.bootstrap, seed=args.seed,
                                   real_train_fraction=args.real_train_fraction, name=name, control=args.control)
    return _finish(args, report, summary, _unreadable(report))


def _cmd_robustness(args: argparse.Namespace) -> int:
    _check_report(args)
    from .robustrun import run_robustness

    data = _eval_set(args)
    fams = list(dict.fromkeys(args.transform)) if args.transform else None
    try:
        report, summary = run_robustness(_detectors(args), data, families=fams, metric=args.metric, seed=args.seed,
                                         bootstrap=args.bootstrap, control=args.control)
    except ValueError as exc:  # unknown transform family
        raise UsageError(str(exc)) from None
    skipped = (report.results.get("robustness") or {}).get("skipped") or []
    return _finish(args, report, summary, len(skipped))


def _cmd_audit(args: argparse.Namespace) -> int:
    _check_report(args)
    from .audit import auroc_text, audit, audit_block
    from .report import Report

    data = _eval_set(args)
    result = audit(data.samples, warn_above=args.warn_above)
    report = Report("deepsift confound audit")
    report.results["dataset"] = {"root": data.root, "layout": data.layout, "counts": data.counts()}
    audit_block(report, result)
    lines = [f"finding: {result.headline}"] if result.headline else []
    lines += [f"WARNING: {w}" for w in result.warnings] or [f"no feature separates real from fake above "
                                                            f"AUROC {args.warn_above:g}"]
    lines += [f"{name}: AUROC alone " + ("n/a" if f["auroc"] is None else f"{auroc_text(f['auroc'], f['unreliable'])} "
                                         f"({f['direction']})") for name, f in result.features.items()]
    return _finish(args, report, lines, result.unreadable)


def _cmd_fpr(args: argparse.Namespace) -> int:
    _check_report(args)
    from .runs import run_fpr

    report, summary = run_fpr(_detectors(args), args.folder, bootstrap=args.bootstrap, seed=args.seed,
                              follow_links=args.follow_links)
    return _finish(args, report, summary, _unreadable(report))


def _cmd_scores(args: argparse.Namespace) -> int:
    _check_report(args)
    from .runs import run_scores
    from .scorefiles import join, read_labels, read_scores

    labels = read_labels(args.labels)
    runs = {}
    for path in args.scores:
        ids, y, s = join(labels, read_scores(path), path)
        name = Path(path).stem if Path(path).stem not in runs else path
        runs[name] = (y, s, [labels.generators[i] for i in ids])
    report, summary = run_scores(labels, runs, threshold=args.threshold, bootstrap=args.bootstrap, seed=args.seed,
                                 unsure=args.unsure)
    return _finish(args, report, summary)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from ..outplaces import output_file
    from .calibration import Calibrator, threshold_for_fpr
    from .scorefiles import RAW_SCORE_COLUMNS, join, read_labels, read_scores

    output_file(args.out)  # a file read back later: a folder, device or FIFO is refused, never replaced
    labels = read_labels(args.labels)
    _, y, s = join(labels, read_scores(args.scores, RAW_SCORE_COLUMNS), args.scores)
    cal = Calibrator(args.method).fit(y, s)
    if args.target_fpr is not None:
        cal.params["threshold"] = threshold_for_fpr(y, cal.transform(s), args.target_fpr)
        cal.params["target_fpr"] = args.target_fpr
    cal.save(args.out)
    extra = f", threshold {cal.params['threshold']:g} for FPR <= {args.target_fpr}" if args.target_fpr is not None else ""
    print(f"calibration ({args.method}) fitted on {len(y)} validation scores{extra}: {args.out}", file=sys.stdout)
    return EXIT_OK
