"""The model sandbox under attack: external data, spec-sized batches, orphaned model processes."""
from __future__ import annotations

import json
import math
import os
import secrets
import select
import signal
import struct
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from deepsift.challenges import sandbox
from deepsift.challenges.onnxcheck import check_self_contained
from deepsift.challenges.preprocessing import RUNTIME_BASE_MB, plan_batches
from deepsift.challenges.runfailures import LIMIT_FAILURES, ModelRunError, RunFailure, failure_of
from deepsift.challenges.sandbox import Confinement, parse_preprocessing, run_model
from platformkit import host_challenge, join, make_folders, register
from serverkit import LineWaiter, child_pids, cmdline, start_worker
from test_challenges_models import SIZE, SPEC, detector_model, slow_model

MIB = 1 << 20
REPO = Path(__file__).resolve().parent.parent


def _model(graph: onnx.GraphProto, **kw) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], **kw)
    m.ir_version = 8
    return m


def _external(t: onnx.TensorProto, location: str, length: int) -> onnx.TensorProto:
    """Point ``t``'s data at ``location`` (relative: resolved against the runtime's working directory)."""
    for f in ("int64_data", "float_data", "raw_data"):
        t.ClearField(f)
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def leaking_model(path: Path, location: str, n: int) -> Path:
    """Reads ``n`` int64 from the file at ``location`` and asks Reshape for that shape: onnxruntime's
    error then prints the file's bytes as numbers (9+ values: no optimizer pass folds the tensor first)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    shape = _external(helper.make_tensor("shape", TensorProto.INT64, [n], [1] * n), location, 8 * n)
    nodes = [helper.make_node("Shape", ["x"], ["xs"]), helper.make_node("Slice", ["xs", "z", "o"], ["b"]),
             helper.make_node("Sub", ["b", "b"], ["zero"]), helper.make_node("Add", ["shape", "zero"], ["want"]),
             helper.make_node("Reshape", ["x", "want"], ["r"]),
             helper.make_node("ReduceMean", ["r"], ["s"], keepdims=0)]
    g = helper.make_graph(nodes, "leak", [x], [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N"])],
                          [shape, helper.make_tensor("z", TensorProto.INT64, [1], [0]),
                           helper.make_tensor("o", TensorProto.INT64, [1], [1])])
    onnx.save(_model(g), path)
    return path


def _ext(name: str = "w") -> onnx.TensorProto:
    return _external(helper.make_tensor(name, TensorProto.FLOAT, [2], [1.0, 2.0]), "etc/passwd", 8)


def _hiding_places() -> dict[str, onnx.ModelProto]:
    """One model per place an externally stored tensor can sit."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    add = helper.make_node("Add", ["x", "w"], ["y"])
    branch = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "b", [], [y], [_ext()])
    plain_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "p", [], [y])
    nested = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=plain_branch)],
                               "n", [], [y], [helper.make_tensor("c", TensorProto.BOOL, [], [True])])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    sparse = helper.make_sparse_tensor(_ext("w"), helper.make_tensor("i", TensorProto.INT64, [2], [0, 1]), [2])
    fn = helper.make_function("local", "f", ["a"], ["b"], [helper.make_node("Constant", [], ["b"], value=_ext("k"))],
                              [helper.make_opsetid("", 13)])
    return {
        "initializer": _model(helper.make_graph([add], "g", [x], [y], [_ext()])),
        "constant attribute": _model(helper.make_graph(
            [helper.make_node("Constant", [], ["w"], value=_ext("k")), add], "g", [x], [y])),
        "If branch initializer": _model(helper.make_graph(
            [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=plain_branch)], "g", [x, cond], [y])),
        "If inside If": _model(helper.make_graph(
            [helper.make_node("If", ["c"], ["y"], then_branch=nested, else_branch=plain_branch)], "g", [x, cond], [y])),
        "sparse initializer": _model(helper.make_graph([add], "g", [x], [y], sparse_initializer=[sparse])),
        "local function": _model(helper.make_graph([add], "g", [x], [y], [helper.make_tensor("w", 1, [2], [1, 2])]),
                                 functions=[fn]),
    }


@pytest.mark.parametrize("place", list(_hiding_places()))
def test_external_tensor_data_is_refused_wherever_the_tensor_sits(place):
    model = _hiding_places()[place]
    with pytest.raises(ModelRunError) as exc:
        check_self_contained(model.SerializeToString())
    assert exc.value.kind is RunFailure.EXTERNAL_DATA
    # the same model with the data inside passes
    for t in _all_tensors(model):
        t.ClearField("external_data")
        t.data_location = TensorProto.DEFAULT
    check_self_contained(model.SerializeToString())


def _all_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    from onnx.external_data_helper import _get_all_tensors

    found = list(_get_all_tensors(model))
    for fn in model.functions:
        found += [a.t for n in fn.node for a in n.attribute if a.HasField("t")]
    found += [s.values for s in model.graph.sparse_initializer]
    return found


def test_self_contained_and_malformed_models(tmp_path):
    check_self_contained(detector_model(tmp_path / "m.onnx").read_bytes())
    for junk in (b"\x08\x07garbage", b"\x3a\xff\xff\xff\x0f", b"\x3a" * 200, b"\x3b\x00"):
        with pytest.raises(ModelRunError) as exc:
            check_self_contained(junk)
        assert exc.value.kind is RunFailure.INVALID_MODEL


def test_a_model_reading_a_server_file_is_refused_and_the_file_never_shows(app, client, tmp_path):
    """The attack: a relative external-data path, resolved by onnxruntime against the child's working
    directory, and the bytes returned inside the runtime's error text. Refused with the fixed reason."""
    hosted = host_challenge(app, client, tmp_path, bootstrap=0)
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    n = 9
    secret = (b"postgresql://app:" + secrets.token_hex(16).encode() + b"@db/x").ljust(8 * n, b"#")
    numbers = [str(v) for v in struct.unpack(f"<{n}q", secret)]
    with tempfile.TemporaryDirectory(dir=REPO) as plant:  # outside every folder the sandbox hides
        (Path(plant) / "app.env").write_bytes(secret)
        os.chmod(plant, 0o755)  # readable by anyone, as /etc/passwd or a world-readable config file is
        os.chmod(Path(plant) / "app.env", 0o644)
        location = os.path.relpath(Path(plant) / "app.env", "/")  # relative to '/', the old working directory
        model = leaking_model(tmp_path / "leak.onnx", location, n)
        r = client.post(f"/api/challenges/{hosted.slug}/phases/dev/submissions",
                        files={"file": ("leak.onnx", model.read_bytes())},
                        data={"kind": "model", "preprocessing": SPEC}, headers=alice.auth)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        from platformkit import run_worker

        run_worker(app)
    sub = client.get(f"/api/submissions/{sid}", headers=alice.auth)
    pages = [client.get(u, headers=h) for u, h in ((f"/submissions/{sid}", alice.auth),
                                                   (f"/challenges/{hosted.slug}/submissions", alice.auth),
                                                   (f"/challenges/{hosted.slug}/admin", hosted.host.auth))]
    assert sub.status_code == 200 and all(p.status_code == 200 for p in pages)
    body = sub.json()
    assert body["state"] == "failed"
    assert body["reason"] == str(ModelRunError(RunFailure.EXTERNAL_DATA))
    for text in [sub.text] + [p.text for p in pages]:
        assert secret.decode() not in text and secret[:24].decode() not in text
        assert not [v for v in numbers if v in text]  # not even as the runtime prints it: int64 values
    assert str(ModelRunError(RunFailure.EXTERNAL_DATA)).split(":")[1].strip()[:40] in pages[0].text


PROBE = """
import json, os, sys
out = {"cwd": os.getcwd(), "entries": os.listdir(".")}
for name, path in (("relative", %r), ("opt", "/opt"), ("var", "/var/lib"), ("passwd", "/etc/passwd"),
                   ("loader", "/etc/ld.so.cache")):
    try:
        out[name] = "dir:" + ",".join(os.listdir(path)) if os.path.isdir(path) else "read:" + open(path, "rb").read(8).hex()
    except OSError as e:
        out[name] = type(e).__name__
try:
    open("x", "w").write("x")
    out["write"] = "written"
except OSError as e:
    out["write"] = type(e).__name__
sys.stdout.write(json.dumps(out))
"""


@pytest.mark.skipif(not sandbox.confinement_available(), reason="confinement needs root (CI runs as root)")
def test_the_confined_child_works_in_an_empty_private_folder(tmp_path):
    with tempfile.TemporaryDirectory(dir=REPO) as plant:
        (Path(plant) / "app.env").write_text("DATABASE_URL=secret")
        probe = tmp_path / "probe" / "probe.py"
        probe.parent.mkdir()
        probe.write_text(PROBE % os.path.relpath(Path(plant) / "app.env", "/"))
        probe.chmod(0o644)
        probe.parent.chmod(0o755)
        proc = sandbox._start(Confinement(memory_mb=1024, time_limit_s=30), script=probe)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    seen = json.loads(out)
    assert seen["cwd"] == sandbox.WORKDIR and seen["entries"] == []
    assert seen["relative"] == "FileNotFoundError"
    kept = {Path(k).relative_to("/opt").parts[0] for k in sandbox._needed_paths() if k.startswith("/opt/")}
    assert set(filter(None, seen["opt"].removeprefix("dir:").split(","))) <= kept  # only what Python needs
    assert seen["var"] == "FileNotFoundError" and seen["passwd"] == "FileNotFoundError"  # /var, /etc: hidden
    assert seen["loader"].startswith("read:")  # but the loader's index is there
    assert seen["write"] in ("PermissionError", "OSError")


def test_an_unconfined_child_works_in_an_empty_folder_too(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "confinement_available", lambda: False)  # the development mode, even as root
    (tmp_path / "app.env").write_text("DATABASE_URL=secret")
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE % os.path.relpath(tmp_path / "app.env", "/"))
    conf = Confinement(memory_mb=1024, time_limit_s=30, allow_unconfined=True)
    with pytest.raises(ValueError):
        sandbox._start(conf, script=probe)  # never the worker's own working directory
    (tmp_path / "wd").mkdir()
    proc = sandbox._start(conf, script=probe, workdir=str(tmp_path / "wd"))
    out, _ = proc.communicate(timeout=60)
    seen = json.loads(out)
    assert seen["cwd"] == str(tmp_path / "wd") and seen["entries"] == []
    assert seen["relative"] == "FileNotFoundError"


def test_failure_kinds_read_back_from_stored_reasons():
    for kind in RunFailure:
        numbers = dict(batch=4, seconds=3, limit_mb=700, buffers_mb=2, height=8, width=8, need_mb=1)
        assert failure_of(str(ModelRunError(kind, **numbers))) is kind
    assert failure_of("scoring stopped 3 times without finishing") is None and failure_of(None) is None
    assert LIMIT_FAILURES == {RunFailure.TIME_LIMIT, RunFailure.MEMORY_LIMIT}


# -- 5: the participant's spec does not size the worker's memory -----------------------------------
def test_the_largest_spec_is_cut_to_the_batch_cap_and_counted_against_the_memory_limit():
    spec = parse_preprocessing({"input_size": 2048, "batch_size": 256})
    image = 3 * 2048 * 2048 * 4
    plan = plan_batches(spec, memory_mb=4096, max_batch_bytes=256 * MIB)
    assert plan.image_bytes == image
    assert 1 <= plan.batch and plan.batch * image <= 256 * MIB < (plan.batch + 1) * image
    assert plan.child_memory_mb == 4096 - math.ceil(plan.buffer_bytes / MIB)
    assert plan.buffer_bytes >= plan.batch * image
    # a tighter memory limit shrinks the batch further: buffers + the model's copy must fit
    small = plan_batches(spec, memory_mb=600, max_batch_bytes=256 * MIB)
    assert small.batch < plan.batch
    assert small.buffer_bytes + small.batch * image + RUNTIME_BASE_MB * MIB <= 600 * MIB
    # a spec within both keeps its batch
    assert plan_batches(parse_preprocessing({"input_size": 32, "batch_size": 8}), 4096, 256 * MIB).batch == 8


@pytest.mark.parametrize("memory_mb, cap_mb, need_mb, limit_mb", [
    (300, 256, RUNTIME_BASE_MB + 4 * 48, 300),  # the phase's memory: buffers + the model's copy + its runtime
    (4096, 32, 48, 32),  # the platform's batch cap: below one 2048 px image (48 MiB)
], ids=["memory-limit", "batch-cap"])
def test_a_spec_whose_batch_of_one_cannot_fit_is_refused_before_anything_runs(tmp_path, memory_mb, cap_mb, need_mb,
                                                                              limit_mb):
    images = sorted(make_folders(tmp_path / "imgs", n=1).rglob("*.*"))
    junk = tmp_path / "m.onnx"
    junk.write_bytes(b"not even read")
    spec = parse_preprocessing({"input_size": 2048, "batch_size": 1})
    conf = Confinement(memory_mb=memory_mb, time_limit_s=30, allow_unconfined=True, max_batch_mb=cap_mb)
    with pytest.raises(ModelRunError) as exc:
        run_model(junk, images, spec, conf)
    assert exc.value.kind is RunFailure.SPEC_TOO_LARGE  # not INVALID_MODEL: the model was never loaded
    assert str(exc.value) == ("preprocessing too large: a batch of one preprocessed 2048x2048 image needs "
                              f"{need_mb} MiB, more than the {limit_mb} MiB allowed; use a smaller input_size")


def mean_model(path: Path) -> Path:
    """Any input size: the mean pixel of each image."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    g = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["s"], axes=[1, 2, 3], keepdims=0)], "mean", [x],
                          [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N"])])
    onnx.save(_model(g), path)
    return path


def test_a_large_spec_streams_batches_under_the_cap(tmp_path):
    """batch_size 256 at 512 px would be one 72 MiB batch of 24 images (and its copies); with an
    8 MiB cap the worker's traced peak stays near the cap, and every image is still scored in order."""
    images = sorted(make_folders(tmp_path / "imgs", n=8).rglob("*.*"))
    assert len(images) == 24
    spec = parse_preprocessing({"input_size": 512, "crop": "stretch", "output": "score", "batch_size": 256})
    conf = Confinement(memory_mb=1536, time_limit_s=120, allow_unconfined=True, max_batch_mb=8)
    model = mean_model(tmp_path / "m.onnx")
    tracemalloc.start()
    try:
        scores = run_model(model, images, spec, conf)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    image = 3 * 512 * 512 * 4
    assert peak < 8 * MIB + 4 * image, f"peak {peak / MIB:.1f} MiB"
    from deepsift.challenges.sandbox import preprocess

    assert scores == pytest.approx([float(preprocess(p, spec).mean()) for p in images], abs=1e-4)


# -- 6: a model process dies with its worker --------------------------------------------------------
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_model_process_dies_with_its_worker(app, client, server_settings, tmp_path):
    """kill -9 of a real `deepsift challenges worker` mid-run: its looping model is gone within a second."""
    hosted = host_challenge(app, client, tmp_path, bootstrap=0, model_time_limit_s=300)
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    r = client.post(f"/api/challenges/{hosted.slug}/phases/dev/submissions",
                    files={"file": ("slow.onnx", slow_model(tmp_path / "slow.onnx").read_bytes())},
                    data={"kind": "model", "preprocessing": SPEC}, headers=alice.auth)
    assert r.status_code == 201, r.text
    out = LineWaiter()
    worker = start_worker(server_settings.db_url, str(server_settings.data_dir), "w1", out,
                          {"DEEPSIFT_CHALLENGES_ALLOW_UNCONFINED_MODELS": "true"})
    try:
        said = out.wait_line(r"deepsift: model process (\d+) loaded the model and runs it on its first batch", 120,
                             "the worker to run the looping model")
        child = int(said[1])
        assert child in child_pids(worker.pid) and b"sandbox_child" in cmdline(child), out.tail()
        pidfd = os.pidfd_open(child)
        try:
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            readable, _, _ = select.select([pidfd], [], [], 1.0)  # a pidfd turns readable when the process ends
            ended = bool(readable)
            if not ended:  # the test failed: do not leave an orphan burning CPU (its pid is still its own)
                os.kill(child, signal.SIGKILL)
        finally:
            os.close(pidfd)
        assert ended, "the model process outlived its worker"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)


def test_the_workers_batch_cap_setting_reaches_the_sandbox(app, client, tmp_path):
    """DEEPSIFT_CHALLENGES_MAX_BATCH_MB below one image of the spec: the submission fails up front, refunded."""
    hosted = host_challenge(app, client, tmp_path, bootstrap=0)
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    spec = json.dumps({"input_size": 2048, "crop": "stretch", "output": "score", "batch_size": 256})
    r = client.post(f"/api/challenges/{hosted.slug}/phases/dev/submissions",
                    files={"file": ("m.onnx", detector_model(tmp_path / "m.onnx").read_bytes())},
                    data={"kind": "model", "preprocessing": spec}, headers=alice.auth)
    assert r.status_code == 201, r.text
    from platformkit import run_worker

    run_worker(app, max_batch_mb=32)
    sub = client.get(f"/api/submissions/{r.json()['id']}", headers=alice.auth).json()
    assert sub["state"] == "failed" and failure_of(sub["reason"]) is RunFailure.SPEC_TOO_LARGE
    assert "32 MiB allowed" in sub["reason"] and not sub["counts_toward_quota"]
