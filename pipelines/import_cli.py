"""`lvdm weights import`: a released LVDM checkpoint as this pipeline's own model file.

The release's `.ckpt` is read without running its pickle (`lvdm.pretrained.lightning_checkpoint`),
its tensors renamed to ours (`lvdm.pretrained.release_import`), and the result written in the
format the stages write, so `lvdm sample --models DIR` and the stages load it like a trained one:

    DIR/autoencoder.pt        --kind autoencoder  (with the latent scale/shift)
    DIR/unet.pt               --kind unet         (unconditional short-video network)
    DIR/pred/unet.pt          --kind pred         (prediction network, long videos)
    DIR/interp/unet.pt        --kind interp       (interpolation network, long videos)
    DIR/t2v/model.json        --kind t2v          (text-to-video, with unet.pt, vae/, text_encoder/
                                                   beside it: `pipelines.t2v_models`; sampled by
                                                   `lvdm sample --models DIR --prompt "..."`)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep import storage

KIND_FILES = {
    "autoencoder": "autoencoder.pt",
    "unet": "unet.pt",
    "pred": "pred/unet.pt",
    "interp": "interp/unet.pt",
    "t2v": "t2v/model.json",
}


def add_parser(weights_sub: argparse._SubParsersAction) -> None:
    from lvdm.pretrained.release_import import KNOWN_RELEASES

    imp = weights_sub.add_parser(
        "import", help="a released LVDM checkpoint (.ckpt) as this pipeline's model file (no code is run)"
    )
    imp.add_argument("checkpoint", type=Path, help="the release's Lightning .ckpt")
    imp.add_argument("--kind", required=True, choices=tuple(KIND_FILES), help="which network to take from it")
    imp.add_argument("--out", required=True, help="models folder (see `lvdm sample --models`)")
    imp.add_argument(
        "--config",
        type=Path,
        help="the release config it was trained with (e.g. configs/lvdm_short/sky.yaml, "
        "configs/lvdm_short/text2video.yaml)",
    )
    imp.add_argument(
        "--release",
        choices=sorted(KNOWN_RELEASES),
        help="a released model's built-in config (structure, latent scale/shift) instead of --config",
    )
    imp.add_argument("--no-ema", dest="ema", action="store_false", help="the raw weights, not the EMA copy")
    imp.add_argument(
        "--scale",
        type=float,
        help="latent scale (autoencoder: default from --config/--release; t2v: --config's, else 0.18215)",
    )
    imp.add_argument(
        "--shift", type=float, help="latent shift (autoencoder; default from --config/--release; t2v: 0)"
    )
    imp.set_defaults(handler=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    import yaml

    from lvdm.pretrained.release_import import ReleaseImportError, import_release_checkpoint
    from lvdm.pretrained.safe_unpickle import UnsafePickleError

    config = None
    if args.config is not None:
        if not args.config.is_file():
            raise FileNotFoundError(f"--config {args.config} does not exist")
        config = yaml.safe_load(args.config.read_text())
    if args.kind == "t2v":
        return import_t2v(args, config)
    try:
        imported = import_release_checkpoint(
            str(args.checkpoint), args.kind, ema=args.ema, config=config, release=args.release
        )
    except (ReleaseImportError, UnsafePickleError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = storage.join(storage.absolute(args.out), KIND_FILES[args.kind])
    if args.kind == "autoencoder":
        scale = args.scale if args.scale is not None else imported.scale
        shift = args.shift if args.shift is not None else imported.shift
        if scale is None or shift is None:
            print(
                "error: the autoencoder file needs the latent scale and shift the diffusion model was "
                "trained with: pass --release sky|ucf|taichi, a diffusion --config, or --scale and --shift",
                file=sys.stderr,
            )
            return 1
        from stages.autoencoder_file import save_autoencoder

        save_autoencoder(out, imported.model, scale, shift, imported.step)
    else:
        from stages.unet_file import save_unet

        save_unet(out, imported.kwargs, imported.model.state_dict(), imported.step)
    print(f"{args.checkpoint}: {imported.report.summary()}")
    if imported.inert_globals:
        print(f"left inert (never run): {', '.join(sorted(imported.inert_globals))}")
    print(f"wrote {out}")
    return 0


def import_t2v(args: argparse.Namespace, config: dict | None) -> int:
    """`--kind t2v`: the release's text-to-video checkpoint as `DIR/t2v/` (UNet, SD's VAE, CLIP)."""
    from lvdm.pretrained.release_import import ReleaseImportError
    from lvdm.pretrained.release_t2v import import_release_t2v
    from lvdm.pretrained.safe_unpickle import UnsafePickleError
    from pipelines.t2v_models import write_t2v_models

    if args.release is not None:
        print(
            "error: --release names an unconditional / long-video network; the text-to-video structure "
            "comes from the tensors or --config configs/lvdm_short/text2video.yaml",
            file=sys.stderr,
        )
        return 1
    if args.shift not in (None, 0.0):
        print(
            "error: SD's latents have no shift (the release's T2V divides by scale_factor only)",
            file=sys.stderr,
        )
        return 1
    try:
        imported = import_release_t2v(str(args.checkpoint), ema=args.ema, config=config)
    except (ReleaseImportError, UnsafePickleError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.scale is not None:
        imported.scale = args.scale
    out = write_t2v_models(args.out, imported)
    print(f"{args.checkpoint}:\n{imported.summary()}")
    if imported.inert_globals:
        print(f"left inert (never run): {', '.join(sorted(imported.inert_globals))}")
    print(f"wrote {out} (with unet.pt, vae/, text_encoder/ beside it)")
    return 0
