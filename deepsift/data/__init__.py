"""deepsift.data: the D3 dataset as published (schema, reader, atomic writer), real-image fetching,
WebDataset export, splits and summaries. ``data build`` (new generators) lives in ``deepsift.generate``.

The names below load on first use (pyarrow is not imported until then), so the command line starts fast.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "D3Record": "schema", "Generation": "schema", "d3_arrow_schema": "schema", "record_to_row": "schema",
    "row_to_record": "schema", "read_d3": "reader", "ShardWriter": "writer", "write_shard": "writer",
    "write_table_atomic": "writer",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
