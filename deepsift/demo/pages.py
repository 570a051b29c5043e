"""The demo's pages: detect (``/``), the quiz (``/quiz``) and its results (``/quiz/results``).

The pages are clients of the JSON API (``static/demo/*.js``); the results page is rendered on
the server with an inline SVG bar chart (no script, nothing from another origin).
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from markupsafe import Markup, escape

from ..server.deps import ReadDbSession, rate_limit
from ..server.web import render
from . import quiz as q
from .names import display_name

router = APIRouter(include_in_schema=False, dependencies=[Depends(rate_limit("api", "api_rate"))])  # like the API


@router.get("/")
def detect_page(request: Request):  # type: ignore[no-untyped-def]
    """The home page: drop, paste, pick or link images; verdicts from POST /api/v1/detect."""
    from .inputs import FORMATS

    s = request.app.state.demo.settings
    names = ["JPEG", "PNG", "WebP", "GIF", "BMP", "TIFF"] + (["AVIF"] if "AVIF" in FORMATS else [])
    return render(request, "demo/detect.html", {"s": s, "avif": "AVIF" in FORMATS, "seen": seen_generators(request),
                                                "formats": ", ".join(names[:-1]) + " or " + names[-1]})


def seen_generators(request: Request) -> list[str]:
    """The generators the loaded model has seen, by name: its model card's ``generators_seen`` (a local model
    folder), else the per-generator heads of a detector already loaded; [] when neither says (never loads one)."""
    from pathlib import Path

    from ..exceptions import ModelError
    from ..model.card import read_card
    from .names import display_name

    s = request.app.state.demo.settings
    names: list[str] = []
    if Path(s.model).is_dir():
        try:
            names = [str(n) for n in read_card(s.model)[0].get("generators_seen") or []]
        except ModelError:
            names = []
    det = getattr(request.app.state.demo.engine, "_detector", None)
    if not names and det is not None:
        names = [n.split(":", 1)[1] for n in det.heads if n.startswith(det.classifier + ":")]
    return [display_name(n, s.generator_names) or n for n in names]


@router.get("/quiz")
def quiz_page(request: Request):  # type: ignore[no-untyped-def]
    """The quiz page, "Can you beat the detector?" (driven by quiz.js over the quiz API)."""
    s = request.app.state.demo.settings
    return render(request, "demo/quiz.html", {"configured": bool(s.quiz_dataset)})


@router.get("/quiz/results")
def results_page(request: Request, session: ReadDbSession):  # type: ignore[no-untyped-def]
    """People versus the detector per generator, over all visitors: a bar chart and a table."""
    names = request.app.state.demo.settings.generator_names
    rows = [{**r, "name": display_name(r["generator"], names)} for r in q.statistics(session)]
    return render(request, "demo/results.html", {"rows": rows, "chart": bar_chart(rows)})


def bar_chart(rows: list[dict], width: int = 480, bar: int = 16) -> Markup:
    """Per generator, its name and visitors over two bars (people, detector) of accuracy, as inline SVG."""
    if not rows:
        return Markup("<p class='muted'>No rounds played yet.</p>")
    left, pad, head = 4, 6, 20  # the label sits above its bars, so a long name never runs off a phone's screen
    inner = width - left - 48
    group = head + 2 * bar + 3 * pad
    height = len(rows) * group + 40
    parts = [f"<svg role='img' aria-label='accuracy of people and the detector per generator' class='chart' "
             f"width='100%' viewBox='0 0 {width} {height}' preserveAspectRatio='xMinYMin meet'>"]
    for t in (0, 0.5, 1):
        x = left + t * inner
        parts.append(f"<line x1='{x:.0f}' y1='0' x2='{x:.0f}' y2='{height - 30}' class='grid'/>"
                     f"<text x='{x:.0f}' y='{height - 16}' class='tick' text-anchor='{'start' if t == 0 else 'middle'}'>"
                     f"{int(t * 100)}%</text>")
    for i, r in enumerate(rows):
        y = i * group + pad
        parts.append(f"<text x='{left}' y='{y + head - 6}' class='label'>"
                     f"{escape(r['name'])} ({r['visitors']} visitor{'' if r['visitors'] == 1 else 's'})</text>")
        for k, (key, cls) in enumerate((("people_accuracy", "people"), ("detector_accuracy", "detector"))):
            v = r[key] or 0.0
            yy = y + head + k * (bar + pad)
            parts.append(f"<rect x='{left}' y='{yy}' width='{max(v * inner, 1):.1f}' height='{bar}' class='{cls}'>"
                         f"<title>{cls}: {v:.0%}</title></rect>"
                         f"<text x='{left + v * inner + 4:.1f}' y='{yy + bar - 3}' class='value'>{v:.0%}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))
