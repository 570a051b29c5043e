"""Baseline commands: deepsift baseline list | train | predict.

    deepsift baseline train frequency --real photos/ --fake sd21/ --fake sdxl/ --out runs/freq
    deepsift baseline predict runs/freq test/ --format csv --out scores.csv

'train' reads the folders recursively, can hold out a fraction for a quick held-out score
(--holdout), and saves baseline.json + weights.safetensors. 'predict' writes the same
columns as 'deepsift detect' and decides with the same rule (fake when P(fake) >= 0.5).
Exit codes as 'deepsift detect': 0 all inputs scored; 1 an error stopped the command;
2 bad usage; 3 some inputs could not be read (each has its row).
"""
from __future__ import annotations

import argparse
import inspect
import time
from pathlib import Path

from ...cliargs import (
    EXIT_OK,
    add_command,
    add_folder_options,
    add_output_options,
    add_runtime_options,
    existing_dir,
    float_range,
    image_input,
    non_negative_int,
    path_or_hub_id,
    positive_float,
    positive_int,
    subgroup,
    user_url_policy,
)
from ...exceptions import DataError, UsageError

# option dest -> constructor parameter; only the baselines that take a parameter accept its option
MODEL_OPTIONS = {"crop_size": "--crop-size", "epochs": "--epochs", "lr": "--lr", "width": "--width",
                 "seed": "--seed", "C": "--C", "model": "--model", "n_bins": "--n-bins"}
RUNTIME_DESTS = ("batch_size", "device", "workers", "url_timeout")


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    """Add ``deepsift baseline ...`` to the ``deepsift`` parser."""
    base = subgroup(sub, groups, "baseline", "train and run baseline detectors (frequency, npr, univfd)")
    p = add_command(base, "list", "list the baselines and their parameters")
    p.set_defaults(func=cmd_list)

    p = add_command(base, "train", "train a baseline on folders of real and fake images",
                    description="Train a baseline detector on folders of real and fake images.")
    p.add_argument("name", metavar="NAME", help="frequency, npr or univfd")
    p.add_argument("--real", required=True, action="append", metavar="DIR", type=existing_dir,
                   help="folder of real images (repeatable)")
    p.add_argument("--fake", required=True, action="append", metavar="DIR", type=existing_dir,
                   help="folder of fake images (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to save the trained baseline in")
    p.add_argument("--holdout", type=float_range(0.0, 1.0, hi_open=True), default=0.0, metavar="FRACTION",
                   help="score this fraction of each class after training on the rest")
    p.add_argument("--crop-size", type=positive_int, help="centre crop side (frequency, npr; default 224)")
    p.add_argument("--n-bins", type=positive_int, help="rings of the radial spectrum (frequency; default 64)")
    p.add_argument("--epochs", type=positive_int, help="training epochs (npr; default 10)")
    p.add_argument("--lr", type=positive_float, help="AdamW learning rate (npr; default 1e-3)")
    p.add_argument("--width", type=positive_int, help="channels of the first stage (npr; default 32)")
    p.add_argument("--seed", type=non_negative_int, help="random seed (npr and --holdout split; default 0)")
    p.add_argument("--C", type=positive_float,
                   help="inverse L2 strength of the logistic regression (frequency, univfd; default 1)")
    p.add_argument("--model", type=path_or_hub_id,
                   help="CLIP hub id or local folder (univfd; default openai/clip-vit-large-patch14)")
    add_folder_options(p)
    add_runtime_options(p.add_argument_group("runtime options"), batch_size=None, device=None, url_timeout=False)
    p.set_defaults(func=cmd_train)

    p = add_command(base, "predict", "score images with a trained baseline",
                    description="Score images with a trained baseline: the rows and exit codes of detect.")
    p.add_argument("baseline_dir", metavar="NAME_DIR", type=existing_dir,
                   help="folder written by 'deepsift baseline train'")
    p.add_argument("paths", nargs="+", metavar="PATH", type=image_input,
                   help="image file, folder (recursive), glob, http(s) URL, or '-' (a list on stdin)")
    add_output_options(p)
    add_folder_options(p)
    add_runtime_options(p.add_argument_group("runtime options"), batch_size=None, device=None)
    p.set_defaults(func=cmd_predict)


def describe_baseline(name: str) -> tuple[str, list[str]]:
    """(first docstring line, ``param=default`` strings) of baseline ``name``, read from its source.

    The classes import torch; reading their source instead lets ``baseline list`` answer at once.
    """
    import ast
    import importlib.util

    from . import BASELINE_CLASSES

    module, cls_name = BASELINE_CLASSES[name]
    spec = importlib.util.find_spec(f"{__package__}.{module}")
    tree = ast.parse(Path(spec.origin).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    doc = (ast.get_docstring(cls) or "").strip().splitlines()[0]
    init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    params: list[str] = []
    if init is not None:
        args = init.args.args[1:]
        defaults = [None] * (len(args) - len(init.args.defaults)) + list(init.args.defaults)
        consts = {tg.id: n.value for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                  for tg in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(tg, ast.Name)}
        shown = [consts.get(d.id, d) if isinstance(d, ast.Name) else d for d in defaults]  # DEFAULT_X -> its value
        params = [f"{a.arg}={ast.unparse(d)}" if d is not None else a.arg for a, d in zip(args, shown)]
    return doc, params


def cmd_list(args: argparse.Namespace) -> int:
    """deepsift baseline list."""
    from . import BASELINE_NAMES

    for name in BASELINE_NAMES:
        doc, params = describe_baseline(name)
        print(f"{name:10s} {doc}\n{'':10s} {', '.join(params)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """deepsift baseline train."""
    import numpy as np

    from ...output import note
    from . import baseline_class, get_baseline

    accepted = inspect.signature(baseline_class(args.name).__init__).parameters
    params = {k: getattr(args, k) for k in MODEL_OPTIONS if getattr(args, k) is not None}
    if "seed" not in accepted:
        params.pop("seed", None)  # still seeds the --holdout split
    wrong = [MODEL_OPTIONS[k] for k in params if k not in accepted]
    if wrong:
        raise UsageError(f"{', '.join(wrong)} does not apply to the {args.name} baseline")
    from ...outplaces import output_dir

    output_dir(args.out)  # before reading and fitting: one line, nothing replaced
    det = get_baseline(args.name, **params, **_runtime(args, accepted))
    real = _images(args.real, "--real", args.follow_links)
    fake = _images(args.fake, "--fake", args.follow_links)
    rng = np.random.default_rng(args.seed or 0)
    (real_fit, real_out), (fake_fit, fake_out) = _split(real, args.holdout, rng), _split(fake, args.holdout, rng)
    start = time.perf_counter()
    det.fit(real_fit, fake_fit)
    fit_s = time.perf_counter() - start
    if real_out and fake_out:
        det.train_info_["holdout"] = _holdout_scores(det, real_out, fake_out)
    out = det.save(args.out)
    info = det.train_info_
    note(f"deepsift: trained {args.name} on {info['n_real']} real + {info['n_fake']} fake image(s) "
         f"({info['n_skipped']} unreadable skipped) in {fit_s:.1f} s; saved to {out}")
    if "loss_per_epoch" in info:
        losses = info["loss_per_epoch"]
        note(f"deepsift: training loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} epoch(s)")
    if "holdout" in info:
        h = info["holdout"]
        note(f"deepsift: held-out {h['n']} image(s): accuracy {h['accuracy']:.3f}, "
             f"AUROC {'undefined' if h['auroc'] is None else format(h['auroc'], '.3f')}")
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    """deepsift baseline predict."""
    from ...output import write_predictions
    from ...sources import expand_inputs
    from . import load_baseline

    # a user's own run: image URLs may lead to localhost and the local network (servers keep the strict policy)
    det = load_baseline(args.baseline_dir, **_runtime(args), url_policy=user_url_policy())
    return write_predictions(det.predict_iter(expand_inputs(args.paths, follow_links=args.follow_links)),
                             args.format, args.out,
                             label=f"deepsift: {det.name}")


def _runtime(args: argparse.Namespace, accepted: object = None) -> dict:
    """The runtime options given on the command line (those the baseline takes, when ``accepted``)."""
    given = {k: getattr(args, k) for k in RUNTIME_DESTS if getattr(args, k, None) is not None}
    if given.get("device") is not None:  # "auto" and the one-line refusal of a missing GPU, as in detect
        from ...model.devices import resolve_device

        given["device"] = str(resolve_device(given["device"]))
    return {k: v for k, v in given.items() if accepted is None or k in accepted}  # type: ignore[operator]


def _images(folders: list[str], option: str, follow_links: bool = False) -> list[str]:
    """All images under the folders (recursive, sorted); a missing or image-less folder is an error."""
    from ...sources import SourceError, walk_images

    found: list[str] = []
    for folder in folders:
        path = Path(folder)
        items = list(walk_images(path, follow_links=follow_links))
        bad = [it for it in items if isinstance(it, SourceError)]
        if bad:
            raise DataError(f"{option} {bad[0].source}: {bad[0].error}")
        if not items:
            raise DataError(f"{option} {folder}: no images found (looked for the usual image extensions, recursively)")
        found.extend(items)  # type: ignore[arg-type]
    return found


def _split(paths: list[str], fraction: float, rng: object) -> tuple[list[str], list[str]]:
    """Randomly hold out ``fraction`` of ``paths`` (at least one kept for training)."""
    n_out = min(int(round(len(paths) * fraction)), len(paths) - 1)
    if n_out <= 0:
        return paths, []
    order = rng.permutation(len(paths))  # type: ignore[attr-defined]
    out = set(order[:n_out].tolist())
    return [p for i, p in enumerate(paths) if i not in out], [p for i, p in enumerate(paths) if i in out]


def _holdout_scores(det: object, real: list[str], fake: list[str]) -> dict:
    """Accuracy and AUROC of ``det`` on held-out real and fake images (unreadable ones skipped)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    preds = det.predict(real + fake)  # type: ignore[attr-defined]
    y = np.array([0] * len(real) + [1] * len(fake))
    ok = np.array([p.error is None for p in preds])
    scores = np.array([p.score if p.error is None else 0.0 for p in preds])[ok]
    labels = np.array([p.label if p.error is None else -1 for p in preds])[ok]
    y = y[ok]
    auroc = float(roc_auc_score(y, scores)) if len(set(y.tolist())) == 2 else None
    return {"n": int(ok.sum()), "accuracy": float((labels == y).mean()), "auroc": auroc}
