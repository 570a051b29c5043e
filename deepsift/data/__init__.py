"""deepsift.data: the D3 dataset as published (schema, reader, atomic writer), real-image fetching,
WebDataset export, splits and summaries. ``data build`` (new generators) lives in ``deepsift.generate``."""
from __future__ import annotations

from .reader import read_d3
from .schema import D3Record, Generation, d3_arrow_schema, record_to_row, row_to_record
from .writer import ShardWriter, write_shard, write_table_atomic

__all__ = [
    "D3Record",
    "Generation",
    "ShardWriter",
    "d3_arrow_schema",
    "read_d3",
    "record_to_row",
    "row_to_record",
    "write_shard",
    "write_table_atomic",
]
