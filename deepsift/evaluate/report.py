"""Evaluation reports: ``metrics.json``, ``report.md`` and a self-contained ``report.html``.

A :class:`Report` is a list of blocks (headings, text, tables, PNG plots). ``write(DIR)``
renders the same blocks twice: Markdown (plots as files under ``DIR/plots/``) and HTML (plots
embedded as base64, so the one file can be mailed around), plus the raw results as JSON.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from .. import __version__
from ..exceptions import DataError
from ..filenames import safe_name
from .metrics import Metrics, format_value
from .reliability import RULE_TEXT

TABLE_METRICS = ("auroc", "ap", "balanced_accuracy", "acc_real", "acc_fake", "accuracy", "f1", "eer", "tpr@1%fpr",
                 "tpr@5%fpr", "ece")
SMALL_NOTE = (RULE_TEXT + " When images come in groups the bootstrap resamples whole groups. Balanced accuracy is "
              "the mean of the real and fake accuracies (plain accuracy is dominated by the larger class).")

_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:right;white-space:nowrap}th{background:#f3f3f3;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
.tw{max-width:100%;overflow-x:auto;max-height:80vh;overflow-y:auto;margin-bottom:1em}
img{max-width:100%;height:auto}figure{margin:.5em 0}.note{color:#555;font-size:13px;overflow-wrap:anywhere}
.warn{color:#8a4b00;background:#fff6e0;border-left:4px solid #e0a000;padding:4px 8px;font-size:13px;
overflow-wrap:anywhere}
tr.pooled td{border-top:3px double #888;font-weight:600;background:#fafafa}"""


@dataclass
class Report:
    """Blocks of a report plus the JSON results they were made from."""

    title: str
    results: dict[str, Any] = field(default_factory=dict)
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        """Add a section heading."""
        self.blocks.append(("heading", (level, text)))

    def text(self, text: str) -> None:
        """Add a paragraph."""
        self.blocks.append(("text", text))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Add a table (cells are turned into text)."""
        self.blocks.append(("table", ([str(h) for h in headers], [[_cell(c) for c in r] for r in rows])))

    def image(self, name: str, png: bytes, caption: str = "") -> None:
        """Add a PNG plot (``name`` becomes its file name)."""
        self.blocks.append(("image", (safe_name(name), png, caption)))

    def write(self, folder: str | os.PathLike) -> dict[str, Path]:
        """Write ``report.html``, ``report.md``, ``metrics.json`` and ``plots/*.png`` into ``folder``.

        All or nothing: the files are staged in a hidden folder inside ``folder`` and moved into
        place once every one is written; a failure is one DataError line and leaves no new file.
        """
        from ..outplaces import ensure_writable_dir

        final = ensure_writable_dir(folder)
        stage = Path(tempfile.mkdtemp(prefix=".report-", dir=final))
        try:
            paths = self._write(stage)
            (final / "plots").mkdir(exist_ok=True)
            for p in sorted(stage.rglob("*"), key=lambda q: q.suffix == ".html"):  # the html (the entry point) last
                if p.is_file():
                    os.replace(p, final / p.relative_to(stage))
        except OSError as exc:
            raise DataError(f"cannot write the report to {final}: {exc.strerror or exc}") from None
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return {k: final / v.relative_to(stage) for k, v in paths.items()}

    def _write(self, out: Path) -> dict[str, Path]:
        """Write every file of the report into ``out``."""
        (out / "plots").mkdir(parents=True, exist_ok=True)
        meta = {"deepsift_version": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        paths = {"json": out / "metrics.json", "md": out / "report.md", "html": out / "report.html"}
        paths["json"].write_text(json.dumps(_jsonable({**meta, **self.results}), indent=2, allow_nan=False))
        md, body = [f"# {self.title}", "", f"_deepsift {__version__}, {meta['created']}_", ""], []
        for kind, data in self.blocks:
            if kind == "heading":
                md += ["#" * data[0] + " " + data[1], ""]
                body.append(f"<h{data[0]}>{html.escape(data[1])}</h{data[0]}>")
            elif kind == "text":
                md += [data, ""]
                cls = "warn" if data.startswith("⚠") else "note"
                body.append(f"<p class='{cls}'>{html.escape(data)}</p>")
            elif kind == "table":
                headers, rows = data
                md += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                md += ["| " + " | ".join(r) + " |" for r in rows] + [""]
                body.append("<div class='tw'><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers)
                            + "</tr>" + "".join(_tr(r) + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                                                for r in rows) + "</table></div>")
            else:
                name, png, caption = data
                (out / "plots" / f"{name}.png").write_bytes(png)
                md += [f"![{caption or name}](plots/{name}.png)", ""]
                b64 = base64.b64encode(png).decode("ascii")
                body.append(f"<figure><img alt='{html.escape(caption or name)}' src='data:image/png;base64,{b64}'>"
                            f"<figcaption class='note'>{html.escape(caption)}</figcaption></figure>")
        paths["md"].write_text("\n".join(md))
        paths["html"].write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>"
            f"<p class='note'>deepsift {__version__}, {meta['created']}</p>{''.join(body)}</body></html>"
        )
        return paths


def _tr(row: Sequence[str]) -> str:
    """A table row's opening tag: the pooled row (all generators together) is set apart from the per-generator rows."""
    return "<tr class='pooled'>" if row and (row[0] == "all" or row[0].startswith("all generators")) else "<tr>"


def _cell(c: Any) -> str:
    if isinstance(c, float):
        return "n/a" if not math.isfinite(c) else f"{c:.3f}"
    return "n/a" if c is None else str(c)


def _jsonable(x: Any) -> Any:
    """Turn results into strict JSON (NaN -> None, Metrics -> dicts, numpy -> Python)."""
    if isinstance(x, Metrics):
        return _jsonable(x.to_dict())
    if hasattr(x, "to_dict"):
        return _jsonable(x.to_dict())
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def metrics_rows(rows: dict[str, dict[str, Metrics]], names: Sequence[str] = TABLE_METRICS) -> tuple[list[str], list[list[str]]]:
    """Table of ``rows[first column][detector] -> Metrics``: one line per (row, detector)."""
    headers = ["set", "detector", "n real", "n fake", *names]
    lines = []
    for key, per_det in rows.items():
        for det, m in per_det.items():
            lines.append([key, det, str(m.n_real), str(m.n_fake),
                          *(format_value(m.values[n], mark=m.unreliable(n) is not None) for n in names)])
    return headers, lines
