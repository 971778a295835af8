"""Where a run's long videos lose their objects: at the start, or over the 1,024 frames (issue 21)?

The reference goal asks every 16-frame window to keep ≥ 90% of the objects its video's first
window has (`data_prep.synthetic_motion`: per frame, the share of the first window's colours
detected). A video that decays would score high early and fall window by window; a video whose
shapes change colour or blink from the start scores low from the first window on and then
stays there. This script tells the two apart from a finished `evaluate` stage, with no model:

    python benchmarks/bench_objects_kept.py --evaluate W/stages/evaluate-KEY [--videos 4 --frames 32]

For each job it prints objects found in windows 0–3, their mean over the later windows, and the
worst window, beside the real clips' figure; then, for the first `--videos` videos of
`--job`, the palette colours detected in each of the first `--frames` frames (one string per
frame, "-" for none; the source draws each colour at most once per video, so a colour is an
identity), which shows a shape that changes colour or blinks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from data_prep.decode import decode_video
from data_prep.synthetic_motion import detect_shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluate", required=True, type=Path, help="a finished evaluate stage's folder")
    parser.add_argument("--job", default="default/hierarchical", help="setting/strategy of the videos shown")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=32)
    args = parser.parse_args()

    metrics = json.loads((args.evaluate / "metrics.json").read_text())
    real = metrics["real_synthetic"]["means"]["objects_found"]
    print(f"real clips: objects found {real:.3f} per frame")
    print(f"{'job':32} {'w0':>5} {'w1':>5} {'w2':>5} {'w3':>5} {'w4..':>6} {'worst':>6} at")
    for job, figures in metrics["jobs"].items():
        found = [w["objects_found"] for w in figures["synthetic"]["windows"]]
        known = [f for f in found if f is not None]
        if len(found) < 5 or not known:
            continue
        later = [f for f in found[4:] if f is not None]
        worst = min(known)
        print(
            f"{job:32} " + " ".join(f"{f:5.2f}" if f is not None else "    -" for f in found[:4]),
            f"{np.mean(later):6.2f} {worst:6.2f} window {found.index(worst)}",
        )

    sample = _sample_stage(args.evaluate)
    files = sorted((sample / "videos" / args.job).glob("*.mp4"))[: args.videos]
    if not files:
        raise SystemExit(f"no videos under {sample / 'videos' / args.job}: check --job (setting/strategy)")
    print(f"\npalette colours detected per frame, first {args.frames} frames of {args.job}:")
    for path in files:
        frames = decode_video(path.read_bytes(), list(range(args.frames))).frames
        colours = [sorted(d.colour_index for d in detect_shapes(frame)) for frame in frames]
        print(f"  {path.name}: " + " ".join("".join(map(str, c)) or "-" for c in colours))


def _sample_stage(evaluate: Path) -> Path:
    """The sample stage this evaluate stage scored (its manifest's input key)."""
    manifest = json.loads((evaluate / "manifest.json").read_text())
    found = evaluate.parent / f"sample-{manifest['inputs']['sample']}"
    if not found.is_dir():
        raise SystemExit(f"{found} (the sample stage {evaluate} scored) is not there")
    return found


if __name__ == "__main__":
    main()
