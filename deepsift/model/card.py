"""The model card: ``README.md`` with YAML metadata in the Hugging Face convention, written beside the weights.

The metadata says what a reader of a detector needs first: the base model, the data, which generators
the heads were fitted on (``generators_seen``) and which were held out, and per-generator figures with
intervals (``model-index``). ``heads.json`` and the card agree: :func:`card_generators` is read from the
heads themselves.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..exceptions import ModelError

CARD = "README.md"
MAX_CARD_BYTES = 1 << 20


def head_generators(model_dir: Path) -> list[str]:
    """The generators the model's heads know (``kind:generator`` entries of ``heads/heads.json``)."""
    index = model_dir / "heads" / "heads.json"
    if not index.is_file():
        return []
    names = json.loads(index.read_text()).get("heads", {})
    return sorted({n.split(":", 1)[1] for n in names if ":" in n})


def _fmt(fig: dict) -> str:
    v = fig.get("value")
    if v is None:
        return "n/a"
    ci = fig.get("ci95")
    return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + (" ⚠" if fig.get("unreliable") else "")


def _marks(before: dict, figures: dict, rule: str) -> str:
    """The ⚠ ``rule`` and why each marked figure of the table is marked (empty when none is)."""
    why = [f"{g} AUROC before: {before[g]['auroc']['unreliable']}" for g in figures
           if before.get(g, {}).get("auroc", {}).get("unreliable")]
    why += [f"{g} {label} after: {figures[g][name]['unreliable']}" for g in figures
            for name, label in (("auroc", "AUROC"), ("tpr@1%fpr", "TPR@1%FPR")) if figures[g][name].get("unreliable")]
    return "" if not why else "\n" + rule + " Marked here: " + "; ".join(why) + ".\n"


def _routes(lineage: dict) -> str:
    """The routes an adaptation tried, each with its figure on the new generator and its largest drop."""
    routes = lineage.get("routes") or {}
    if not routes:
        return "Refitting the heads only."
    rows = "\n".join(f"| {name} | {r['auroc_new']:.3f} | {r['largest_drop']:+.3f} | {'yes' if r['reached'] else 'no'} |"
                     for name, r in routes.items())
    chosen = (f"This model is the **{lineage.get('route')}** route"
              + ("." if lineage.get("target_reached") else ": no route reached the target; it is the one closest to it "
                 "(AUROC missing on the new generator plus drops beyond the tolerance)."))
    return ("| route | AUROC on the new generator | largest drop on a known one | target reached |\n"
            "| --- | --- | --- | --- |\n" + rows + "\n\n" + chosen)


def write_card(model_dir: Path, *, lineage: dict, before: dict, after: dict, plan: Any, rule: str) -> Path:
    """Write ``model_dir/README.md`` for an adapted model (``rule``: the evaluation report's ⚠ rule, in words)."""
    seen = head_generators(model_dir)
    figures = after["figures"]
    results = [{"task": {"type": "image-classification", "name": "real vs AI-generated"},
                "dataset": {"name": f"{g} (held out images)", "type": g},
                "metrics": [{"type": "roc_auc", "name": "AUROC", "value": figures[g]["auroc"]["value"]},
                            {"type": "tpr_at_1pct_fpr", "name": "TPR@1%FPR", "value": figures[g]["tpr@1%fpr"]["value"]}]}
               for g in figures]
    meta = {
        "library_name": "deepsift",
        "base_model": lineage["base_model"],
        "tags": ["ai-generated-image-detection", "deepsift", "code"],
        "datasets": [str(lineage["data"]), str(lineage["images"])],
        "generators_seen": seen,
        "generators_held_out": [],
        "backbone_sha256": lineage["backbone_sha256"],
        "adaptation": {"route": lineage.get("route"), "target_reached": lineage.get("target_reached"),
                       "routes": lineage.get("routes") or {}},
        "decision_rule": "fake when the calibrated P(fake) >= 0.5",
        "model-index": [{"name": f"{Path(str(plan.out)).name}", "results": results}],
    }
    rows = "\n".join(
        f"| {g} | {figures[g]['n_real']} / {figures[g]['n_fake']} | {_fmt(before[g]['auroc'])} | "
        f"{_fmt(figures[g]['auroc'])} | {_fmt(figures[g]['tpr@1%fpr'])} |" for g in figures)
    drops = ", ".join(f"{g} {d:+.3f}" for g, d in after["forgetting"].items())
    body = f"""# {lineage['added_generator']}-adapted CoDE detector

Adapted from `{lineage['base_model']}` by `deepsift adapt` ({lineage['method']}) to the generator
**{lineage['added_generator']}**. Heads: {', '.join(sorted(json.loads((model_dir / 'heads' / 'heads.json').read_text())['heads']))}.

## Figures (held-out images: never used to fit)

The `{plan.classifier}` head, real vs each generator; 95 % bootstrap intervals resample groups.

| generator | real / fake | AUROC before | AUROC after | TPR@1%FPR after |
| --- | --- | --- | --- | --- |
{rows}
{_marks(before, figures, rule)}
Forgetting (AUROC before - after on known generators; tolerance {plan.forget_tolerance}): {drops}.
Target on {lineage['added_generator']}: AUROC >= {plan.target_auroc}: {'reached' if after['target_reached'] else 'NOT reached'}.

## Routes tried (cheapest first)

{_routes(lineage)}

## Calibration and decision

Every head maps its score to a calibrated P(fake) (Platt scaling on its fitting images); an image is
called fake when P(fake) >= 0.5, as everywhere in deepsift.

## Intended use and limits

Research and triage: evidence, not proof. Generators not listed in `generators_seen`, heavy
compression, resizing, screenshots and crops weaken the signal; a figure on too few held-out images
(or groups) to rely on carries a ⚠, by the rule of deepsift's evaluation reports. Lineage: `lineage.json`.
"""
    text = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + body
    (model_dir / CARD).write_text(text)
    return model_dir / CARD


def read_card(model_dir: str | Path) -> tuple[dict, str]:
    """(YAML metadata, Markdown body) of a model folder's card; a ModelError when absent or malformed."""
    path = Path(model_dir) / CARD
    if not path.is_file():
        raise ModelError(f"{model_dir}: no model card ({CARD})")
    if path.stat().st_size > MAX_CARD_BYTES:
        raise ModelError(f"{path}: larger than {MAX_CARD_BYTES >> 20} MiB: not a model card")
    text = path.read_text(errors="replace")
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        return {}, text
    head, body = text[4:].split("\n---\n", 1)
    try:
        meta = yaml.safe_load(head) or {}
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: the YAML metadata does not parse ({exc.__class__.__name__})") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: the YAML metadata is not a mapping")
    return meta, body


def card_summary(model_dir: str | Path) -> list[str]:
    """Lines for ``deepsift model info``: base, generators seen and held out, figures per generator."""
    meta, _ = read_card(model_dir)
    lines = [f"model: {model_dir}", f"base model: {meta.get('base_model', 'unknown')}",
             f"generators seen: {', '.join(meta.get('generators_seen') or []) or 'none listed'}",
             f"generators held out: {', '.join(meta.get('generators_held_out') or []) or 'none'}"]
    adapted = meta.get("adaptation")
    if isinstance(adapted, dict) and adapted.get("route"):
        lines.append(f"adapted by: {adapted['route']} (target {'reached' if adapted.get('target_reached') else 'NOT reached'})")
    heads = head_generators(Path(model_dir))
    if heads and sorted(meta.get("generators_seen") or []) != heads:
        lines.append(f"warning: the card lists other generators than the heads know ({', '.join(heads)})")
    for entry in meta.get("model-index") or []:
        for res in entry.get("results") or []:
            vals = ", ".join(f"{m.get('name')} {m.get('value'):.3f}" for m in res.get("metrics", [])
                             if isinstance(m.get("value"), (int, float)))
            lines.append(f"  {res.get('dataset', {}).get('type')}: {vals}")
    return lines


def write_train_card(model_dir: Path, *, cfg: dict, data: list[str], report: dict | None = None,
                     rule: str) -> Path:
    """Write ``model_dir/README.md`` for a model ``deepsift train`` made: its data, the generators its heads
    saw, the ones held out, and (with ``--leave-out``) each generator's figures from the leave-out report."""
    model_dir = Path(model_dir)
    seen = head_generators(model_dir)
    held = sorted(cfg.get("leave_out") or [])
    figures: dict[str, dict] = {}
    for det, splits in ((report or {}).get("per_generator") or {}).items():
        for gen, entry in (splits.get("all") or {}).items():
            if gen != "all":
                figures[gen] = entry.get("metrics") or {}
        break  # the model's own (linear) head
    index = json.loads((model_dir / "heads" / "heads.json").read_text()) if (model_dir / "heads" / "heads.json").is_file() else {}
    results = [{"task": {"type": "image-classification", "name": "real vs AI-generated"},
                "dataset": {"name": f"{g} ({'held out' if g in held else 'seen'})", "type": g},
                "metrics": [{"type": "roc_auc", "name": "AUROC", "value": (f.get("auroc") or {}).get("value")}]}
               for g, f in figures.items()]
    meta = {
        "library_name": "deepsift",
        "base_model": cfg.get("init") or None,
        "tags": ["ai-generated-image-detection", "deepsift", "code"],
        "datasets": [str(d) for d in data],
        "generators_seen": seen,
        "generators_held_out": held,
        "backbone_sha256": index.get("backbone_sha256"),
        "decision_rule": "fake when the calibrated P(fake) >= 0.5",
    }
    if results:
        meta["model-index"] = [{"name": model_dir.name, "results": results}]
    rows = "\n".join(f"| {g} | {'held out' if g in held else 'seen'} | {_fmt(f.get('auroc') or {})} | "
                     f"{_fmt(f.get('tpr@1%fpr') or {})} |" for g, f in figures.items())
    table = ("| generator | in training | AUROC | TPR@1%FPR |\n| --- | --- | --- | --- |\n" + rows) if rows else \
        "No per-generator figures: train with `--leave-out GEN` (or run `deepsift eval generators`) to measure them."
    if any((f.get(k) or {}).get("unreliable") for f in figures.values() for k in ("auroc", "tpr@1%fpr")):
        table += "\n\n" + rule
    body = f"""# CoDE detector trained with deepsift

{'Fine-tuned from `' + str(cfg.get('init')) + '`' if cfg.get('init') else 'Trained from scratch'} by `deepsift train`
({cfg.get('steps')} steps, batch {cfg.get('batch_size')}, lr {cfg.get('lr')}) on {', '.join(f'`{d}`' for d in data)}.
Heads (refitted on held-out records) know: {', '.join(seen) or 'no per-generator head'}; held out of
training: {', '.join(held) or 'none'}. The full configuration is `train_config.json`.

## Figures

{table}

## Calibration and decision

Every head maps its score to a calibrated P(fake) (Platt scaling on held-out records); an image is
called fake when P(fake) >= 0.5, as everywhere in deepsift.

## Intended use and limits

Research and triage: evidence, not proof. Generators not listed in `generators_seen`, heavy
compression, resizing, screenshots and crops weaken the signal.
"""
    (model_dir / CARD).write_text("---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + body)
    return model_dir / CARD
