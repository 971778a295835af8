"""`index.parquet`: one row per stored sample, so a user can query a dataset without
opening a tar (which shard holds key X, how many test videos have label 7, ...)."""

from __future__ import annotations

import io
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep import storage

SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("split", pa.string()),
        ("shard", pa.string()),
        ("num_frames", pa.int64()),
        ("fps", pa.float64()),
        ("label", pa.int64()),
        ("class_name", pa.string()),
        ("caption", pa.string()),
        ("source_path", pa.string()),
    ]
)


def write_index(rows: Iterable[dict], path: storage.Location, schema: pa.Schema = SCHEMA) -> int:
    rows = sorted(rows, key=lambda r: (r["split"], r["shard"], r["key"]))
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    storage.write_bytes(path, buffer.getvalue())
    return table.num_rows


def read_index(path: storage.Location) -> pa.Table:
    filesystem, inner = storage.resolve(path)
    return pq.read_table(inner, filesystem=filesystem)
