"""``deepsift adapt`` (a new generator: measure, adapt, publish) and ``deepsift model info`` (a model's card)."""
from __future__ import annotations

import argparse

from ..choices import DEFAULT_MODEL, HEAD_KINDS
from ..cliargs import (EXIT_OK, add_command, add_runtime_options, existing_dir, non_negative_int, open_fraction,
                       path_or_hub_id, positive_int, probability, subgroup)

EPILOG = """\
examples:
  deepsift adapt --model aimagelab/CoDE --data known/ --new flux=images/flux/ --out runs/flux --dry-run
  deepsift adapt --model aimagelab/CoDE --data known/ --new flux=images/flux/ --out runs/flux
  deepsift adapt ... --resume                 # after an interruption: finished steps are kept
  deepsift detect photo.jpg --model runs/flux/model
  deepsift model info runs/flux/model
"""


def _new_generator(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name.strip() or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=FOLDER (the new generator's name and its images), got {text!r}")
    return name.strip(), existing_dir(folder)


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    """Add ``adapt`` and ``model info``."""
    p = add_command(sub, "adapt", "a new generator: measure the model on it, refit its heads, publish a model folder",
                    description="Measure a model on a new generator's images, adapt it by refitting its heads on "
                                "the known generators and the new one, measure again (the new generator and "
                                "forgetting on the known ones), and write a model folder with its card.",
                    epilog=EPILOG)
    p.add_argument("--model", default=DEFAULT_MODEL, type=path_or_hub_id, help="the model to adapt (hub id or folder)")
    p.add_argument("--data", required=True, type=existing_dir,
                   help="labelled images of the generators the model knows: real/ + fake/<generator>/ (or any "
                        "layout eval reads)")
    p.add_argument("--new", required=True, type=_new_generator, metavar="NAME=FOLDER",
                   help="the new generator's name and a folder of its images (sub-folders: groups, e.g. prompts)")
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
    from .loop import run_adapt
    from .plan import AdaptPlan

    name, folder = args.new
    heads = tuple(dict.fromkeys(args.head or ("linear", "knn")))
    if args.classifier not in heads:
        heads = (args.classifier, *heads)
    plan = AdaptPlan(model=str(args.model), generator=name, images=folder, data=args.data, out=args.out, heads=heads,
                     classifier=args.classifier, target_auroc=args.target_auroc,
                     forget_tolerance=args.forget_tolerance, test_fraction=args.test_fraction,
                     bootstrap=args.bootstrap, seed=args.seed, min_test_images=args.min_test_images,
                     follow_links=args.follow_links, device=args.device, batch_size=args.batch_size,
                     workers=args.workers)
    if args.dry_run:
        print("\n".join(plan.describe()))
        return EXIT_OK
    run = run_adapt(plan, resume=args.resume, say=note)
    after, before = run.read("after"), run.read("before")["figures"]
    for g, fig in after["figures"].items():
        b, a = before[g]["auroc"]["value"], fig["auroc"]["value"]
        note(f"{g}: AUROC {b:.3f} -> {a:.3f} (n real {fig['n_real']}, fake {fig['n_fake']})")
    if after["method"]:
        note(f"adapted by refitting heads: {run.read('write-model')['model']}")
    else:
        why = [] if after["target_reached"] else [f"AUROC on {plan.generator} below {plan.target_auroc}"]
        why += [] if after["forgetting_ok"] else [f"a known generator dropped by more than {plan.forget_tolerance}"]
        note(f"refitting heads did not reach the target ({'; '.join(why)}): the model folder is written with "
             f"these figures; fine-tuning with replay is the next route (deepsift train --init {plan.model})")
    return EXIT_OK


def cmd_model_info(args: argparse.Namespace) -> int:
    """deepsift model info."""
    from ..model.card import card_summary

    print("\n".join(card_summary(args.model)))
    return EXIT_OK
