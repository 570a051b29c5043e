"""The confined side of a model run: read a model and pixel batches on stdin, write outputs on stdout.

Run by :mod:`deepsift.challenges.sandbox` as a plain script (``python -I sandbox_child.py``), so it
imports nothing of deepsift: only numpy and onnxruntime. It never opens a file or a socket; by
the time it starts it has no network, no way to see the server's files or other processes, an empty
working directory, and rlimits on memory, CPU time and file writes. Its first act makes it
non-dumpable, so that another process of the same user (another team's model) can neither see it in
its /proc (``hidepid``) nor read its memory: the model and the hidden images' pixels.
Protocol (big-endian 8-byte integers):

    stdin : header JSON line, model bytes, then per batch <nbytes><4 dims><float32 pixels>, then <0>
    stdout: <0> once the model is loaded, then per batch <len><npy float32 model output>;
            on failure <FAILED | code> (1 not a loadable model, 2 not one input, 3 out of memory,
            4 the runtime failed, 5 the output is not numbers) and exit. No text leaves: the runtime's messages can carry data.
"""
import io
import json
import struct
import sys

FAILED = 1 << 63
PR_SET_DUMPABLE = 4
INVALID_MODEL, WRONG_INPUTS, MEMORY, RUNTIME, NOT_NUMBERS = 1, 2, 3, 4, 5


def _read_exact(stream, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise EOFError("input ended early")
        buf += chunk
    return bytes(buf)


def _read_into(stream, view):
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            raise EOFError("input ended early")
        got += n


def _fail(out, code):
    out.write(struct.pack(">Q", FAILED | code))
    out.flush()
    sys.exit(3)


def _is_memory(exc):
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "alloc" in text or "memory" in text


def _undumpable():
    """Not dumpable: its /proc entries and memory only for root (a failure here is a crash, never a weaker run)."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        sys.exit(3)


def main():
    _undumpable()
    import numpy as np

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    header = json.loads(inp.readline())
    try:
        model = _read_exact(inp, int(header["model_bytes"]))
    except MemoryError:
        _fail(out, MEMORY)
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(header.get("threads", 1))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4
        sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any load failure is the model's fault
        _fail(out, MEMORY if _is_memory(exc) else INVALID_MODEL)
    del model
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        _fail(out, WRONG_INPUTS)
    name = inputs[0].name
    out.write(struct.pack(">Q", 0))
    out.flush()
    while True:
        (n,) = struct.unpack(">Q", _read_exact(inp, 8))
        if n == 0:
            break
        shape = struct.unpack(">4Q", _read_exact(inp, 32))
        try:
            batch = np.empty(shape, "<f4")
        except MemoryError:
            _fail(out, MEMORY)
        if batch.nbytes != n:
            raise ValueError("batch size and shape disagree")
        _read_into(inp, memoryview(batch).cast("B"))
        try:
            result = np.asarray(sess.run(None, {name: batch})[0])
            if result.dtype.kind not in "fiub":
                _fail(out, NOT_NUMBERS)
            data = io.BytesIO()
            np.save(data, np.ascontiguousarray(result, dtype=np.float32), allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            _fail(out, MEMORY if _is_memory(exc) else RUNTIME)
        del batch, result
        payload = data.getvalue()
        out.write(struct.pack(">Q", len(payload)) + payload)
        out.flush()


if __name__ == "__main__":
    main()
