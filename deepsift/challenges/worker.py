"""``deepsift challenges worker``: claim jobs from the queue, score them, heartbeat, finish exactly once.

Any number of workers, on any machines that reach the database and the storage folder, share one
queue (:mod:`deepsift.challenges.queue`). While a job runs, a heartbeat thread renews its lease
every third of the lease time; a worker that dies stops renewing, and another takes the job over
when the lease runs out. The database going away (a PostgreSQL restart) is waited out: claims,
heartbeats and finishes are retried with backoff, so workers recover without anyone's help.

A job scores in two steps: the public and private metrics (state ``scored``: on the leaderboard at
once), then the ``all`` part and the bootstrap intervals (same lease; a takeover redoes only that step).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from ..exceptions import DeepsiftError
from ..server.db import Database, is_transient
from ..server.storage import Storage
from . import queue, scoring
from .models import Submission, TestSet
from .predictions import ALIGNED_FILE, load_aligned, save_aligned
from .sandbox import Confinement, ModelRunError, parse_preprocessing, run_model
from .settings import ChallengeSettings
from .testsets import IMAGES_DIR, load_key

log = logging.getLogger("deepsift.challenges.worker")


@dataclass
class JobInfo:
    """What a job needs, read once at its start."""

    kind: str
    folder: Path  # the submission's folder
    file: Path
    spec: dict | None
    key_folder: Path
    threshold: float
    ranking_metric: str
    bootstrap: int
    memory_mb: int
    time_limit_s: float
    train_generators: list[str] | None = None
    rank_on: str = "all"


def _info(db: Database, storage: Storage, sid: str) -> JobInfo:
    def tx(s: Any) -> JobInfo:
        sub = s.get(Submission, sid)
        ph = sub.phase
        ts = s.scalar(select(TestSet).where(TestSet.phase_id == ph.id))
        if ts is None:
            raise DeepsiftError("the phase has no test set any more")
        file = storage.root / sub.file_path
        return JobInfo(sub.kind, file.parent, file, sub.spec, storage.root / ts.folder, ph.threshold,
                       ph.ranking_metric, ph.bootstrap, ph.model_memory_mb, ph.model_time_limit_s,
                       ph.train_generators, ph.rank_on or "all")

    return db.run(tx, write=False)


class Heartbeat:
    """Renews a job's lease in a background thread until stopped; ``lost`` once the lease is gone."""

    def __init__(self, db: Database, job: queue.Job, lease_s: float, worker: str = "") -> None:
        self.db, self.job, self.lease_s, self.worker = db, job, lease_s, worker
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job.submission_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                if not queue.heartbeat(self.db, self.job, self.lease_s):
                    self.lost = True
                    log.warning("job %s: lease lost (taken over by another worker)", self.job.submission_id)
                    return
                log.info("job %s: heartbeat by %s, lease renewed for %g s", self.job.submission_id, self.worker,
                         self.lease_s)
            except DBAPIError as exc:  # the database is away: keep trying, the lease may survive it
                log.warning("heartbeat of %s failed: %s", self.job.submission_id, str(exc).splitlines()[0])

    def alive(self) -> bool:
        return not self.lost

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)


class Worker:
    """One scoring worker (``run`` loops until stopped)."""

    def __init__(self, db: Database, storage: Storage, settings: ChallengeSettings, *, name: str | None = None,
                 poll_s: float = 1.0, hide: tuple[str, ...] = ()) -> None:
        self.db, self.storage, self.settings = db, storage, settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.poll_s = poll_s
        self.hide = hide
        self.stop = threading.Event()
        self.done = 0

    def run(self, once: bool = False, max_jobs: int | None = None) -> int:
        """Work until stopped (``once``: until the queue is empty); returns the jobs handled."""
        from .service import warm_keys

        try:
            warm_keys(self.db, self.storage)
        except DBAPIError:
            pass  # the loop below waits for the database
        backoff = self.poll_s
        while not self.stop.is_set():
            try:
                job = queue.claim(self.db, self.name, self.settings.lease_seconds, self.settings.max_attempts)
                backoff = self.poll_s
            except DBAPIError as exc:
                if not is_transient(exc):
                    raise
                log.warning("database unavailable (%s); retrying in %.1f s", str(exc).splitlines()[0], backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if job is None:
                if once:
                    break
                self.stop.wait(self.poll_s)
                continue
            try:
                self.handle(job)
            except DBAPIError as exc:  # lost the database mid-job: the lease expires, the job is taken again
                if not is_transient(exc):
                    raise
                log.warning("job %s interrupted by the database (%s)", job.submission_id, str(exc).splitlines()[0])
                self.stop.wait(backoff)
                continue
            self.done += 1
            if max_jobs is not None and self.done >= max_jobs:
                break
        return self.done

    def handle(self, job: queue.Job) -> None:
        """Run one job to its end (scored + intervals, or failed with the reason)."""
        sid = job.submission_id
        log.info("job %s taken by %s (%s, attempt %d)", sid, self.name, job.stage, job.attempts)
        with Heartbeat(self.db, job, self.settings.lease_seconds, self.name) as hb:
            try:
                info = _info(self.db, self.storage, job.submission_id)
                key = load_key(info.key_folder)
                if job.stage == "score":
                    scores, labels = self._scores(info, key, hb)
                    result = scoring.score(key, scores, labels, threshold=info.threshold,
                                           ranking_metric=info.ranking_metric,
                                           train_generators=info.train_generators, rank_on=info.rank_on)
                    public, private = scoring.ranking_value(result, "public"), scoring.ranking_value(result, "private")
                    log.info("job %s: scores computed by %s, saving them", sid, self.name)
                    if hb.lost or not queue.finish(self.db, job, result, public, private, keep_lease=True):
                        log.warning("job %s: lease lost, result dropped", sid)
                        return
                    log.info("job %s scored by %s (public %s %s)", sid, self.name, info.ranking_metric, public)
                else:
                    scores, labels = load_aligned(info.folder / ALIGNED_FILE)
                    result = self._current_scores(job.submission_id)
                result = scoring.complete(result, key, scores, labels, resamples=info.bootstrap)
                if queue.set_intervals(self.db, job, result):
                    log.info("job %s intervals done by %s", sid, self.name)
                else:
                    log.warning("job %s: lease lost, intervals dropped", sid)
            except (ModelRunError, DeepsiftError) as exc:
                self._fail(job, str(exc))
            except DBAPIError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug: fail this job with the reason, keep the worker
                log.exception("job %s crashed", sid)
                self._fail(job, f"internal error while scoring ({type(exc).__name__}: {exc})")

    def _fail(self, job: queue.Job, reason: str) -> None:
        if queue.fail(self.db, job, reason):
            log.info("job %s failed by %s: %s", job.submission_id, self.name, reason.splitlines()[0] if reason else "")
        else:
            log.warning("job %s: lease lost, failure dropped", job.submission_id)

    def _scores(self, info: JobInfo, key: Any, hb: Heartbeat) -> tuple[np.ndarray, np.ndarray | None]:
        if info.kind == "predictions":
            return load_aligned(info.folder / ALIGNED_FILE)
        spec = parse_preprocessing(info.spec or {})
        names = key.names.to_pylist()
        images = [info.key_folder / IMAGES_DIR / n for n in names]
        conf = Confinement(memory_mb=info.memory_mb, time_limit_s=info.time_limit_s,
                           allow_unconfined=self.settings.allow_unconfined_models, user=self.settings.sandbox_user,
                           hide=self.hide, max_batch_mb=self.settings.max_batch_mb)
        scores = run_model(info.file, images, spec, conf, heartbeat=hb.alive)
        from ..evaluate.scorefiles import AlignedScores

        save_aligned(AlignedScores(str(info.file), scores, None, "model"), info.folder / ALIGNED_FILE)
        return scores, None

    def _current_scores(self, sid: str) -> dict:
        return self.db.run(lambda s: dict(s.get(Submission, sid).scores or {}), write=False)


def install_signal_handlers(worker: Worker) -> None:
    """SIGTERM/SIGINT: finish the current job, then stop."""
    def stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping after the current job", signum)
        worker.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def wait_for_database(db: Database, timeout_s: float = 60.0) -> None:
    """Block until the database answers (a worker started before its server is ready)."""
    from sqlalchemy import text

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except DBAPIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
