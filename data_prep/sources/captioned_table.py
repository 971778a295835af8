"""Any captioned video set as a table: `path, caption[, start, end]` in CSV, JSONL or Parquet.

WebVid is no longer distributed; the captioned sets users bring instead ship a table per
split (OpenVid-1M a CSV of `video, caption`, Panda-70M a table of clips with timestamps).
This source reads one table per split through pyarrow, chosen by suffix:
```
<root>/<table>          .csv | .jsonl | .parquet with columns path, caption[, start, end]
<root>/<path>           the video a row names, relative to root
```
`start` / `end` (seconds, both or neither; kept as meta `span_s`) cut a clip out of a longer
video: the clip is its own sample, keyed by video and span, and `load_frames` keeps only the
frames inside the span.
Bad rows are counted in `Discovery.skipped`, not raised: a row without a caption (the T2V
model has nothing to learn from it), a path leaving the root, a span that is not
`0 <= start < end`, a video that is not there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath

import pyarrow as pa

from data_prep import storage
from data_prep.sources.base import (
    DatasetLayoutError,
    Discovery,
    FolderIndex,
    Skipped,
    SourceVideo,
    check_splits,
    finish,
    layout_error,
    make_key,
    require_root,
)

NAME = "Captioned table"
FORMATS = (".csv", ".jsonl", ".parquet")
REQUIRED, SPAN = ("path", "caption"), ("start", "end")


def discover(root: storage.Location | None, splits: Sequence[str], tables: Mapping[str, str]) -> Discovery:
    """`tables` maps split -> table file name relative to `root`."""
    splits = check_splits(splits)
    missing = [s for s in splits if s not in tables]
    if missing:
        raise ValueError(f"{NAME}: data.captions_table has no entry for splits {missing}; got {dict(tables)}")
    root = require_root(NAME, root, "a folder holding the caption tables and the videos they name")
    downloaded = FolderIndex(root)
    videos: list[SourceVideo] = []
    skipped: list[Skipped] = []
    for split in splits:
        location = storage.join(root, tables[split])
        for line, row in enumerate(read_table(location), start=1):
            where = f"{location}:{line}"
            entry = _parse_row(row)
            if isinstance(entry, str):
                skipped.append(Skipped(where, entry))
                continue
            relative = PurePosixPath(entry["path"])
            folder, file_name = str(relative.parent), relative.name
            if not downloaded.has("" if folder == "." else folder, file_name):
                skipped.append(Skipped(storage.join(root, entry["path"]), f"row {where}: no such video"))
                continue
            name = str(relative.with_suffix(""))
            if "span_s" in entry:
                name += "@{}-{}".format(*entry["span_s"])
            location_of_video = storage.join(root, entry["path"])
            videos.append(SourceVideo(make_key(name), split, location_of_video, "file", entry))
    return finish(videos, skipped)


def read_table(location: storage.Location) -> list[dict]:
    """The rows of a CSV / JSONL / Parquet table as dicts; without path and caption, a layout error."""
    suffix = PurePosixPath(str(location)).suffix.lower()
    if suffix not in FORMATS:
        raise DatasetLayoutError(f"{location}: a caption table must end in one of {FORMATS}")
    if not storage.is_file(location):
        raise layout_error(NAME, location, f"a table ({'/'.join(FORMATS)}) of path, caption[, start, end]")
    data = pa.BufferReader(storage.read_bytes(location))
    try:
        if suffix == ".csv":
            from pyarrow import csv

            # path and caption as text: a caption of digits or a path like `001` stays as written.
            text = {column: pa.string() for column in REQUIRED}
            table = csv.read_csv(data, convert_options=csv.ConvertOptions(column_types=text))
        elif suffix == ".jsonl":
            from pyarrow import json

            table = json.read_json(data)
        else:
            from pyarrow import parquet

            table = parquet.read_table(data)
    except pa.ArrowInvalid as err:
        raise DatasetLayoutError(f"{location}: not a readable {suffix[1:]} table ({err})") from err
    absent = [c for c in REQUIRED if c not in table.column_names]
    if absent:
        raise DatasetLayoutError(
            f"{location}: columns {table.column_names} lack {absent}; a caption table has columns "
            "path, caption and optionally start, end (seconds)"
        )
    return table.select([c for c in (*REQUIRED, *SPAN) if c in table.column_names]).to_pylist()


def _parse_row(row: dict) -> dict | str:
    """The row as meta (`caption`, `path`[, `start`, `end`]), or the reason it is skipped."""
    caption = row.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        return "no caption"
    path = row.get("path")
    if not isinstance(path, str) or not path.strip():
        return "no path"
    relative = PurePosixPath(path.strip())
    if relative.is_absolute() or ".." in relative.parts or "://" in path:
        return f"path {path!r} leaves the dataset root"
    entry: dict = {"caption": caption.strip(), "path": str(relative), "video_id": relative.stem}
    start, end = row.get("start"), row.get("end")
    if start is None and end is None:
        return entry
    try:
        start, end = float(start), float(end)
    except (TypeError, ValueError):
        return f"start={start!r}, end={end!r}: give both as seconds, or neither"
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
        return f"start={start}, end={end}: need 0 <= start < end"
    # `span_s`, not start/end: Taichi's meta has frame-number start/end of its own.
    return entry | {"span_s": [start, end]}
