"""``deepsift embed|detect --ray``: the same engine as Ray actors across a cluster, sharded outputs.

The driver expands the inputs and cuts them into chunks of ``chunk_size`` sources (streamed:
never the whole list). Chunk *i* goes to actor ``i mod actors``; each actor holds one
:class:`~deepsift.model.detector.Detector` (one GPU each when the cluster has GPUs, else CPU) and
writes its chunk's shard itself: ``OUT-00000.parquet``, ``OUT-00001.parquet``, ... for embed,
``OUT-00000.jsonl`` ... for detect. Read in name order, the shards hold exactly the rows of the
local run, in the same order (the local output is one file). At most ``2 x actors`` chunks are in
flight. The model folder and the inputs must be visible to every node (shared filesystem).

As for ``data build --ray``: Ray's helpers try to reach outside addresses; run it inside a
loopback-only network namespace (``unshare -n``) unless the cluster is meant to be networked.
"""
from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..exceptions import ModelError
from ..raytools import init_ray, unwrap_error


class EngineActor:
    """One detector on one node: embeds or scores a chunk and writes its shard."""

    def __init__(self, model: str, heads: str | None, classifier: str | None, kwargs: dict) -> None:
        from .detector import Detector

        kwargs = {**kwargs, "device": "auto"}  # the actor's own device: its GPU when Ray gave it one
        if heads is None and classifier is None:
            self.det = Detector.load_backbone_only(model, **kwargs)
        else:
            self.det = Detector.load(model, heads=heads, classifier=classifier or "linear", **kwargs)

    def ready(self) -> int:
        """The embedding width (the model is loaded by now)."""
        return int(self.det.backbone.config.hidden_size)

    def embed(self, sources: list, path: str, model: str) -> tuple[int, int]:
        """Embed ``sources`` into the parquet shard ``path``; (rows, failed)."""
        from .embeddings import EmbeddingWriter

        total = failed = 0
        with EmbeddingWriter(path, dim=self.ready(), model=model) as writer:
            for items, emb in self.det.embed_batches(sources):
                writer.write_batch(items, emb)
                total += len(items)
                failed += sum(it.row is None for it in items)
        return total, failed

    def detect(self, sources: list, path: str) -> tuple[int, int]:
        """Score ``sources`` into the JSONL shard ``path``; (rows, failed)."""
        from ..output import write_predictions

        preds = list(self.det.predict_iter(sources))
        write_predictions(iter(preds), "jsonl", path)
        return len(preds), sum(p.error is not None for p in preds)


def shard_path(out: str | Path, index: int) -> Path:
    """The ``index``-th shard beside ``out``: ``emb.parquet`` -> ``emb-00003.parquet``."""
    out = Path(out)
    return out.with_name(f"{out.stem}-{index:05d}{out.suffix}")


def _chunks(sources: Iterable[object], size: int) -> Iterator[list]:
    it = iter(sources)
    while True:
        chunk = list(islice(it, size))
        if not chunk:
            return
        yield chunk


def run_on_ray(task: str, sources: Iterable[object], out: str | Path, *, model: str, address: str,
               heads: str | None = None, classifier: str | None = None, actors: int | None = None,
               chunk_size: int = 4096, kwargs: dict | None = None) -> Iterator[tuple[Path, int, int]]:
    """Run ``task`` (``"embed"`` or ``"detect"``) on Ray; yield ``(shard, rows, failed)`` per chunk, in order."""
    import ray
    from ray.exceptions import RayError

    started = init_ray(address)
    pool: list[Any] = []
    try:
        n_gpu = int(ray.cluster_resources().get("GPU", 0))
        n_actors = actors or max(1, n_gpu)
        actor_cls = ray.remote(num_gpus=1 if n_gpu else 0, num_cpus=0)(EngineActor)
        run_kwargs = {k: v for k, v in (kwargs or {}).items() if k not in ("device", "devices")}
        pool = [actor_cls.remote(str(model), heads, classifier, run_kwargs) for _ in range(n_actors)]
        try:
            ray.get([a.ready.remote() for a in pool])
        except RayError as exc:
            raise unwrap_error(exc, ModelError) from None
        inflight: dict[int, Any] = {}
        done: dict[int, tuple[int, int]] = {}
        next_out = 0

        def drain(limit: int) -> Iterator[tuple[Path, int, int]]:
            nonlocal next_out
            while len(inflight) > limit or next_out in done:
                if next_out not in done:
                    ready, _ = ray.wait(list(inflight.values()), num_returns=1)
                    index = next(i for i, ref in inflight.items() if ref == ready[0])
                    try:
                        done[index] = ray.get(inflight.pop(index))
                    except RayError as exc:
                        raise unwrap_error(exc, ModelError) from None
                    continue
                rows, failed = done.pop(next_out)
                yield shard_path(out, next_out), rows, failed
                next_out += 1

        for index, chunk in enumerate(_chunks(sources, chunk_size)):
            actor = pool[index % n_actors]
            path = str(shard_path(out, index))
            ref = actor.embed.remote(chunk, path, str(model)) if task == "embed" else actor.detect.remote(chunk, path)
            inflight[index] = ref
            yield from drain(2 * n_actors - 1)
        yield from drain(0)
    finally:
        for a in pool:
            ray.kill(a)
        if started:
            ray.shutdown()
