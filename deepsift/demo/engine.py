"""The demo's detector: one :class:`~deepsift.model.detector.Detector`, loaded once, one forward at a time.

``analyse`` runs exactly what ``deepsift detect`` runs (the detector's batch engine, then
:meth:`Detector.classify` with the one decision rule), so its fields equal the command's on the
same file and model with ``--backend torch`` (the demo runs torch; the command's ``auto`` may pick
ONNX Runtime, whose embeddings are within 1e-4 of torch's); it adds the score of every head, the per-generator probabilities, a heatmap
and the unsure band. Every forward pass runs on one dedicated thread, one at a time per process:
concurrent clients queue instead of splitting a few CPU cores between several passes, and torch's
CPU thread team stays that one thread's (request threads calling torch in turn would each start a
team of their own, whose idle threads spin beside the working one). Fetching (async), decoding
and cropping (the demo's own pool, :mod:`deepsift.demo.bounds`) happen outside that queue;
:meth:`DemoEngine.aanalyse` lets an async route wait for its pass without holding a thread.

Requests that wait in the queue together share one pass (at most the detector's batch size of
rows): on a small CPU a pass over 2-4 crops costs far less than 2-4 passes, so concurrent clients
are served faster, and one client alone still gets its batch of one. As with ``deepsift detect``
over a folder (batches of 32), an image's scores in a shared pass differ from its batch-of-one
scores by float rounding only.
"""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from ..decision import decide, rule_text, verdict
from ..exceptions import ModelError, ServiceError, UsageError
from ..urlfetch import FetchPolicy
from .heatmap import crops, heatmap_payload
from .inputs import Decoded
from .reduced import shrink
from .settings import DemoSettings

T = TypeVar("T")


class DetectorUnavailable(ServiceError):
    """The configured model or heads cannot be loaded."""

    status_code = 503


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple
    rows: int | None = None  # an embedding job (fn(batch) -> one row per input row): may share a pass
    future: Future = field(default_factory=Future)


class ForwardThread:
    """One thread that runs the process's forward passes one at a time, in arrival order.

    :meth:`call` runs any function there; :meth:`embed` jobs of the same function that wait in the
    queue together run as one pass over their concatenated rows (up to ``max_rows``), and each
    caller gets its own rows back.
    """

    def __init__(self, max_rows: int = 32) -> None:
        self.max_rows = max_rows
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="demo-forward", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the forward thread (after the jobs queued before it) and return its result."""
        return self.call_async(fn, *args).result()

    def call_async(self, fn: Callable[..., T], *args: Any) -> "Future[T]":
        """Queue ``fn(*args)`` to run alone on the forward thread; its future holds the result."""
        return self.submit(_Job(fn, args))

    def embed(self, fn: Callable[[np.ndarray], np.ndarray], batch: np.ndarray) -> "Future[np.ndarray]":
        """Queue ``fn(batch)`` (one output row per input row); it may share a pass with queued neighbours."""
        return self.submit(_Job(fn, (batch,), rows=len(batch)))

    def submit(self, job: _Job) -> Future:
        """Queue a job; its future holds the result (or the exception)."""
        with self._cond:
            if self._closing:
                raise ServiceError("the detector is shutting down")
            self._jobs.append(job)
            self._cond.notify_all()  # the forward thread, and anyone waiting on the queue (tests, monitors)
        return job.future

    def wait_queued(self, n: int, timeout: float) -> bool:
        """Block until ``n`` jobs wait in the queue (not counting the one running); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._jobs) >= n, timeout)

    def close(self) -> None:
        """Finish the queued jobs, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def _next(self) -> list[_Job] | None:
        """The next job, with the embedding jobs of the same function queued right behind it (None: closed)."""
        with self._cond:
            while not self._jobs and not self._closing:
                self._cond.wait()
            if not self._jobs:
                return None
            group = [self._jobs.popleft()]
            rows = group[0].rows
            while rows is not None and self._jobs and self._jobs[0].rows is not None \
                    and self._jobs[0].fn == group[0].fn and rows + self._jobs[0].rows <= self.max_rows:
                rows += self._jobs[0].rows
                group.append(self._jobs.popleft())
            return group

    def _loop(self) -> None:
        while (group := self._next()) is not None:
            try:
                if len(group) == 1:
                    group[0].future.set_result(group[0].fn(*group[0].args))
                    continue
                out = group[0].fn(np.concatenate([j.args[0] for j in group]))
            except Exception as exc:  # noqa: BLE001 - every waiting caller gets the error, the thread goes on
                for j in group:
                    j.future.set_exception(exc)
                continue
            start = 0
            for j in group:
                j.future.set_result(out[start:start + j.rows])
                start += j.rows


def public_model_name(model: str) -> str:
    """The model's name as visitors may see it: a hub id as it is, a local folder by its last name only
    (the server's paths are not the public's business)."""
    from ..hub import looks_like_hub_id

    return model if looks_like_hub_id(model) else (Path(model).name or "local model")


class DemoEngine:
    """Lazily loaded detector + the demo's URL policy; thread-safe, one forward pass at a time."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        self._detector: Any = None
        self._load_lock = threading.Lock()
        self._forward: ForwardThread | None = None
        self.policy = url_policy(settings)

    def forward(self) -> ForwardThread:
        """The one forward thread (started on first use; again after a shutdown: an app may be restarted)."""
        with self._load_lock:
            if self._forward is None:
                self._forward = ForwardThread(max(1, int(getattr(self._detector, "batch_size", 32))))
            return self._forward

    def close(self) -> None:
        """Stop the forward thread once its queued passes are done (at server shutdown)."""
        with self._load_lock:
            fwd, self._forward = self._forward, None
        if fwd is not None:
            fwd.close()

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

    @property
    def loaded(self) -> bool:
        """Whether the detector is loaded (then :meth:`detector` returns at once, without blocking)."""
        return self._detector is not None

    def set_detector(self, detector: Any) -> None:
        """Use an already loaded Detector (benchmarks, embedding the demo in another app)."""
        self._detector = detector

    def info(self) -> dict[str, Any]:
        """What answers: model, head, threshold, band, rule (loads the detector)."""
        det = self.detector()
        s = self.settings
        return {"model": public_model_name(s.model), "classifier": det.classifier, "threshold": det.decision_threshold,
                "unsure_band": list(s.unsure_band) if s.unsure_band else None, "rule": rule_text(det.decision_threshold),
                "heads": [n for n in det.heads if ":" not in n],
                "generators": [n.split(":", 1)[1] for n in det.heads if n.startswith(det.classifier + ":")]}

    def analyse(self, inputs: list[Decoded], heatmap: bool = False,
                meanwhile: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        """Verdict, probability, per-head scores, generator (and heatmap) of each decoded image, in order.

        ``meanwhile`` runs on the calling thread while the forward pass runs (metadata, previews).
        """
        if not inputs:
            return []
        grids = [d.grid or crops(shrink(d.image, self.settings.heatmap_pixels), self.settings.heatmap_grid, d.size)
                 for d in inputs] if heatmap else []
        pending, maps = self._submit(inputs, grids)
        if meanwhile is not None:
            meanwhile()
        return self._answers(inputs, grids, pending.result(), [m.result() for m in maps])

    async def aanalyse(self, inputs: list[Decoded]) -> list[dict[str, Any]]:
        """:meth:`analyse` for async code: each input's heatmap comes from its ``grid`` (when it has one).

        The event loop waits for the forward thread without holding any thread itself.
        """
        import asyncio

        if not inputs:
            return []
        grids = [d.grid for d in inputs if d.grid is not None]
        if grids and len(grids) != len(inputs):
            raise UsageError("either every input has its heatmap crops or none has")
        pending, maps = self._submit(inputs, grids)
        embs = await asyncio.wrap_future(pending)
        return self._answers(inputs, grids, embs, [await asyncio.wrap_future(m) for m in maps])

    def _submit(self, inputs: list[Decoded], grids: list) -> tuple[Future, list[Future]]:
        """Queue the images' pass and each image's crops (a job of its own) on the forward thread."""
        det = self.detector()
        fwd = self.forward()
        pending = fwd.embed(det.embed_pixels, np.stack([d.pixels for d in inputs]))
        return pending, [fwd.embed(det.embed_pixels, g[0]) for g in grids]

    def _answers(self, inputs: list[Decoded], grids: list, embs: np.ndarray, maps: list[np.ndarray]) -> list[dict]:
        det = self.detector()
        results = [{"source": d.source} for d in inputs]
        for r, v in zip(results, det.classify(embs)):
            r.update(v)
        self._extras(det, results, embs)
        head = det.heads[det.classifier]
        for d, r, (_, rows, cols, boxes, scale), m in zip(inputs, results, grids, maps):
            r["heatmap"] = heatmap_payload(head.probability(head.decision_function(m)), rows, cols, boxes, d.size,
                                           scale)
        return [self._finish(det, r) for r in results]

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
