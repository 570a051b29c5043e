"""Refuse ONNX models whose tensors live in external files, before any runtime parses them.

An ONNX tensor may say ``data_location: EXTERNAL`` with a relative ``location``; onnxruntime then
reads that file (relative to the model's folder, or the working directory for a model given as
bytes), so a submitted model could read a server file into a tensor. This module walks the model's
protobuf wire format itself (no recursion, bounded depth, nothing decoded but field numbers) over
every place a tensor can sit: graph initializers and sparse initializers, node attributes (``t``,
``tensors``, sparse tensors), subgraphs of If/Loop/Scan (``g``, ``graphs``) at any depth, local
functions and training graphs.
"""
from __future__ import annotations

from .runfailures import ModelRunError, RunFailure

MAX_DEPTH = 64  # nested messages (a subgraph inside a node inside a graph... is a few levels each)

# message kind -> {field number: kind of the embedded message} for every path that can hold a tensor
_MODEL, _TRAINING, _GRAPH, _NODE, _ATTR, _SPARSE, _FUNCTION, _TENSOR = range(8)
_CHILDREN: dict[int, dict[int, int]] = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTR},
    _ATTR: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _FUNCTION: {7: _NODE, 11: _ATTR},
    _TENSOR: {},
}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14


class _Malformed(Exception):
    pass


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def external_tensors(data: bytes) -> int:
    """How many tensors of this serialized ONNX model keep their data outside it (raises _Malformed)."""
    found = 0
    stack = [(_MODEL, 0, len(data), 0)]
    while stack:
        kind, pos, end, depth = stack.pop()
        children = _CHILDREN[kind]
        while pos < end:
            key, pos = _varint(data, pos, end)
            field, wire = key >> 3, key & 7
            if field == 0:
                raise _Malformed
            if kind == _TENSOR and field in (_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION):
                if wire == 0:
                    value, pos = _varint(data, pos, end)
                    if field == _TENSOR_DATA_LOCATION and value == 0:
                        continue  # DEFAULT: the data is inside the tensor
                found += 1
                if wire == 0:
                    continue
            if wire == 0:
                _, pos = _varint(data, pos, end)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                size, pos = _varint(data, pos, end)
                if pos + size > end:
                    raise _Malformed
                if field in children:
                    if depth + 1 > MAX_DEPTH:
                        raise _Malformed
                    stack.append((children[field], pos, pos + size, depth + 1))
                pos += size
            else:  # groups (3, 4) and wire types 6, 7: no ONNX writer emits them
                raise _Malformed
        if pos != end:
            raise _Malformed
    return found


def check_self_contained(data: bytes) -> None:
    """Raise ModelRunError (external data refused / invalid model) unless every tensor's data is inside the model."""
    try:
        n = external_tensors(data)
    except _Malformed:
        raise ModelRunError(RunFailure.INVALID_MODEL) from None
    if n:
        raise ModelRunError(RunFailure.EXTERNAL_DATA)
