"""The same build on a Ray cluster: chunks as tasks, generator actors, CPU tasks around them.

Per chunk: a CPU task checks prompts and decodes real images (:func:`prepare_chunk`), a
generator actor runs every generator (:func:`generate_chunk`), a CPU task PNG-encodes and
writes the shard (:func:`write_chunk`). There is one generator actor per GPU
(``num_gpus=1``); without GPUs ``actors`` CPU actors (default 1) with ``num_gpus=0``. Actors
claim no CPU so the encode/write tasks always find one (a 1-CPU node would otherwise starve).
At most ``2 x actors`` chunks are in flight. Outputs, restarts and summaries are those of the
local build (same chunk functions, same shard-exists rule); real-image paths and ``--out``
(and a ``--real-dir`` folder) must be visible to every node (shared filesystem) on a multi-node
cluster.

Ray's helper processes try to reach outside addresses: run it in a loopback-only network
namespace (``unshare -n``) unless the cluster is meant to be networked.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from ..exceptions import GeneratorError
from ..raytools import init_ray, unwrap_error
from ..output import progress as progress_bar
from .chunks import Generated, Prepared, generate_chunk, prepare_chunk, write_chunk
from .plan import BuildSummary, chunk_done, clean_temporaries, log_failures, plan_chunks, real_dir_for, write_manifest
from .sources import RealDir
from .spec import GeneratorSpec, parse_spec


class GeneratorActor:
    """Holds loaded generators on one device and runs them on prepared chunks."""

    def __init__(self, spec_texts: Sequence[str], threads: int | None) -> None:
        self.spec_texts = list(spec_texts)
        self.threads = threads
        self.generators: list[Any] = []

    def ready(self) -> list[dict]:
        """Load every generator (raises GeneratorError); return their kinds."""
        from .backends import load_generators

        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)
        self.generators = load_generators([parse_spec(t) for t in self.spec_texts])
        return [{"name": g.name, "needs_real_image": bool(g.needs_real_image)} for g in self.generators]

    def generate(self, prep: Prepared) -> Generated:
        """:func:`generate_chunk` with this actor's generators."""
        return generate_chunk(prep, self.generators)


def build_on_ray(
    source: str | None, specs: Sequence[GeneratorSpec], out: Path, *, settings: dict, add_to: str | None,
    chunk_size: int, threads: int | None, address: str, actors: int | None, progress: bool | None,
    real_dir: RealDir | None = None,
) -> BuildSummary:
    """Run :func:`deepsift.generate.builder.build` on Ray (see the module docstring)."""
    import ray
    from ray.exceptions import RayError

    t0 = time.perf_counter()
    started = init_ray(address)
    pool: list[Any] = []
    try:
        n_gpu = int(ray.cluster_resources().get("GPU", 0))
        n_actors = actors or max(1, n_gpu)
        actor_cls = ray.remote(num_gpus=1 if n_gpu else 0, num_cpus=0)(GeneratorActor)
        prepare = ray.remote(num_cpus=1)(prepare_chunk)
        write = ray.remote(num_cpus=1)(write_chunk)
        pool = [actor_cls.remote([s.to_text() for s in specs], threads) for _ in range(n_actors)]
        t_load = time.perf_counter()
        try:
            infos = ray.get([a.ready.remote() for a in pool])[0]  # every generator loads before any work
        except RayError as exc:
            raise unwrap_error(exc, GeneratorError) from None
        needs_real = any(i["needs_real_image"] for i in infos)
        needs_prompt = any(not i["needs_real_image"] for i in infos)
        real_dir = real_dir_for(real_dir, needs_real)
        out.mkdir(parents=True, exist_ok=True)
        write_manifest(out, settings, add_to=add_to)
        clean_temporaries(out)
        names = [s.name for s in specs]
        summary = BuildSummary(load_seconds=time.perf_counter() - t_load)
        inflight: dict[Any, int] = {}
        bar = progress_bar(desc="build (ray)", unit="rec", enabled=progress)

        def drain(limit: int) -> None:
            while len(inflight) > limit:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                n = inflight.pop(ready[0])
                try:
                    meta = ray.get(ready[0])
                except RayError as exc:
                    raise unwrap_error(exc, GeneratorError) from None
                summary.add(meta, resumed=False)
                log_failures(meta)
                bar.update(n)

        try:
            for chunk in plan_chunks(source, out, specs, chunk_size=chunk_size, add_to=add_to, real_dir=real_dir):
                meta = chunk_done(chunk, names)
                if meta is not None:
                    summary.add(meta, resumed=True)
                    bar.update(len(chunk.items))
                    continue
                prep_ref = prepare.remote(chunk.items, needs_prompt=needs_prompt, needs_real=needs_real, base=chunk.base)
                gen_ref = pool[chunk.index % n_actors].generate.remote(prep_ref)
                inflight[write.remote(gen_ref, str(chunk.path))] = len(chunk.items)
                drain(2 * n_actors - 1)
            drain(0)
        finally:
            bar.close()
        summary.seconds = time.perf_counter() - t0
        return summary
    finally:
        for a in pool:
            ray.kill(a)
        if started:
            ray.shutdown()
