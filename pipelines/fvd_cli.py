"""`lvdm fvd REAL FAKE`: FVD and KVD between two folders of videos or two shard sets.

The numbers are the evaluate stage's: the same clips rule (`data_prep.video_folder.FirstClips`,
the first `--frames` frames of each video), the same I3D features and distances
(`lvdm.metrics.fvd`). Heavy imports happen in `main`, so `lvdm --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "fvd",
        help="FVD and KVD between two folders of videos or two shard sets",
        description=(
            "FVD/KVD on I3D Kinetics-400 logits averaged over time (StyleGAN-V / TATS convention), "
            "frames resized bilinearly to 224x224, one clip (the first FRAMES frames) per video."
        ),
    )
    parser.add_argument("real", help="folder of videos, folder of shard .tar files, or a glob of .tar files")
    parser.add_argument("fake", help="same kinds as REAL")
    parser.add_argument("--clips", type=int, help="use at most N clips per side (default: every video)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default 16; I3D needs >= 9)")
    parser.add_argument(
        "--json", type=Path, dest="json_out", metavar="OUT", help="also write the result here"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="clips per I3D forward (default 8)")
    parser.add_argument(
        "--i3d",
        type=Path,
        help="I3D weights: a .safetensors file, or a TorchScript i3d_torchscript.pt (it is code: loaded "
        "only with --i3d-sha256 or --trust-i3d); default: the weights cache of `lvdm weights fetch`",
    )
    parser.add_argument(
        "--i3d-sha256", metavar="HEX", help="the sha256 the TorchScript --i3d file must have to be loaded"
    )
    parser.add_argument(
        "--trust-i3d", action="store_true", help="load a TorchScript --i3d file whatever its sha256"
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.set_defaults(handler=main)
    return parser


def main(args: argparse.Namespace) -> int:
    import torch

    from data_prep.video_folder import FirstClips
    from lvdm.metrics.fvd import FEATURES, FeatureSet, NoClipsError, fvd_kvd, i3d_features, load_fvd_model
    from lvdm.metrics.i3d import FRAME_SIZE, MIN_FRAMES

    for name in ("clips", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            print(
                f"error: --{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}", file=sys.stderr
            )
            return 2
    if args.frames < MIN_FRAMES:
        print(
            f"error: --frames must be >= {MIN_FRAMES} (I3D's temporal pooling); got {args.frames}",
            file=sys.stderr,
        )
        return 2
    # Each skipped video is listed once below (and in --json); not also by the reader's logger.
    logging.getLogger("data_prep.video_folder").setLevel(logging.ERROR)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        sources = {
            side: FirstClips(getattr(args, side), args.frames, args.clips) for side in ("real", "fake")
        }
        model = load_fvd_model(args.i3d, sha256=args.i3d_sha256, trust=args.trust_i3d).to(device)
    except ValueError as err:  # mixed videos and shards; --i3d not an I3D file
        print(f"error: {err}", file=sys.stderr)
        return 2

    sets: dict[str, FeatureSet] = {}
    notes: list[str] = []
    for side, clips in sources.items():
        with torch.inference_mode():
            try:
                features = i3d_features(
                    model,
                    clips,
                    batch_size=args.batch_size,
                    progress=True,
                    total=clips.total,
                    desc=f"I3D {side}",
                )
            except NoClipsError:
                _print_skipped(side, clips.skipped)
                print(f"error: no usable {args.frames}-frame clip in {side} {clips.source}", file=sys.stderr)
                return 1
        _print_skipped(side, clips.skipped)
        if features.shape[0] < 2:
            print(
                f"error: {side} {clips.source} gave {features.shape[0]} clip; FVD needs >= 2", file=sys.stderr
            )
            return 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sets[side] = FeatureSet.of(features)
        for warning in caught:  # e.g. fewer clips than dimensions: say it plainly, once per side
            notes.append(f"{side}: {warning.message}")
            print(f"warning: {notes[-1]}", file=sys.stderr)

    result = {
        **fvd_kvd(sets["real"], sets["fake"]),
        "clips_real": sets["real"].count,
        "clips_fake": sets["fake"].count,
        "frames": args.frames,
        "features": FEATURES,
        "resize": f"bilinear {FRAME_SIZE}x{FRAME_SIZE}, values in [-1, 1]",
        "i3d": str(args.i3d) if args.i3d else "weights cache (Kinetics-400, DeepMind release)",
        "real": sources["real"].source,
        "fake": sources["fake"].source,
        "skipped_real": sources["real"].skipped,
        "skipped_fake": sources["fake"].skipped,
        "warnings": notes,
    }
    print(
        f"FVD{args.frames} {result['fvd']:.2f}  KVD{args.frames} {result['kvd']:.4f}  "
        f"({result['clips_real']} real vs {result['clips_fake']} fake clips; features: {FEATURES})"
    )
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    return 0


def _print_skipped(side: str, skipped: dict[str, str]) -> None:
    for name, reason in skipped.items():
        print(f"skipped ({side}) {name}: {reason}", file=sys.stderr)
    if skipped:
        print(f"{side}: {len(skipped)} video(s) skipped", file=sys.stderr)
