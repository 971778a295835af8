"""UCF-101 (Soomro et al. 2012) read through its official train/test splits.

Release layout, as unpacked from `UCF101.rar` and `UCF101TrainTestSplits-RecognitionTask.zip`:
```
<root>/UCF-101/<Class>/v_<Class>_gNN_cNN.avi
<root>/ucfTrainTestlist/classInd.txt        "1 ApplyEyeMakeup"
<root>/ucfTrainTestlist/trainlist0{1,2,3}.txt  "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
<root>/ucfTrainTestlist/testlist0{1,2,3}.txt   "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
```
The list files have CRLF line endings, labels in trainlists are 1-based, and testlists have
no label at all, so every label here comes from classInd by the class folder (stored
0-based), which keeps train and test labels consistent by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    read_text,
    require_root,
)

NAME = "UCF-101"
VIDEO_DIR = "UCF-101"
SPLIT_DIR = "ucfTrainTestlist"
_LIST_PREFIX = {"train": "trainlist", "test": "testlist"}


def discover(root: storage.Location | None, splits: Sequence[str], split_number: int = 1) -> Discovery:
    """List the videos of official split `split_number` (1, 2 or 3)."""
    splits = check_splits(splits)
    if split_number not in (1, 2, 3):
        raise ValueError(f"UCF-101 split_number must be 1, 2 or 3; got {split_number!r}")
    root = require_root(NAME, root, f"a folder holding {VIDEO_DIR}/ and {SPLIT_DIR}/")
    video_dir, split_dir = storage.join(root, VIDEO_DIR), storage.join(root, SPLIT_DIR)
    if not storage.is_dir(video_dir):
        raise layout_error(NAME, video_dir, "the class folders <Class>/v_<Class>_gNN_cNN.avi")
    classes = read_class_index(storage.join(split_dir, "classInd.txt"))
    list_files = {s: storage.join(split_dir, f"{_LIST_PREFIX[s]}{split_number:02d}.txt") for s in splits}
    for list_file in list_files.values():  # all checked before any listing starts
        if not storage.is_file(list_file):
            raise layout_error(NAME, list_file, "the official split file from UCF101TrainTestSplits")

    present = FolderIndex(video_dir)  # one listing per class folder, not a stat per line
    videos: list[SourceVideo] = []
    skipped: list[Skipped] = []
    for split, list_file in list_files.items():
        for line_no, line in enumerate(read_text(list_file).splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{list_file}:{line_no}"
            entry = _parse_line(line, classes)
            if isinstance(entry, str):
                skipped.append(Skipped(where, f"malformed split-file line {line.strip()!r}: {entry}"))
                continue
            rel_path, label, class_name = entry
            folder, _, file_name = rel_path.partition("/")
            path = storage.join(video_dir, rel_path)
            if not present.has(folder, file_name):
                skipped.append(Skipped(path, f"listed in {where} but the video file is missing"))
                continue
            stem = PurePosixPath(file_name).stem
            meta = {"label": label, "class_name": class_name, "video_id": stem}
            videos.append(SourceVideo(make_key(stem), split, path, "file", meta))
    return finish(videos, skipped)


def read_class_index(path: storage.Location) -> dict[str, int]:
    """classInd.txt as `{class_name: 0-based label}`; a malformed file is a layout error."""
    if not storage.is_file(path):
        raise layout_error(NAME, path, 'classInd.txt with lines like "1 ApplyEyeMakeup"')
    classes: dict[str, int] = {}
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise DatasetLayoutError(
                f'{path}:{line_no}: expected "<index> <ClassName>", got {line!r}; '
                "restore classInd.txt from UCF101TrainTestSplits-RecognitionTask.zip"
            )
        classes[parts[1]] = int(parts[0]) - 1
    if not classes:
        raise DatasetLayoutError(f"{path}: no classes; restore it from UCF101TrainTestSplits")
    return classes


def _parse_line(line: str, classes: dict[str, int]) -> tuple[str, int, str] | str:
    """`(relative path, 0-based label, class name)`, or the reason the line is unusable."""
    parts = line.split()
    if len(parts) not in (1, 2):
        return "expected '<Class>/<video>.avi [label]'"
    rel_path = parts[0].replace("\\", "/")
    folder, _, file_name = rel_path.partition("/")
    if not file_name or "/" in file_name or not file_name.lower().endswith(".avi"):
        return "expected '<Class>/<video>.avi'"
    class_name = folder if folder in classes else _match_case(folder, classes)
    if class_name is None:
        return f"class folder {folder!r} is not in classInd.txt"
    label = classes[class_name]
    if len(parts) == 2:
        if not parts[1].isdigit():
            return f"label {parts[1]!r} is not an integer"
        if int(parts[1]) - 1 != label:
            return f"label {parts[1]} disagrees with classInd.txt ({class_name} is {label + 1})"
    return rel_path, label, class_name


def _match_case(folder: str, classes: dict[str, int]) -> str | None:
    # The release spells one class two ways (`HandstandPushups` folder and classInd entry,
    # `v_HandStandPushups_*` files); match folders case-insensitively so such drift in
    # hand-edited lists does not drop a class.
    folded = {name.lower(): name for name in classes}
    return folded.get(folder.lower())
