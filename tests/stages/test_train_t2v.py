"""shard -> cache_t2v_latents -> train_t2v on a captioned table, with a tiny random SD folder saved
in the real diffusers layout (unet/, vae/, text_encoder/, tokenizer/ with CLIP's vocabulary)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.encode import encode_mp4
from pipelines.config import validate
from pipelines.runner import run_pipeline
from stages.unet_file import load_unet
from tests.fixtures.clip_folder import write_tiny_clip

WIDTH = 32  # the tiny CLIP's width = the UNet's context_dim


def _sd_folder(root: Path) -> Path:
    import diffusers

    torch.manual_seed(0)
    diffusers.UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=WIDTH,
        attention_head_dim=2,
        norm_num_groups=8,
    ).save_pretrained(root / "unet", safe_serialization=True)
    diffusers.AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
    ).save_pretrained(root / "vae", safe_serialization=True)
    clip = write_tiny_clip(root / "clip", width=WIDTH)
    (root / "text_encoder").mkdir()
    (root / "tokenizer").mkdir()
    for item in clip.iterdir():
        target = root / ("text_encoder" if item.name in ("config.json", "model.safetensors") else "tokenizer")
        item.rename(target / item.name)
    return root


def _videos(root: Path) -> Path:
    """Three captioned training videos, one more without a caption, one held-out video."""
    (root / "clips").mkdir(parents=True)
    colours = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 255, 0), "white": (255, 255, 255)}
    for i, colour in enumerate(colours.values()):
        frames = np.zeros((6, 16, 16, 3), np.uint8)
        for t in range(6):
            frames[t, 4:10, t : t + 6] = colour
        (root / "clips" / f"v{i}.mp4").write_bytes(encode_mp4(frames, fps=8))
    rows = [
        {"path": f"clips/v{i}.mp4", "caption": f"a {word} square moving right"}
        for i, word in enumerate(colours)
    ]
    splits = {"train": rows[:3] + [{"path": "clips/v3.mp4", "caption": ""}], "test": rows[3:]}
    for split, split_rows in splits.items():
        with open(root / f"{split}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["path", "caption"])
            writer.writeheader()
            writer.writerows(split_rows)
    return root


@pytest.mark.slow
def test_t2v_stages_train_an_sd_initialised_text_conditioned_unet(ray_cluster, tmp_path: Path) -> None:
    sd, data = _sd_folder(tmp_path / "sd"), _videos(tmp_path / "data")
    train = {
        "steps": 2,
        "batch_size": 2,
        "checkpoint_every": 2,
        "preview_every": 2,
        "log_every": 1,
        "loader_workers": 0,
        "heldout_clips": 2,
        "precision": "fp32",
    }
    raw = {
        "name": "t2v",
        "stages": ["shard", "cache_t2v_latents", "train_t2v"],
        "data": {
            "dataset": "captioned_table",
            "root": str(data),
            "resolution": 16,
            "frames": 4,
            "captions_table": {"train": "train.csv", "test": "test.csv"},
        },
        "diffusion": {
            "unet": {
                "model_channels": 16,
                "channel_mult": [1, 2],
                "num_res_blocks": 1,
                "attention_resolutions": [1],
                "num_heads": 2,
                "norm_groups": 8,
                "context_dim": WIDTH,
                "temporal_length": 4,
                "use_scale_shift_norm": False,
                "temporal_transformer": True,
                "frame_group_norm": True,
            },
            "schedule": {"timesteps": 100, "linear_start": 0.00085, "linear_end": 0.012},
            "loss_type": "l2",
        },
        "t2v": {"stable_diffusion": str(sd), "frames": 4, "train": train},
        "sampling": {"sampler": "ddim", "steps": 2, "eta": 1.0},
        "ray": {"num_cpus": 2},
    }
    record = run_pipeline(validate(raw, "test"), tmp_path / "work", "t2v", echo=lambda *_: None)
    assert [s.status for s in record.stages.values()] == ["done"] * 3

    cache = json.loads((Path(record.stages["cache_t2v_latents"].output) / "manifest.json").read_text())[
        "outputs"
    ]
    assert cache["counts"]["latents"] == 4 and cache["scale"] == 0.18215  # 3 train + 1 test video
    shard = json.loads((Path(record.stages["shard"].output) / "manifest.json").read_text())["outputs"]
    assert "no caption" in json.dumps(shard)

    outputs = json.loads((Path(record.stages["train_t2v"].output) / "manifest.json").read_text())["outputs"]
    assert outputs["steps"] == 2 and outputs["initialised_from"] == str(sd)
    model, meta = load_unet(Path(record.stages["train_t2v"].output) / "unet.pt")
    assert meta["step"] == 2 and model.config.temporal_transformer
    with torch.no_grad():
        out = model(torch.randn(1, 4, 3, 8, 8), torch.tensor([10]), context=torch.randn(1, 77, WIDTH))
    assert out.shape == (1, 4, 3, 8, 8) and torch.isfinite(out).all()


def test_latent_channels_other_than_the_unets_fail_at_the_start_naming_both_fields(tmp_path: Path) -> None:
    """3-channel latents against the demo's 4-channel UNet: one error before any training,
    naming the cache, both config fields and the fix (not a shape error inside the network)."""
    from data_prep.shard_writer import write_shard
    from pipelines.config import load_pipeline
    from stages.contract import StageContext
    from stages.train_t2v import run
    from tests.conftest import PIPELINES

    latents = np.zeros((3, 4, 4, 4), np.float16)  # c l h w
    meta = {"caption": "a red circle moving left", "latent_frames": 4}
    write_shard(tmp_path / "cache" / "train-000000.tar", [{"__key__": "v0", "npy": latents, "json": meta}])
    cache = {
        "out_dir": str(tmp_path / "cache"),
        "outputs": {"shards": {"train": ["train-000000.tar"]}, "scale": 1.0, "shift": 0.0, "autoencoder": ""},
    }
    config = load_pipeline(PIPELINES / "bouncing_shapes_t2v.yaml")
    context = StageContext(
        name="train_t2v",
        key="k",
        config=config,
        out_dir=str(tmp_path / "out"),
        inputs={"cache_latents": cache},
        tracking=None,
        run_name="train_t2v-k",
    )
    with pytest.raises(ValueError) as error:
        run(context)
    assert str(error.value) == (
        f"train_t2v: the latents of cache_latents in {tmp_path / 'cache'} have 3 channels "
        "(autoencoder.model.latent_channels) but diffusion.unet.in_channels=4, "
        "diffusion.unet.out_channels=4; set diffusion.unet.in_channels and diffusion.unet.out_channels to 3"
    )
    assert not (tmp_path / "out").exists(), "nothing is built before the check"
