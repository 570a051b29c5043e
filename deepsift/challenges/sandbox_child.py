"""The confined side of a model run: read a model and pixel batches on stdin, write outputs on stdout.

Run by :mod:`deepsift.challenges.sandbox` as a plain script (``python -I sandbox_child.py``), so it
imports nothing of deepsift: only numpy and onnxruntime. It never opens a file or a socket; by
the time it starts it has no network, no way to see the server's files, and rlimits on memory,
CPU time and file writes. Protocol (big-endian 8-byte lengths):

    stdin : header JSON line, model bytes, then per batch <len><npy float32 NCHW/NHWC>, then <0>
    stdout: per batch <len><npy float32 model output>
    stderr: on failure one JSON line {"error": "...", "kind": "model|shape|memory|runtime"}
"""
import io
import json
import struct
import sys


def _read_exact(stream, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise EOFError("input ended early")
        buf += chunk
    return bytes(buf)


def _fail(kind, message):
    sys.stderr.write(json.dumps({"kind": kind, "error": message[:2000]}) + "\n")
    sys.stderr.flush()
    sys.exit(3)


def main():
    import numpy as np

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    header = json.loads(inp.readline())
    model = _read_exact(inp, int(header["model_bytes"]))
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(header.get("threads", 1))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    except MemoryError:
        _fail("memory", "out of memory while loading the model")
    except Exception as exc:  # noqa: BLE001 - any load failure is the model's fault
        _fail("model", f"cannot load the ONNX model: {exc}")
    del model
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        _fail("model", f"the model must take one input (an image batch); it takes {len(inputs)}: "
                       f"{[i.name for i in inputs]}")
    name = inputs[0].name
    while True:
        (n,) = struct.unpack(">Q", _read_exact(inp, 8))
        if n == 0:
            break
        batch = np.load(io.BytesIO(_read_exact(inp, n)), allow_pickle=False)
        try:
            result = sess.run(None, {name: batch})[0]
        except MemoryError:
            _fail("memory", "out of memory while running the model")
        except Exception as exc:  # noqa: BLE001
            text = str(exc)
            kind = "memory" if "alloc" in text.lower() or "memory" in text.lower() else "runtime"
            _fail(kind, f"the model failed on a batch of shape {list(batch.shape)}: {text}")
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(np.asarray(result, dtype=np.float32)), allow_pickle=False)
        data = buf.getvalue()
        out.write(struct.pack(">Q", len(data)) + data)
        out.flush()


if __name__ == "__main__":
    main()
