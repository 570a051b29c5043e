"""``deepsift data build --ray``: a local 2-worker Ray cluster gives the single-process output.

Run ONLY inside a loopback-only network namespace (Ray's helpers try to reach outside):

    unshare -n sh -c 'ip link set lo up && RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled \
        python -m pytest -m ray tests/test_generate_ray.py'

The test skips itself when any network interface other than loopback exists.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import shared_tiny_models

from deepsift.cli import main
from deepsift.data.reader import read_d3

pytestmark = pytest.mark.ray


def non_loopback_interfaces() -> list[str]:
    """Network interfaces other than ``lo`` in this process's network namespace.

    ``socket.if_nameindex()`` asks the kernel for the current namespace; /sys/class/net would
    show the namespace that mounted /sys (the host's, even inside ``unshare -n``).
    """
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        names = [p.name for p in Path("/sys/class/net").iterdir()]
    return sorted(n for n in names if n != "lo")


@pytest.fixture(scope="module")
def cluster():
    others = non_loopback_interfaces()
    if others:
        pytest.skip(f"Ray tests run only in a loopback-only network namespace (unshare -n); found interfaces {others}")
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, include_dashboard=False, object_store_memory=100 << 20))
    for _ in range(2):
        c.add_node(num_cpus=1, object_store_memory=100 << 20)
    c.wait_for_nodes()
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


def test_ray_build_equals_single_process_build(cluster, tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models = shared_tiny_models(tmp_path_factory)
    lines = []
    for i in range(6):
        Image.fromarray(np.random.RandomState(i).randint(0, 255, (32, 40, 3), dtype=np.uint8)).save(tmp_path / f"r{i}.png")
        lines.append(json.dumps({"id": f"id{i}", "prompt": f"picture {i}", "image": f"r{i}.png"}))
    (tmp_path / "corrupt.png").write_bytes(b"GIF89a broken")
    lines += [json.dumps({"id": "blank", "prompt": " "}), json.dumps({"id": "bad", "prompt": "x", "image": "corrupt.png"})]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    argv = ["data", "build", "--prompts", str(tmp_path / "p.jsonl"), "--chunk-size", "3", "--threads", "1",
            "-g", f"sd=t2i:{models.sd},steps=2,width=64,height=64,batch=2", "-g", f"vae=vae:{models.vae}"]
    # exit 3: the blank prompt is skipped, and "bad" keeps only its text-to-image image
    assert main(argv + ["--out", str(tmp_path / "local")]) == 3
    assert main(argv + ["--out", str(tmp_path / "ray"), "--ray", cluster.address, "--ray-actors", "2"]) == 3

    def content(out):
        return [(r.id, [(g.model, g.width, g.height, g.steps, g.seed, g.image) for g in r.generations]) for r in read_d3(out)]

    local, on_ray = content(tmp_path / "local"), content(tmp_path / "ray")
    assert [i for i, _ in local] == [f"id{i}" for i in range(6)] + ["bad"]
    assert len(dict(local)["bad"]) == 1
    assert on_ray == local  # same ids, same order, same image bytes
    # a generator that does not load fails before any work, with one clear error
    bad = argv[:-4] + ["-g", "nope=t2i:/no/such/dir", "--out", str(tmp_path / "bad"), "--ray", cluster.address]
    assert main(bad) == 1
    assert not list((tmp_path / "bad").glob("*.parquet"))
