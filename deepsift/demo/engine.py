"""The demo's detector: one :class:`~deepsift.model.detector.Detector`, loaded once, one forward at a time.

``analyse`` runs exactly what ``deepsift detect`` runs (the detector's batch engine, then
:meth:`Detector.classify` with the one decision rule), so its fields equal the command's on the
same file and model; it adds the score of every head, the per-generator probabilities, a heatmap
and the unsure band. Every forward pass runs on one dedicated thread, one at a time per process:
concurrent clients queue instead of splitting a few CPU cores between several passes, and torch's
CPU thread team stays that one thread's (request threads calling torch in turn would each start a
team of their own, whose idle threads spin beside the working one). Fetching and decoding happen
on the request threads, outside that queue.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

import numpy as np

from ..decision import decide, rule_text, verdict
from ..exceptions import ModelError, ServiceError, UsageError
from ..urlfetch import FetchPolicy
from .heatmap import crops, heatmap_payload
from .inputs import Decoded
from .settings import DemoSettings

T = TypeVar("T")


class DetectorUnavailable(ServiceError):
    """The configured model or heads cannot be loaded."""

    status_code = 503


class DemoEngine:
    """Lazily loaded detector + the demo's URL policy; thread-safe, one forward pass at a time."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        self._detector: Any = None
        self._load_lock = threading.Lock()
        self._forward: ThreadPoolExecutor | None = None
        self.policy = url_policy(settings)

    def run_forward(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the one forward thread (after the passes queued before it) and return its result."""
        with self._load_lock:
            if self._forward is None:  # started on first use (again after a shutdown: an app may be restarted)
                self._forward = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-forward")
            pool = self._forward
        return pool.submit(fn, *args).result()

    def close(self) -> None:
        """Stop the forward thread once its queued passes are done (at server shutdown)."""
        with self._load_lock:
            pool, self._forward = self._forward, None
        if pool is not None:
            pool.shutdown(wait=True)

    def detector(self) -> Any:
        """The loaded Detector (loaded on first use); DetectorUnavailable when it cannot be."""
        if self._detector is None:
            with self._load_lock:
                if self._detector is None:
                    from ..model.detector import Detector

                    s = self.settings
                    try:
                        self._detector = Detector.load(s.model, heads=s.heads, classifier=s.classifier,
                                                       device=s.device, threshold=s.threshold,
                                                       preprocessing=s.preprocessing, workers=1)
                    except (ModelError, UsageError, OSError) as exc:
                        raise DetectorUnavailable(f"the detector is not available: {exc}") from None
        return self._detector

    def set_detector(self, detector: Any) -> None:
        """Use an already loaded Detector (benchmarks, embedding the demo in another app)."""
        self._detector = detector

    def info(self) -> dict[str, Any]:
        """What answers: model, head, threshold, band, rule (loads the detector)."""
        det = self.detector()
        s = self.settings
        return {"model": s.model, "classifier": det.classifier, "threshold": det.decision_threshold,
                "unsure_band": list(s.unsure_band) if s.unsure_band else None, "rule": rule_text(det.decision_threshold),
                "heads": [n for n in det.heads if ":" not in n],
                "generators": [n.split(":", 1)[1] for n in det.heads if n.startswith(det.classifier + ":")]}

    def analyse(self, inputs: list[Decoded], heatmap: bool = False) -> list[dict[str, Any]]:
        """Verdict, probability, per-head scores, generator (and heatmap) of each decoded image, in order."""
        det = self.detector()
        if not inputs:
            return []
        results = self.run_forward(self._verdicts, det, inputs)
        if heatmap:  # one image's crops per turn: other clients' passes can go in between
            for d, r in zip(inputs, results):
                if "error" not in r:
                    r["heatmap"] = self.run_forward(self.heatmap, det, d)
        return [self._finish(det, r) for r in results]

    def _verdicts(self, det: Any, inputs: list[Decoded]) -> list[dict[str, Any]]:
        """The path of Detector.predict_iter (batch engine, then classify by the one rule), plus every head."""
        items = []
        for run, out in det.embed_batches([d.image for d in inputs]):
            items += [(it, out[it.row] if it.row is not None else None) for it in run]
        results: list[dict[str, Any]] = []
        for d, (it, row) in zip(inputs, items):
            if row is None:
                results.append({"source": d.source, "error": (it.error or "").replace(it.source, d.source, 1)})
            else:
                results.append({"source": d.source, "embedding": row})
        good = [r for r in results if "embedding" in r]
        if good:
            embs = np.stack([r.pop("embedding") for r in good])
            for r, v in zip(good, det.classify(embs)):
                r.update(v)
            self._extras(det, good, embs)
        return results

    def _extras(self, det: Any, rows: list[dict], embs: np.ndarray) -> None:
        """Every head's score, probability and label; the per-generator probabilities."""
        per_head: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, head in det.heads.items():
            scores = head.decision_function(embs)
            per_head[name] = (scores, head.probability(scores))
        for i, r in enumerate(rows):
            r["heads"] = {n: {"score": float(s[i]), "probability": float(p[i]),
                              "label": int(decide(p[i], det.decision_threshold))}
                          for n, (s, p) in per_head.items() if ":" not in n}
            gens = {n.split(":", 1)[1]: float(p[i]) for n, (s, p) in per_head.items() if n.startswith(det.classifier + ":")}
            r["generators"] = dict(sorted(gens.items(), key=lambda kv: -kv[1])) or None

    def heatmap(self, det: Any, d: Decoded) -> dict:
        """P(fake) of the decided head for each local crop (run it on the forward thread)."""
        batch, rows, cols, boxes = crops(d.image, self.settings.heatmap_grid)
        emb = det.embed_pixels(batch)
        head = det.heads[det.classifier]
        return heatmap_payload(head.probability(head.decision_function(emb)), rows, cols, boxes, d.size)

    def _finish(self, det: Any, r: dict) -> dict:
        """Fill the CLI's columns (``verdict`` by the one rule) and the demo's ``band``."""
        out = {"source": r["source"], "label": r.get("label"), "score": r.get("score"),
               "probability": r.get("probability"), "head": r.get("head"), "generator": r.get("generator"),
               "error": r.get("error")}
        out["verdict"] = "error" if out["label"] is None else ("fake" if out["label"] == 1 else "real")
        out["band"] = verdict(out["probability"], det.decision_threshold, self.settings.unsure_band)
        out["heads"] = r.get("heads")
        out["generators"] = r.get("generators")
        out["heatmap"] = r.get("heatmap")
        return out


def url_policy(settings: DemoSettings) -> FetchPolicy:
    """The demo's URL policy: public addresses only unless the settings allow more (tests, internal stores).

    ``url_hosts`` gives fixed DNS answers for some names; their answers are checked like any others.
    """
    hosts = {h.lower(): [str(a) for a in addrs] for h, addrs in settings.url_hosts.items()}
    resolver = None
    if hosts:
        def resolver(host: str, port: int) -> list[str]:
            if host.lower() in hosts:
                return hosts[host.lower()]
            import socket

            import httpcore

            try:
                return [str(ai[4][0]) for ai in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
            except (socket.gaierror, UnicodeError) as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None

    return FetchPolicy(allow_private=settings.allow_private_urls, allow_networks=tuple(settings.url_allow_networks),
                       resolver=resolver)
