"""Submitted ONNX models: run by the platform in a confined child, failures explained and refunded."""
from __future__ import annotations

import json
import socket
import textwrap
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deepsift.challenges import sandbox
from deepsift.challenges.runfailures import RunFailure, failure_of
from deepsift.challenges.sandbox import Confinement, ModelRunError, parse_preprocessing, run_model
from deepsift.exceptions import InvalidInputError
from platformkit import host_challenge, join, register, run_worker

SIZE = 32


def _save(graph: onnx.GraphProto, path: Path, opset: int = 13) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _x() -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])


def detector_model(path: Path) -> Path:
    """A real (tiny) detector: mean |Laplacian| of the pixels: high for the checker-artefact fakes."""
    k = np.zeros((1, 3, 3, 3), np.float32)
    for c in range(3):
        k[0, c] = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32) / 3
    g = helper.make_graph([helper.make_node("Conv", ["x", "k"], ["c"]), helper.make_node("Abs", ["c"], ["a"]),
                           helper.make_node("ReduceMean", ["a"], ["s"], axes=[1, 2, 3], keepdims=0)],
                          "det", [_x()], [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N"])],
                          [helper.make_tensor("k", TensorProto.FLOAT, k.shape, k.ravel())])
    return _save(g, path)


def wrong_shape_model(path: Path) -> Path:
    """Returns (N, 3): not a score per image."""
    g = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["s"], axes=[2, 3], keepdims=0)], "bad", [_x()],
                          [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 3])])
    return _save(g, path)


def crashing_model(path: Path) -> Path:
    """Reshapes to a shape that cannot hold the data: fails at run time."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [7, 5])
    g = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["s"])], "crash", [_x()],
                          [helper.make_tensor_value_info("s", TensorProto.FLOAT, [7, 5])], [shape])
    return _save(g, path)


def hungry_model(path: Path) -> Path:
    """Tiles the input into a ~1.6 GB tensor: more than the memory limit."""
    reps = helper.make_tensor("reps", TensorProto.INT64, [4], [1, 16, 32, 64])
    g = helper.make_graph([helper.make_node("Tile", ["x", "reps"], ["t"]),
                           helper.make_node("ReduceMean", ["t"], ["s"], axes=[1, 2, 3], keepdims=0)], "oom", [_x()],
                          [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N"])], [reps])
    return _save(g, path)


def slow_model(path: Path) -> Path:
    """A Loop of 10^9 additions: never done within the time limit."""
    body = helper.make_graph([helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                              helper.make_node("Add", ["v_in", "one"], ["v_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
                             [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
                             [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
    g = helper.make_graph([helper.make_node("Loop", ["n", "cond", "v0"], ["v"], body=body),
                           helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),
                           helper.make_node("Add", ["m", "v"], ["s"])], "slow", [_x()],
                          [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N"])],
                          [helper.make_tensor("n", TensorProto.INT64, [], [10**9]),
                           helper.make_tensor("cond", TensorProto.BOOL, [], [True]),
                           helper.make_tensor("v0", TensorProto.FLOAT, [1], [0.0])])
    return _save(g, path)


def nan_model(path: Path) -> Path:
    """log(mean - mean - 1): NaN for every image."""
    g = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),
                           helper.make_node("Sub", ["m", "m"], ["z"]), helper.make_node("Sub", ["z", "one"], ["n"]),
                           helper.make_node("Log", ["n"], ["s"])], "nan", [_x()],
                          [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N"])],
                          [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    return _save(g, path)


SPEC = json.dumps({"input_size": SIZE, "crop": "stretch", "output": "score", "batch_size": 4})


@pytest.fixture
def images(tmp_path):
    from platformkit import make_folders

    root = make_folders(tmp_path / "imgs", n=3)
    return sorted(root.rglob("*.*"))


def conf(**kw) -> Confinement:
    return Confinement(memory_mb=kw.pop("memory_mb", 1536), time_limit_s=kw.pop("time_limit_s", 60), **kw)


def test_a_model_runs_confined_and_scores_in_image_order(tmp_path, images):
    spec = parse_preprocessing(SPEC)
    scores = run_model(detector_model(tmp_path / "m.onnx"), images, spec, conf())
    assert scores.shape == (len(images),)
    # the same computation in the parent, image by image, in the same order
    from deepsift.challenges.sandbox import preprocess

    k = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32) / 3
    for p, got in zip(images, scores):
        x = preprocess(p, spec).sum(axis=0)
        conv = sum(k[i, j] * x[i:i + SIZE - 2, j:j + SIZE - 2] for i in range(3) for j in range(3))
        assert got == pytest.approx(float(np.abs(conv).mean()), rel=1e-4)


@pytest.mark.parametrize("maker, conf_kw, kind, expected", [
    (wrong_shape_model, {}, RunFailure.WRONG_OUTPUT_SHAPE,
     "wrong output shape: for a batch of 4 images the output must have shape [4], [4, 1] or [4, 2]"),
    (crashing_model, {}, RunFailure.CRASH, "crash: the model failed while running on a batch of 4 images"),
    (hungry_model, {"memory_mb": 700}, RunFailure.MEMORY_LIMIT, "memory limit: the model ran out of memory (limit 700 MiB"),
    (slow_model, {"time_limit_s": 3}, RunFailure.TIME_LIMIT, "time limit: the model did not finish within 3 s"),
    (nan_model, {}, RunFailure.NON_FINITE, "non-finite value: the model returned a NaN or infinite score in a batch "
                                           "of 4 images"),
], ids=["wrong-shape", "crash", "out-of-memory", "timeout", "nan"])
def test_failing_models_say_why_in_the_fixed_vocabulary(tmp_path, images, maker, conf_kw, kind, expected):
    """The reason is the kind's fixed text with the platform's numbers: never the runtime's message."""
    with pytest.raises(ModelRunError) as exc:
        run_model(maker(tmp_path / "m.onnx"), images, parse_preprocessing(SPEC), conf(**conf_kw))
    assert exc.value.kind is kind and failure_of(str(exc.value)) is kind
    assert str(exc.value).startswith(expected)
    for runtime_word in ("onnxruntime", "ONNXRuntimeError", "Reshape", "Tile", "requested shape", "[4, 3]", "nan ("):
        assert runtime_word not in str(exc.value)


def test_not_an_onnx_model(tmp_path, images):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelRunError) as exc:
        run_model(bad, images, parse_preprocessing(SPEC), conf())
    assert exc.value.kind is RunFailure.INVALID_MODEL


def test_preprocessing_specs_are_validated():
    assert parse_preprocessing("").hw == (224, 224)
    assert parse_preprocessing({"input_size": [64, 96]}).hw == (64, 96)
    for bad, word in (("{", "not JSON"), ({"input_size": 4}, "input_size"), ({"std": [0, 1, 1]}, "std"),
                      ({"output": "maybe"}, "output"), ({"surprise": 1}, "surprise")):
        with pytest.raises(InvalidInputError, match=word):
            parse_preprocessing(bad)


PROBE = textwrap.dedent("""
    import json, os, socket, sys
    out = {"uid": os.getuid()}
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else %d), timeout=2)
        out["tcp"] = "connected"
    except OSError as e:
        out["tcp"] = type(e).__name__
    for name, path in (("data", %r), ("shadow", "/etc/shadow"), ("tmp", %r)):
        try:
            open(path).read(1)
            out[name] = "read"
        except OSError as e:
            out[name] = type(e).__name__
    try:
        open("/usr/x-deepsift-probe", "w").write("x")
        out["write"] = "written"
    except OSError as e:
        out["write"] = type(e).__name__
    out["interfaces"] = sorted(n for _, n in socket.if_nameindex())
    sys.stdout.write(json.dumps(out))
""")


@pytest.mark.skipif(not sandbox.confinement_available(), reason="confinement needs root (CI runs as root)")
def test_the_confined_child_has_no_network_and_sees_none_of_the_servers_files(tmp_path):
    secret_dir = tmp_path / "data"
    secret_dir.mkdir()
    secret = secret_dir / "deepsift.db"
    secret.write_text("hidden labels")
    with socket.socket() as srv:  # a live TCP server in the worker's namespace
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        def accept() -> None:
            try:
                srv.accept()
            except OSError:  # closed at the end of the test: nobody (rightly) connected
                pass

        threading.Thread(target=accept, daemon=True).start()
        probe = tmp_path / "probe" / "probe.py"
        probe.parent.mkdir()
        probe.write_text(PROBE % (port, str(secret), str(tmp_path / "probe" / "probe.py")))
        probe.chmod(0o644)
        probe.parent.chmod(0o755)
        proc = sandbox._start(conf(hide=(str(secret_dir),)), script=probe)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    seen = json.loads(out)
    assert seen["uid"] != 0
    assert seen["tcp"] != "connected"
    assert seen["data"] in ("FileNotFoundError", "PermissionError")
    assert seen["shadow"] == "FileNotFoundError"  # /etc itself is hidden
    assert seen["write"] in ("PermissionError", "OSError")
    assert seen["interfaces"] == ["lo"]  # a namespace of its own: loopback only (and down)


def test_unconfined_runs_are_refused_unless_allowed(tmp_path, images, monkeypatch):
    monkeypatch.setattr(sandbox, "confinement_available", lambda: False)
    with pytest.raises(ModelRunError, match="not root"):  # sandbox unavailable
        run_model(detector_model(tmp_path / "m.onnx"), images, parse_preprocessing(SPEC), conf())
    scores = run_model(detector_model(tmp_path / "m.onnx"), images, parse_preprocessing(SPEC),
                       conf(allow_unconfined=True))
    assert np.isfinite(scores).all()


def test_model_submissions_through_the_platform(app, client, tmp_path):
    """A good model is scored; a failing one fails with its reason and does not use the quota."""
    hosted = host_challenge(app, client, tmp_path, max_total=2, bootstrap=0)
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    url = f"/api/challenges/{hosted.slug}/phases/dev/submissions"

    def send(path: Path, spec: str = SPEC):  # type: ignore[no-untyped-def]
        return client.post(url, files={"file": (path.name, path.read_bytes())},
                           data={"kind": "model", "preprocessing": spec}, headers=alice.auth)

    r = send(detector_model(tmp_path / "good.onnx"))
    assert r.status_code == 201, r.text
    good = r.json()["id"]
    bad = send(wrong_shape_model(tmp_path / "bad.onnx")).json()["id"]
    assert send(detector_model(tmp_path / "x.onnx"), '{"input_size": 1}').status_code == 422  # bad spec: refused
    assert client.post(url, files={"file": ("m.onnx", b"not a model")}, data={"kind": "model"},
                       headers=alice.auth).status_code == 422
    run_worker(app)
    g = client.get(f"/api/submissions/{good}", headers=alice.auth).json()
    b = client.get(f"/api/submissions/{bad}", headers=alice.auth).json()
    assert g["state"] == "scored" and g["public_score"] > 0.9  # the artefact detector separates the classes
    assert b["state"] == "failed" and failure_of(b["reason"]) is RunFailure.WRONG_OUTPUT_SHAPE
    assert not b["counts_toward_quota"]
    q = client.get(f"/api/challenges/{hosted.slug}", headers=alice.auth).json()["phases"][0]["quota"]
    assert q["used_total"] == 1 and q["left"] == 1
