"""A text-to-video model as files in a models folder: what `lvdm weights import --kind t2v` writes and
`lvdm sample --models DIR --prompt "..."` reads.

    DIR/t2v/unet.pt         the UNet3D's kwargs and weights (`stages.unet_file`'s format)
    DIR/t2v/vae/            SD's 2D autoencoder as diffusers saves it (config.json,
                            diffusion_pytorch_model.safetensors): `lvdm.frame_autoencoder` opens it
    DIR/t2v/text_encoder/   the CLIP text encoder and its tokenizer as transformers saves them:
                            `lvdm.text_encoder` opens it
    DIR/t2v/model.json      what a `train_t2v` manifest says of its model (the files above, latent
                            scale/shift, clip window, guidance scale) plus the noise schedule

Each file is written whole (a temporary name, then a rename; an object store's upload likewise)
and `model.json` last, after removing an old one first: a folder is complete when it has one, and
an interrupted import never leaves a `model.json` beside half-replaced weights. Sampling goes
through `stages.t2v_model.TextVideoModel`, the same object `sample_t2v` and `lvdm sample --prompt`
use for a trained run, so an imported model samples exactly as a trained one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from data_prep import storage

if TYPE_CHECKING:
    from lvdm.pretrained.release_t2v import ImportedT2V

FOLDER, MODEL_FILE, UNET_FILE, VAE_FOLDER, TEXT_FOLDER = "t2v", "model.json", "unet.pt", "vae", "text_encoder"
RELEASE_GUIDANCE_SCALE = 15.0  # scripts/sample_text2video.py --cfg_scale default, as the release samples


def model_file(models: storage.Location) -> str:
    """`DIR/t2v/model.json` of a models folder."""
    return storage.join(storage.absolute(models), FOLDER, MODEL_FILE)


def write_t2v_models(models: storage.Location, imported: ImportedT2V) -> str:
    """Write `imported` under `models/t2v/` (layout above); returns the `model.json` written last."""
    from safetensors.torch import save_file

    from stages.unet_file import save_unet

    folder = storage.join(storage.absolute(models), FOLDER)
    marker = storage.join(folder, MODEL_FILE)
    storage.delete(marker)  # from here until the end the folder reads as incomplete
    save_unet(
        storage.join(folder, UNET_FILE), imported.unet_kwargs, imported.unet.state_dict(), imported.step
    )
    with tempfile.TemporaryDirectory(prefix="lvdm-t2v-import-") as scratch:
        local = Path(scratch)
        _write_vae(local / VAE_FOLDER, imported, save_file)
        _write_text_encoder(local / TEXT_FOLDER, imported, save_file)
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            storage.upload(path, storage.join(folder, path.relative_to(local).as_posix()))
    c, t, h, w = imported.latent_shape
    storage.write_json(
        marker,
        {
            "source": "LVDM release text-to-video checkpoint (YingqingHe/LVDM d251dcc, text2video.yaml)",
            "unet": UNET_FILE,
            "decoder": {"kind": "sd_vae", "path": VAE_FOLDER},
            "text_encoder": TEXT_FOLDER,
            "latent_shape": [c, t, h, w],
            "fs": 2 ** (len(imported.vae_config["block_out_channels"]) - 1),
            "scale": imported.scale,
            "shift": 0.0,
            "guidance_scale": RELEASE_GUIDANCE_SCALE,
            "schedule": imported.schedule,
            "step": imported.step,
            "ema": imported.ema,
        },
    )
    return marker


def _write_vae(folder: Path, imported: ImportedT2V, save_file) -> None:
    import torch
    from diffusers import AutoencoderKL

    with torch.device("meta"):  # only for its config.json, as diffusers writes it
        AutoencoderKL(**imported.vae_config).save_config(folder)
    save_file(
        _contiguous(imported.vae_state),
        folder / "diffusion_pytorch_model.safetensors",
        metadata={"format": "pt"},
    )


def _write_text_encoder(folder: Path, imported: ImportedT2V, save_file) -> None:
    from transformers import CLIPTextConfig, CLIPTokenizer

    from lvdm.random_clip import write_clip_tokenizer
    from lvdm.text_encoder import MAX_TOKENS

    CLIPTextConfig(**imported.text_config).save_pretrained(folder)
    save_file(_contiguous(imported.text_state), folder / "model.safetensors", metadata={"format": "pt"})
    write_clip_tokenizer(folder)  # CLIP's real BPE vocabulary: the files openai/clip-vit-large-patch14 ships
    tokenizer = CLIPTokenizer(
        vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=MAX_TOKENS
    )
    tokenizer.save_pretrained(folder)


def _contiguous(state: dict) -> dict:
    return {k: v.detach().contiguous() for k, v in state.items()}


def sample_t2v_from_models(args: argparse.Namespace) -> int:
    """`lvdm sample --models DIR --prompt "..."`: one clip of the prompt from `DIR/t2v/` (mp4 + JSON)."""
    import dataclasses

    import torch

    from lvdm.diffusion.schedule import NoiseSchedule
    from lvdm.long_video import latent_count, to_uint8_frames
    from pipelines.config import SampleSection, SamplingSection
    from pipelines.t2v_sample_cli import write_prompted_video
    from stages.t2v_model import TextVideoModel

    marker = model_file(args.models)
    if not storage.is_file(marker):
        raise SystemExit(
            f"{marker} does not exist: import a text-to-video model first, "
            f"`lvdm weights import t2v.ckpt --kind t2v --out {args.models}`"
        )
    if not args.prompt:
        raise SystemExit(f'{storage.parent(marker)} is a text-to-video model: give --prompt "..."')
    if args.frames is not None and args.frames < 1:
        raise SystemExit(f"--frames {args.frames}: give the number of video frames, at least 1")
    about = json.loads(storage.read_bytes(marker))
    if args.resolution % about["fs"]:
        raise SystemExit(f"--resolution {args.resolution} must divide by the autoencoder's fs={about['fs']}")
    folder = storage.parent(marker)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    manifest = {
        "out_dir": folder,
        "outputs": {
            **about,
            "text_encoder": storage.join(folder, about["text_encoder"]),
            "decoder": {**about["decoder"], "path": storage.join(folder, about["decoder"]["path"])},
        },
    }
    model = TextVideoModel.load(manifest, device)
    c, t, _, _ = model.latent_shape
    side = args.resolution // about["fs"]
    model = dataclasses.replace(model, latent_shape=(c, t, side, side))
    scale = model.guidance_scale if args.guidance_scale is None else args.guidance_scale
    frames = model.window_frames if args.frames is None else args.frames
    if not model.continues and frames > model.window_frames:
        # The release's network has no mask channel: more frames would be one stretched window
        # its temporal attention never saw, not a longer video.
        raise SystemExit(
            f"--frames {frames}: the text-to-video model in {folder} samples one window of "
            f"{model.window_frames} frames and cannot continue it; ask for at most {model.window_frames}"
        )
    sampling = SamplingSection().model_dump() | {"steps": args.steps or SamplingSection().steps}
    video = model.sample(
        [args.prompt],
        NoiseSchedule.linear(**about["schedule"]),
        sampling,
        generator=torch.Generator(device).manual_seed(args.seed),
        guidance_scale=scale,
        frames=frames,
    )
    pixels = to_uint8_frames(video)[0].numpy()
    out = args.out or storage.join(storage.parent(folder), "samples", f"t2v-seed{args.seed}.mp4")
    record = {
        "prompt": args.prompt,
        "guidance_scale": scale,
        "frames": len(pixels),
        "latent_frames": latent_count(frames, model.ft),
        "seed": args.seed,
        "steps": sampling["steps"],
        "models": str(args.models),
    }
    write_prompted_video(out, pixels, SampleSection().fps, record)
    print(f"wrote {out} ({len(pixels)} frames, guidance {scale}, models {folder}): {args.prompt!r}")
    return 0
