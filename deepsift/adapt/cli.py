"""``deepsift adapt`` (a new generator: measure, adapt, publish) and ``deepsift model info`` (a model's card)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..choices import DEFAULT_MODEL, HEAD_KINDS
from ..cliargs import (EXIT_OK, add_command, add_runtime_options, existing_dir, existing_file, existing_path,
                       non_negative_int, open_fraction, path_or_hub_id, positive_float, positive_int, probability,
                       subgroup)
from ..generate.spec import SPEC_HELP
from .plan import FINE_TUNE_MODES

EPILOG = """\
examples:
  deepsift adapt --model aimagelab/CoDE --data known/ --new flux=images/flux/ --out runs/flux --dry-run
  deepsift adapt --model aimagelab/CoDE --data known/ --new flux=images/flux/ --out runs/flux
  deepsift adapt ... --fine-tune always --fine-tune-steps 2000   # measure both routes
  deepsift adapt --data known/ --generate flux=t2i:black-forest-labs/FLUX.1-schnell,steps=4 \
      --prompts d3-shards/ --count 512 --out runs/flux        # build the new generator's images first
  deepsift adapt ... --resume                 # after an interruption: finished steps are kept
  deepsift detect photo.jpg --model runs/flux/model
  deepsift model info runs/flux/model
"""


def _new_generator(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name.strip() or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=FOLDER (the new generator's name and its images), got {text!r}")
    return name.strip(), existing_dir(folder)


def _spec(text: str) -> str:
    from ..generate.cli import _spec as check

    return check(text)


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    """Add ``adapt`` and ``model info``."""
    p = add_command(sub, "adapt", "a new generator: measure the model on it, refit heads or fine-tune, publish a model folder",
                    description="Measure a model on a new generator's images (given, or built from D3 prompts), "
                                "adapt it by the cheapest route that reaches the target (refit the heads on the "
                                "known generators and the new one; else fine-tune the backbone with replay of the "
                                "known ones), measure again (the new generator and forgetting on the known ones), "
                                "and write a model folder with its card.",
                    epilog=EPILOG)
    p.add_argument("--model", default=DEFAULT_MODEL, type=path_or_hub_id, help="the model to adapt (hub id or folder)")
    p.add_argument("--data", required=True, type=existing_path,
                   help="labelled images of the generators the model knows: real/ + fake/<generator>/ (or any "
                        "layout eval reads: D3 parquet shards with --real)")
    p.add_argument("--real", metavar="DIR", type=existing_dir, default=None,
                   help="folder of real images beside --data (required with parquet shards; default: none)")
    new = p.add_mutually_exclusive_group(required=True)
    new.add_argument("--new", type=_new_generator, metavar="NAME=FOLDER",
                     help="the new generator's name and a folder of its images (sub-folders: groups, e.g. prompts)")
    new.add_argument("--generate", type=_spec, metavar="NAME=KIND:SOURCE",
                     help="build the new generator's images with data build from --prompts: " + SPEC_HELP)
    p.add_argument("--prompts", type=path_or_hub_id, metavar="SRC", default=None,
                   help="with --generate: D3 shards (file, folder or hub id), JSONL or CSV of prompts (default: none)")
    p.add_argument("--count", type=non_negative_int, default=0,
                   help="with --generate: build the first N records of --prompts (default: 0, all)")
    p.add_argument("--ray", metavar="auto|ADDRESS", default=None,
                   help="with --generate: build on a Ray cluster: auto (join or start one) or its address "
                        "(default: no Ray)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="with --generate: torch CPU threads of the build; the same value gives the same bytes "
                        "(default: torch's choice)")
    p.add_argument("--out", required=True, help="the adaptation's folder: steps/, and model/ at the end")
    p.add_argument("--head", action="append", choices=HEAD_KINDS, default=None,
                   help="head kinds to refit; repeatable (default: linear and knn)")
    p.add_argument("--classifier", choices=HEAD_KINDS, default="linear", help="the head whose figures decide")
    p.add_argument("--target-auroc", type=probability, default=0.95, help="AUROC to reach on the new generator")
    p.add_argument("--forget-tolerance", type=probability, default=0.02,
                   help="largest AUROC drop allowed on any known generator")
    p.add_argument("--test-fraction", type=open_fraction, default=0.5,
                   help="share of each generator's groups held out for measuring")
    p.add_argument("--bootstrap", type=non_negative_int, default=200, help="bootstrap resamples for the intervals")
    p.add_argument("--min-test-images", type=positive_int, default=8,
                   help="refuse when fewer held-out images of the new generator remain")
    p.add_argument("--seed", type=non_negative_int, default=0, help="split and bootstrap seed")
    p.add_argument("--fine-tune", choices=FINE_TUNE_MODES, default="auto",
                   help="fine-tune the backbone with replay of the known generators (train --init): never, auto "
                        "(only when refitting the heads misses the target) or always")
    p.add_argument("--fine-tune-steps", type=positive_int, default=500, help="optimiser steps of the fine-tune")
    p.add_argument("--fine-tune-epochs", type=positive_int, default=5,
                   help="epochs in those steps (a checkpoint and a held-out head score after each)")
    p.add_argument("--fine-tune-lr", type=positive_float, default=1e-4, help="peak learning rate of the fine-tune")
    p.add_argument("--train-config", type=existing_file, metavar="FILE", default=None,
                   help="YAML file of further train settings for the fine-tune (batch_size, precision, ...; "
                        "default: train's recipe)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted adaptation in --out")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    add_runtime_options(p, batch_size=32, device="auto", url_timeout=False)  # the shared --device/--batch-size/--workers
    p.add_argument("--follow-links", action="store_true", help="follow directory links out of the named folders")
    p.set_defaults(func=cmd_adapt)

    model = subgroup(sub, groups, "model", "a model folder's card and lineage")
    q = add_command(model, "info", "show a model folder's card: base model, generators seen and held out, figures")
    q.add_argument("model", type=existing_dir, help="a model folder (with README.md)")
    q.set_defaults(func=cmd_model_info)


def cmd_adapt(args: argparse.Namespace) -> int:
    """deepsift adapt."""
    from ..output import note
    from .runner import run_adapt
    from .plan import AdaptPlan

    from ..data.layout import detect_layout
    from ..exceptions import UsageError

    if not args.real and detect_layout(Path(args.data)) == "parquet":  # refused before any work (a build included)
        raise UsageError(f"{args.data}: D3 parquet shards hold no real images; give a folder of them with --real")
    if args.generate:
        from ..generate.spec import parse_spec

        name, folder = parse_spec(args.generate).name, ""
        if not args.prompts:
            raise UsageError("--generate needs --prompts (the D3 shards, JSONL or CSV to build from)")
    else:
        (name, folder) = args.new
        extra = [f for f in ("prompts", "ray", "threads") if getattr(args, f)] + (["count"] if args.count else [])
        if extra:
            raise UsageError(f"--{extra[0]} goes with --generate, not --new")
    train_config = {}
    if args.train_config:
        from ..train.config import read_config_file

        train_config = read_config_file(args.train_config)
    heads = tuple(dict.fromkeys(args.head or ("linear", "knn")))
    if args.classifier not in heads:
        heads = (args.classifier, *heads)
    plan = AdaptPlan(model=str(args.model), generator=name, images=folder, data=args.data, real=args.real or "",
                     out=args.out, heads=heads, classifier=args.classifier, target_auroc=args.target_auroc,
                     forget_tolerance=args.forget_tolerance, test_fraction=args.test_fraction,
                     bootstrap=args.bootstrap, seed=args.seed, min_test_images=args.min_test_images,
                     follow_links=args.follow_links, device=args.device, batch_size=args.batch_size,
                     workers=args.workers, fine_tune=args.fine_tune, fine_tune_steps=args.fine_tune_steps,
                     fine_tune_epochs=args.fine_tune_epochs, fine_tune_lr=args.fine_tune_lr,
                     train_config=train_config, generate=args.generate or "", prompts=args.prompts or "",
                     count=args.count, ray=args.ray, threads=args.threads)
    if args.dry_run:
        print("\n".join(plan.describe()))
        return EXIT_OK
    run = run_adapt(plan, resume=args.resume, say=note)
    for line in report(run):
        note(line)
    return EXIT_OK


def _fmt(fig: dict) -> str:
    value = fig.get("value")
    return "n/a" if value is None else f"{value:.3f}" + (" ⚠" if fig.get("unreliable") else "")


def report(run: "object") -> list[str]:
    """The adaptation in a few lines: each route's figures on every generator, and the route written."""
    plan = run.plan  # type: ignore[attr-defined]
    before = run.read("before")["figures"]  # type: ignore[attr-defined]
    lines = []
    marked = False
    for step in ("after", "after-2"):
        after = run.read(step)  # type: ignore[attr-defined]
        if after.get("skipped"):
            continue
        lines.append(f"{after['route']}: " + ("target reached" if after["method"] else "target NOT reached"))
        for g, fig in after["figures"].items():
            b, a = (_fmt(f["auroc"]) for f in (before[g], fig))
            why = fig["auroc"].get("unreliable")
            marked |= bool(why or before[g]["auroc"].get("unreliable"))
            lines.append(f"  {g}: AUROC {b} -> {a} (n real {fig['n_real']}, fake {fig['n_fake']}"
                         + (f"; ⚠ {why}" if why else "") + ")")
    if marked:
        from ..evaluate.reliability import RULE_SHORT

        lines.append(RULE_SHORT)
    written = run.read("write-model")  # type: ignore[attr-defined]
    if written["target_reached"]:
        lines.append(f"adapted by {written['route']}: {written['model']}")
    else:
        lines.append(f"no route reached AUROC >= {plan.target_auroc} on {plan.generator} with every known generator "
                     f"within {plan.forget_tolerance}: {written['model']} holds the {written['route']} route "
                     f"with these figures" + ("" if plan.fine_tune != "never" else
                                              " (fine-tuning with replay is off: --fine-tune auto runs it)"))
    return lines


def cmd_model_info(args: argparse.Namespace) -> int:
    """deepsift model info."""
    from ..model.card import card_summary

    print("\n".join(card_summary(args.model)))
    return EXIT_OK
