"""deepsift adapt --generate NAME=KIND:SOURCE: the new generator's images are built from D3 prompts by data build
(resumable, on Ray when asked), then measured and adapted like a folder of images."""
from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from adaptkit import tiny_world
from deepsift.adapt.loop import Run
from deepsift.adapt.runner import run_adapt
from deepsift.adapt.plan import AdaptPlan
from deepsift.cli import main
from deepsift.data.reader import read_d3
from tiny_models import shared_tiny_models


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tiny base network and known data, and a JSONL of 14 prompts."""
    root = tiny_world(tmp_path_factory.mktemp("adapt-build"), n_known=16)
    lines = [json.dumps({"id": f"rec{i}", "prompt": f"a photo of thing {i}"}) for i in range(14)]
    (root / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    return root


def spec(models) -> str:
    return f"sd=t2i:{models.sd},steps=2,width=64,height=64,batch=2"


def plan_for(world, models, out, **kw) -> AdaptPlan:
    return AdaptPlan(model=str(world / "base"), generator="sd", images="", generate=spec(models),
                     prompts=str(world / "prompts.jsonl"), count=10, data=str(world / "known"), out=str(out),
                     bootstrap=50, workers=1, fine_tune="never", min_test_images=4, threads=1, **kw)


def _step(out, name) -> dict:
    return json.loads(next((out / "steps").glob(f"[0-9][0-9]-{name}.json")).read_text())


def _images(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def built(world, tmp_path_factory):
    """``deepsift adapt --generate sd=t2i:... --prompts P --count 10`` on the tiny text-to-image model, interrupted
    once after the build's shards were written but before its step was recorded, then resumed (``--resume``)."""
    models = shared_tiny_models(tmp_path_factory)
    out = world / "run"
    run = run_adapt(plan_for(world, models, out), stop_after="build", say=lambda _: None)
    first = _images(run.steps / "build" / "images")
    first_step = _step(out, "build")
    for p in list(run.steps.glob("[0-9][0-9]-*.json")) + list((run.steps / "build" / "images").iterdir()):
        p.unlink()
    assert main(["adapt", "--model", str(world / "base"), "--data", str(world / "known"), "--generate", spec(models),
                 "--prompts", str(world / "prompts.jsonl"), "--count", "10", "--out", str(out), "--fine-tune", "never",
                 "--bootstrap", "50", "--workers", "1", "--min-test-images", "4", "--threads", "1", "--resume"]) == 0
    return out, models, first, first_step


def test_adapt_builds_the_new_generator_from_prompts_and_measures_it(built):
    out, models, _, _ = built
    built_step = _step(out, "build")
    assert built_step["records"] == built_step["images"] == 10 and built_step["failures"] == {}
    ids = [json.loads(line)["id"] for line in (out / "steps" / "build" / "prompts.jsonl").read_text().splitlines()]
    assert ids == [f"rec{i}" for i in range(10)]  # the first 10 prompts
    # the images collect measures are data build's, byte for byte, one per prompt
    shard_images = sorted(g.image for r in read_d3(str(out / "steps" / "build" / "shards")) for g in r.generations)
    folder = out / "steps" / "build" / "images"
    assert sorted(_images(folder).values()) == shard_images and len(shard_images) == 10
    assert all(Image.open(p).size == (64, 64) for p in folder.iterdir())
    rows = [r for r in _step(out, "collect")["samples"] if r["generator"] == "sd"]
    assert len(rows) == 10 and {r["side"] for r in rows} == {"fit", "test"}
    after = _step(out, "after")["figures"]
    assert set(after) == {"gen_a", "sd"} and after["sd"]["n_fake"] == sum(r["side"] == "test" for r in rows)
    lineage = json.loads((out / "model" / "lineage.json").read_text())
    assert lineage["plan"]["generate"] == spec(models) and lineage["images"] == str(folder)


def test_an_interrupted_build_resumes_with_data_build_s_own_resume(built):
    """Killed after the shards were written but before the step was recorded: nothing is generated again."""
    out, _, first, first_step = built
    assert first_step["resumed_chunks"] == 0 and first_step["chunks"] >= 1
    step = _step(out, "build")
    assert step["resumed_chunks"] == step["chunks"] == first_step["chunks"]  # data build found every chunk done
    assert _images(out / "steps" / "build" / "images") == first


def test_a_moved_adaptation_folder_resumes_its_build_and_its_later_steps(world, tmp_path, tmp_path_factory):
    """Killed after the build's shards were written (its step not recorded), the folder moved to a new name:
    --resume resumes the build where it is now (nothing generated again, no error); moved again after collect, it
    embeds the built images where they are now. Paths inside the folder are recorded relative to it."""
    models = shared_tiny_models(tmp_path_factory)
    first = tmp_path / "first"
    run = run_adapt(plan_for(world, models, first), stop_after="build", say=lambda _: None)
    made, images = _step(first, "build"), _images(first / "steps" / "build" / "images")
    assert made["prompts"] == "steps/build/prompts.jsonl" and made["chunks"] >= 1
    manifest = json.loads((first / "steps" / "build" / "shards" / "build.json").read_text())
    assert manifest["source"] == "../prompts.jsonl" and manifest["source_relative"] is True
    for p in list(run.steps.glob("[0-9][0-9]-*.json")) + list((run.steps / "build" / "images").iterdir()):
        p.unlink()
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    run_adapt(plan_for(world, models, moved), resume=True, stop_after="collect", say=lambda _: None)
    step = _step(moved, "build")
    assert step["resumed_chunks"] == step["chunks"] == made["chunks"]  # data build found every chunk done
    assert _images(moved / "steps" / "build" / "images") == images
    rows = [r for r in _step(moved, "collect")["samples"] if r["generator"] == "sd"]
    assert len(rows) == 10 and all(r["relative"] and r["source"].startswith("steps/build/images/") for r in rows)
    again = tmp_path / "again"
    shutil.move(moved, again)
    run_adapt(plan_for(world, models, again), resume=True, stop_after="embed", say=lambda _: None)
    embedded = _step(again, "embed")
    assert embedded["errors"] == [] and embedded["n"] == len(_step(again, "collect")["samples"])
    # a prompt source outside the folder (or a hub id) stays as given
    from deepsift.generate.plan import recorded_source

    for source in (str(world / "prompts.jsonl"), "owner/d3-prompts"):
        assert recorded_source(source, again / "steps" / "build" / "shards", again) == {"source": source}
    assert Run(plan_for(world, models, again)).portable(str(world / "prompts.jsonl")) == \
        {"source": str(world / "prompts.jsonl")}


@pytest.mark.ray
def test_the_build_runs_on_ray_when_asked_and_gives_the_same_images(world, built, tmp_path):
    """--ray: data build's Ray route (a local cluster) makes the same images as the run without Ray (both with
    one torch thread: the same thread count gives the same bytes)."""
    from test_generate_ray import non_loopback_interfaces

    others = non_loopback_interfaces()
    if others:
        pytest.skip(f"Ray tests run only in a loopback-only network namespace (unshare -n); found interfaces {others}")
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    out, models, _, _ = built
    c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, include_dashboard=False,
                                                          object_store_memory=100 << 20))
    address = c.address
    try:
        c.add_node(num_cpus=1, object_store_memory=100 << 20)
        c.wait_for_nodes()
        run_adapt(plan_for(world, models, tmp_path / "ray", ray=address), stop_after="build", say=lambda _: None)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
    assert _step(tmp_path / "ray", "build")["ray"] == address
    assert _images(tmp_path / "ray" / "steps" / "build" / "images") == _images(out / "steps" / "build" / "images")


def test_build_options_without_generate_and_a_spec_for_another_name_are_refused(world, tmp_path, capsys):
    from deepsift.exceptions import UsageError

    for images, generate in (("", ""), (str(world / "known" / "real"), "sd=t2i:/nowhere")):
        with pytest.raises(UsageError, match="images \\(a folder\\) or a generator spec"):
            AdaptPlan(model="m", generator="sd", images=images, generate=generate, prompts="p", data="d", out="o")
    with pytest.raises(UsageError, match="names 'other'"):
        run_adapt(AdaptPlan(model=str(world / "base"), generator="sd", images="", generate="other=t2i:/nowhere",
                            prompts=str(world / "prompts.jsonl"), data=str(world / "known"), out=str(tmp_path / "o")),
                  say=lambda _: None)
    code = main(["adapt", "--data", str(world / "known"), "--new", f"x={world / 'known' / 'real'}", "--count", "3",
                 "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--count goes with --generate" in err[0]
