"""WebVid (Bain et al. 2021, Frozen in Time): metadata CSVs plus the videos you downloaded.

```
<root>/results_2M_train.csv     videoid,contentUrl,duration,page_dir,name
<root>/results_2M_val.csv
<root>/videos/<page_dir>/<videoid>.mp4
```
WebVid is distributed as URLs only, so a CSV row without a downloaded video is the normal
case, not an error: it is counted and skipped. Captions (`name`) are quoted and contain
commas, quotes and sometimes newlines, hence `csv` rather than line splitting.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from pathlib import PurePosixPath

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
    open_text,
    require_root,
)

NAME = "WebVid"
VIDEO_DIR = "videos"
DEFAULT_CSV_FILES = {"train": "results_2M_train.csv", "test": "results_2M_val.csv"}
COLUMNS = ("videoid", "contentUrl", "duration", "page_dir", "name")


def discover(
    root: storage.Location | None, splits: Sequence[str], csv_files: Mapping[str, str] | None = None
) -> Discovery:
    """`csv_files` maps split -> CSV file name relative to `root`."""
    splits = check_splits(splits)
    csv_files = dict(DEFAULT_CSV_FILES if csv_files is None else csv_files)
    missing = [s for s in splits if s not in csv_files]
    if missing:
        raise ValueError(f"WebVid csv_files has no entry for splits {missing}; got {csv_files}")
    root = require_root(NAME, root, f"a folder holding the metadata CSVs and {VIDEO_DIR}/")
    csv_paths = {s: storage.join(root, csv_files[s]) for s in splits}
    for csv_path in csv_paths.values():
        if not storage.is_file(csv_path):
            raise layout_error(NAME, csv_path, f"the WebVid metadata CSV (header {','.join(COLUMNS)})")

    # The CSVs hold 2.5M (10M) rows: one listing per page_dir, not a stat per row.
    downloaded = FolderIndex(storage.join(root, VIDEO_DIR))
    videos: list[SourceVideo] = []
    skipped: list[Skipped] = []
    for split, csv_path in csv_paths.items():
        with open_text(csv_path) as handle:
            reader = csv.reader(handle)
            columns = _read_header(reader, csv_path)
            for row in reader:
                where = f"{csv_path}:{reader.line_num}"
                if not any(cell.strip() for cell in row):
                    continue
                entry = _parse_row(row, columns)
                if isinstance(entry, str):
                    skipped.append(Skipped(where, f"malformed CSV row: {entry}"))
                    continue
                file_name = f"{entry['video_id']}.mp4"
                path = storage.join(root, VIDEO_DIR, entry["page_dir"], file_name)
                if not downloaded.has(entry["page_dir"], file_name):
                    skipped.append(Skipped(path, f"row {where} has no downloaded video"))
                    continue
                videos.append(SourceVideo(make_key(entry["video_id"]), split, path, "file", entry))
    return finish(videos, skipped)


def _read_header(reader: Iterator[list[str]], csv_path: str) -> dict[str, int]:
    header = next(reader, None) or []
    columns = {name.strip(): i for i, name in enumerate(header)}
    absent = [c for c in COLUMNS if c not in columns]
    if absent:
        raise DatasetLayoutError(
            f"{csv_path}: header {header} lacks columns {absent}; expected the WebVid metadata header "
            f"{','.join(COLUMNS)}"
        )
    return columns


def _parse_row(row: list[str], columns: dict[str, int]) -> dict | str:
    """The row as meta (`caption` = `name`), or the reason it is unusable."""
    if len(row) != len(columns):
        return f"{len(row)} fields where the header has {len(columns)}"
    videoid = row[columns["videoid"]].strip()
    page_dir = row[columns["page_dir"]].strip()
    if not videoid or "/" in videoid or videoid in (".", ".."):
        return f"bad videoid {videoid!r}"
    if not page_dir or PurePosixPath(page_dir).is_absolute() or ".." in PurePosixPath(page_dir).parts:
        return f"bad page_dir {page_dir!r}"
    return {
        "video_id": videoid,
        "caption": row[columns["name"]],
        "duration": row[columns["duration"]].strip(),
        "page_dir": page_dir,
        "url": row[columns["contentUrl"]].strip(),
    }
