"""``deepsift train``: train (or fine-tune) the CoDE network on D3 shards, WebDataset tars or builder output."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..choices import PRECISIONS, TRAIN_KEEP
from ..cliargs import (EXIT_OK, add_command, existing_dir, existing_file, existing_path, non_negative_float,
                       float_range, non_negative_int, path_or_hub_id, positive_float, positive_int, workers_count)

EPILOG = """\
examples:
  deepsift train --data shards/ --real real/ --out runs/code1
  deepsift train --data shards/ --real real/ --out runs/code1 --config train.yaml --steps 20000
  deepsift train --resume runs/code1                      # continue exactly where the checkpoint was taken
  deepsift train --data shards/ --real real/ --out runs/ft --init aimagelab/CoDE --lr 1e-4 --steps 2000
  deepsift train --data shards/ --real real/ --out runs/no-sdxl --leave-out stable-diffusion-xl
  torchrun --nproc-per-node 4 -m deepsift train --data shards/ --real real/ --out runs/ddp --device cuda

Every key of the config file is also a flag (batch_size <-> --batch-size); a flag wins over the
file, the file over the recipe's defaults. The output folder is a model folder in the published
layout (config.json, model.safetensors, preprocessor_config.json, heads/) that 'deepsift detect
--model OUT' loads, plus train_log.jsonl, train_plot.png and the checkpoint.
"""

# key -> (argparse type or the tuple of values allowed, help); the flag is --key-with-dashes, its default is the config's
KEYS: dict[str, tuple] = {
    "steps": (positive_int, "optimiser steps in all (stop after N)"),
    "steps_per_epoch": (positive_int, "optimiser steps per epoch (head refit, checkpoint, early stopping)"),
    "schedule_steps": (non_negative_int, "length of the LR schedule in steps; 0 = --steps"),
    "warmup_steps": (non_negative_int, "linear warm-up steps"),
    "lr": (positive_float, "peak learning rate (AdamW)"),
    "warmup_lr": (non_negative_float, "learning rate at the start of the warm-up"),
    "min_lr": (non_negative_float, "learning rate at the end of the cosine schedule"),
    "weight_decay": (non_negative_float, "AdamW weight decay (not on biases, norms, position embedding, CLS token)"),
    "batch_size": (positive_int, "records per optimiser step per process (8 views each)"),
    "grad_accum": (positive_int, "micro-batches per step (gradient accumulation)"),
    "clip_grad": (non_negative_float, "clip the gradient norm to this; 0 = no clipping"),
    "seed": (non_negative_int, "random seed (data order, crops, augmentations, positives)"),
    "workers": (workers_count, "data loader worker processes per training process ('auto': the CPUs shared)"),
    "tau": (positive_float, "InfoNCE temperature"),
    "aug_max_ops": (non_negative_int, "augmentation A draws 0..N of the 19 families per image"),
    "holdout": (positive_int, "records held out of training to refit and score the linear head each epoch"),
    "patience": (non_negative_int, "stop after N epochs below the best head accuracy; 0 = never"),
    "keep": (TRAIN_KEEP, "the model folder's weights: 'best' (the epoch with the best held-out head accuracy) or 'last'"),
    "log_every": (positive_int, "write a log line every N steps"),
    "max_bad_share": (float_range(0.0, 1.0), "stop when more than this share of the training records cannot be "
                                             "decoded (they are skipped and logged until then)"),
    "hidden_size": (positive_int, "ViT width (new networks only)"),
    "num_hidden_layers": (positive_int, "ViT depth (new networks only)"),
    "num_attention_heads": (positive_int, "ViT attention heads (new networks only)"),
    "intermediate_size": (positive_int, "ViT MLP width (new networks only)"),
    "patch_size": (positive_int, "ViT patch size (new networks only)"),
}


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    """Add ``deepsift train``."""
    from .config import TrainConfig

    defaults = TrainConfig()
    p = add_command(sub, "train", "train or fine-tune the CoDE network (contrastive global-local objective)",
                    description="Train or fine-tune the CoDE network on D3 shards, WebDataset tars or "
                                "'data build' output.", epilog=EPILOG)
    p.add_argument("--data", metavar="PATH", action="append", type=existing_path, default=None,
                   help="D3 parquet shards, a data build output folder or WebDataset tars; repeatable "
                        "(default: with --resume, the run's own)")
    p.add_argument("--real", metavar="DIR", type=existing_dir, default=None,
                   help="real images by record id: a fetch-real folder or a folder of ID.EXT files "
                        "(default: none; tars and builder output carry their own)")
    p.add_argument("--out", metavar="DIR", default=None, help="output folder (model, log, checkpoint) "
                                                                "(default: the --resume folder)")
    p.add_argument("--config", metavar="FILE", type=existing_file, default=None,
                   help="YAML file of settings (default: none, the recipe)")
    p.add_argument("--resume", metavar="DIR", type=existing_dir, default=None,
                   help="continue the run in DIR from its checkpoint, exactly (default: start afresh)")
    p.add_argument("--init", metavar="MODEL", type=path_or_hub_id, default=None,
                   help="fine-tune from these weights: a hub id (aimagelab/CoDE) or a model folder "
                        "(default: a new network)")
    p.add_argument("--leave-out", metavar="GEN", action="append", default=None,
                   help="train without generator GEN, then evaluate on it and on the seen ones; repeatable "
                        "(default: none)")
    p.add_argument("--global-negatives", action="store_true", default=None,
                   help="with several processes, take negatives from every rank (gradient-keeping all_gather)")
    p.add_argument("--device", default=None, help="torch device of the network: cpu, cuda, cuda:1, ... (default: cpu)")
    p.add_argument("--precision", choices=PRECISIONS, default=None, help="autocast precision (default: bf16)")
    for key, (typ, text) in KEYS.items():
        flag = "--" + key.replace("_", "-")
        kind = {"choices": typ} if isinstance(typ, tuple) else {"type": typ}  # a tuple: the values allowed
        p.add_argument(flag, default=None, dest=key, help=f"{text} (default: {getattr(defaults, key)}, or the config "
                                                           f"file's)", **kind)
    p.set_defaults(func=cmd_train)


def _flags(args: argparse.Namespace) -> dict:
    keys = list(KEYS) + ["device", "precision", "global_negatives", "leave_out", "init"]
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``deepsift train``."""
    from ..exceptions import UsageError
    from ..output import note
    from .config import from_mapping, make_config

    if args.resume is None and (not args.data or not args.out):
        raise UsageError("give --data and --out (a new run), or --resume DIR (continue one)")
    out, data, real = args.out, args.data, args.real
    base: dict = {}
    if args.resume is not None:
        from .checkpoint import load_state

        if out is not None and Path(out).resolve() != Path(args.resume).resolve():
            raise UsageError(f"--out {out} and --resume {args.resume} differ: a resumed run writes into its own folder")
        out = args.resume
        state = load_state(args.resume)
        base = from_mapping(state.get("config", {}), f"{args.resume} (checkpoint settings)")
        data = data or state.get("data")
        real = real or state.get("real")
    from .config import read_config_file

    values = {**base, **(read_config_file(args.config) if args.config else {})}
    cfg = make_config(None, **{**values, **_flags(args)})
    if args.resume is None:
        from ..outplaces import output_dir

        output_dir(out)  # a file, device or unwritable place: one line before any work, nothing replaced
    from .loop import train
    from .leaveout import evaluate_left_out

    result = train(data, out, cfg, real=real, resume=args.resume is not None)
    if not result.main:  # under torchrun, rank 0 alone reports and runs the leave-out evaluation
        return EXIT_OK
    acc = next((a for _, a in reversed(result.head_accuracy) if a is not None), None)
    note(f"trained steps {result.start_step}..{result.step}" + (" (stopped early)" if result.stopped_early else "")
         + (f"; last loss {result.losses[-1]:.4f}" if result.losses else "")
         + (f"; held-out linear head balanced accuracy {acc:.3f}" if acc is not None else ""))
    for line in result.summary:
        note(line)
    report = None
    if cfg.leave_out:
        for line in evaluate_left_out(out, data, real, cfg):
            print(line)
        from .leaveout import REPORT_DIR

        report = json.loads((Path(out) / REPORT_DIR / "metrics.json").read_text())
    from ..evaluate.reliability import RULE_SHORT
    from ..model.card import write_train_card

    card = write_train_card(Path(out), cfg=cfg.to_dict(), data=[str(d) for d in data], report=report, rule=RULE_SHORT)
    note(f"model card: {card}")
    return EXIT_OK
