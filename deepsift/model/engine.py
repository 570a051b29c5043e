"""The batch engine: decode in worker processes (or threads) while the network runs, in input order, streaming.

Decoding (:mod:`deepsift.model.decodepool`: one process per CPU; two threads on one- or two-CPU
machines, see :func:`decode_plan`) overlaps the forward pass; on a CPU with two or more cores
the forward itself runs as per-core streams (:mod:`deepsift.model.streams`). At most ``max_in_flight``
decoded images wait at any time, so memory stays flat however long the input stream is.
Errors travel with their item; one bad input never stops a batch, and every per-input error
names its input (``"<path or URL>: <what went wrong>"``), for the detector and the baselines alike.

``mode`` is a CoDE preprocessing mode (``"official"``, ``"resize"``) or any *preprocessor*: a
picklable callable taking the decoded RGB ``PIL.Image`` to a fixed-shape array (a module-level
function, a ``functools.partial`` of one, or a small object with ``__call__``). The baselines
pass theirs, so every model decodes, fetches URLs and batches through this one engine.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np

from ..sources import URL_TIMEOUT_S, is_url
from ..urlfetch import STRICT_POLICY, FetchPolicy
from .decoding import Item, Preprocessing, Preprocessor, error_text, load_pixels, prepare_item, source_name
from .streams import stream_batches, stream_count

__all__ = ["Item", "Preprocessing", "Preprocessor", "batched", "decode_plan", "error_text", "load_pixels",
           "prepared_items", "run_batches", "source_name", "thread_items", "usable_cpus"]


def _prepare(index: int, source: object, mode: Preprocessing, url_timeout: float, url_policy: FetchPolicy) -> Item:
    """:func:`deepsift.model.decoding.prepare_item`, through this module's ``load_pixels`` (what the threads run)."""
    return prepare_item(index, source, mode, url_timeout, url_policy, loader=load_pixels)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def decode_plan(workers: int | str | None, mode: Preprocessing, count: int | None = None) -> tuple[str, int]:
    """``("processes" | "threads", n)``: how inputs are decoded for ``workers`` (an int, or None / ``"auto"``).

    ``auto`` follows the machine: one decoding process per usable CPU, except on one or two CPUs,
    where two decoding threads beside the network are as fast and start nothing (measured in
    ``benchmarks/README.md``), and for a known ``count`` of inputs under 8 per CPU (a call on a
    few images starts no processes). A number asks for that many processes, except for a known
    ``count`` under 8 per worker: then as many threads (starting a process costs ~0.1-0.3 s, far
    more than decoding a few images; the demo's one-image requests take this path). A custom
    preprocessor (the baselines') decodes in threads: processes only run the CoDE modes.
    """
    cpus = usable_cpus()
    if workers is None or workers == "auto":
        if cpus <= 2 or callable(mode) or (count is not None and count < 8 * cpus):
            return "threads", min(4, cpus)
        return "processes", cpus
    n = int(workers)
    if n < 1:
        raise ValueError(f"workers must be >= 1 or 'auto', got {workers!r}")
    few = count is not None and count < 8 * n
    return ("threads" if callable(mode) or few else "processes"), n


def prepared_items(sources: Iterable[object], mode: Preprocessing = "official", workers: int | str | None = None,
                   max_in_flight: int = 64, url_timeout: float = URL_TIMEOUT_S,
                   url_policy: FetchPolicy = STRICT_POLICY, decode_in: str | None = None,
                   between_passes: int = 0) -> Iterator[Item]:
    """Decode ``sources`` (worker processes or threads, see :func:`decode_plan`) and yield :class:`Item`
    in input order, never more than ``max_in_flight`` inputs ahead of the consumer.

    ``decode_in`` (``"processes"`` / ``"threads"``) overrides the plan's kind (benchmarks, tests).
    ``between_passes`` (threads only, see :func:`thread_items`) decodes local files that many at a time,
    only when the consumer waits for them.
    """
    kind, n = decode_plan(workers, mode, len(sources) if hasattr(sources, "__len__") else None)  # type: ignore[arg-type]
    kind = decode_in or kind
    if kind == "processes":
        from .decodepool import picklable, process_items

        if picklable(mode, url_policy):
            yield from process_items(sources, mode, n, max_in_flight, url_timeout, url_policy)
            return
    yield from thread_items(sources, mode, n, max_in_flight, url_timeout, url_policy, between_passes)


def thread_items(sources: Iterable[object], mode: Preprocessing, workers: int, max_in_flight: int,
                 url_timeout: float, url_policy: FetchPolicy, between_passes: int = 0) -> Iterator[Item]:
    """Decode ``sources`` in a thread pool and yield :class:`Item` in input order (bounded look-ahead).

    By default every input is decoded as soon as it enters the look-ahead, overlapping whatever the
    consumer does. With ``between_passes=N`` local inputs (paths, bytes, arrays) are decoded N at a
    time and only once the consumer asks for the first of them, so decoding runs *between* the
    consumer's forward passes instead of beside them; URLs are still fetched ahead (waiting on the
    network costs no CPU). On a CPU the forward pass already keeps busy with its own thread team,
    decoding beside it only preempts that team's threads (each pass then waits for its slowest
    thread): measured on 2 cores, bf16 detect gains 3-4 % this way.
    """
    window: deque[tuple[int, object, Future[Item] | None]] = deque()
    stream = enumerate(sources)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deepsift-decode") as pool:
        def submit(index: int, source: object) -> Future[Item]:
            return pool.submit(_prepare, index, source, mode, url_timeout, url_policy)

        while True:
            for index, source in stream:  # fill the look-ahead
                ahead = between_passes and not is_url(source)
                window.append((index, source, None if ahead else submit(index, source)))
                if len(window) >= max_in_flight:
                    break
            if not window:
                return
            if window[0][2] is None:  # the consumer waits: decode the next local inputs, N at a time
                started = 0
                for k, (index, source, fut) in enumerate(window):
                    if fut is None:
                        window[k] = (index, source, submit(index, source))
                        started += 1
                        if started >= between_passes:
                            break
            yield window.popleft()[2].result()  # type: ignore[union-attr]


def batched(items: Iterable[Item], batch_size: int) -> Iterator[list[Item]]:
    """Group items into runs holding ``batch_size`` decodable images (error items ride along in order)."""
    run: list[Item] = []
    good = 0
    for item in items:
        run.append(item)
        good += item.pixels is not None
        if good >= batch_size:
            yield run
            run, good = [], 0
    if run:
        yield run


def run_batches(sources: Iterable[object], forward: Callable[[np.ndarray], np.ndarray], batch_size: int = 32,
                mode: Preprocessing = "official", workers: int | str | None = None,
                url_timeout: float = URL_TIMEOUT_S,
                url_policy: FetchPolicy = STRICT_POLICY) -> Iterator[tuple[list[Item], np.ndarray]]:
    """Yield ``(items, outputs)`` per batch in input order; ``item.row`` indexes ``outputs`` (None on error).

    ``forward`` maps an NxHxWx3 uint8 batch to N output rows. A ``streamable`` CPU forward runs one
    batch per core at once, each with one intra-op thread (:mod:`deepsift.model.streams`), unless
    the inputs fit one batch. A ``pipelined`` forward with
    ``launch(batch) -> token`` and ``collect(token) -> rows`` (:class:`deepsift.model.devices.Runner` on
    CUDA) keeps one batch in flight: batch k+1 is launched (its copy to the GPU overlapping batch k's
    forward) before k is collected, so k's rows come out once k+1 is decoded or the input ends.
    """
    launch = getattr(forward, "launch", None) if getattr(forward, "pipelined", False) else None
    ahead: tuple[list[Item], list[Item], object] | None = None  # a launched batch not collected yet
    count = len(sources) if hasattr(sources, "__len__") else None  # type: ignore[arg-type]
    streams = 0 if launch is not None else stream_count(forward, count, batch_size, usable_cpus())
    # decoded inputs waiting: with streams, the batches handed out (one per stream, one more) already
    # wait decoded, so one batch of look-ahead beyond them keeps every stream fed
    look_ahead = batch_size if streams else max(2 * batch_size, 16)
    # on the CPU with one team, local inputs decode between the passes, not beside them; with
    # streams (each forward one thread, nothing waits on a barrier) and on a device, beside them
    between = 0 if launch is not None or streams else batch_size
    items = prepared_items(sources, mode, workers, look_ahead, url_timeout, url_policy, between_passes=between)
    if streams:
        yield from stream_batches(batched(items, batch_size), forward, streams, batch_size)
        return
    for run in batched(items, batch_size):
        good = [it for it in run if it.pixels is not None]
        if launch is None:
            outputs = forward(np.stack([it.pixels for it in good])) if good else np.empty((0, 0), np.float32)
            yield _rows(run, good, outputs)
            continue
        token = launch(np.stack([it.pixels for it in good])) if good else None  # queued behind the batch ahead
        for it in good:
            it.pixels = None
        if ahead is not None:
            yield _rows(ahead[0], ahead[1], _collect(forward, ahead[2]))
        ahead = (run, good, token)
    if ahead is not None:
        yield _rows(ahead[0], ahead[1], _collect(forward, ahead[2]))


def _collect(forward: object, token: object) -> np.ndarray:
    return forward.collect(token) if token is not None else np.empty((0, 0), np.float32)  # type: ignore[attr-defined]


def _rows(run: list[Item], good: list[Item], outputs: np.ndarray) -> tuple[list[Item], np.ndarray]:
    for k, it in enumerate(good):
        it.row, it.pixels = k, None  # release pixels as soon as the batch is done
    return run, outputs
