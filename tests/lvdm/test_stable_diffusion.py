"""SD initialisation (LVDM §5): a converted SD UNet / VAE computes SD's function on every frame.

The references are diffusers' own `UNet2DConditionModel` and `AutoencoderKL`, small and random.
"""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
import pytest
import torch
from safetensors.torch import save_file

from lvdm.frame_autoencoder import FrameAutoencoder
from lvdm.pretrained.stable_diffusion import (
    LDM_UNET_PREFIX,
    StableDiffusionWeightsError,
    diffusers_to_ldm,
    load_sd_unet,
    read_sd_unet,
)
from lvdm.unet import UNet3D

WIDTHS, CONTEXT = (16, 32), 24
T2V_UNET = dict(
    model_channels=16,
    channel_mult=(1, 2),
    num_res_blocks=2,
    attention_resolutions=(1,),
    num_heads=4,
    norm_groups=8,
    context_dim=CONTEXT,
    temporal_length=4,
    use_scale_shift_norm=False,
    temporal_transformer=True,
    frame_group_norm=True,
)


@pytest.fixture(scope="module")
def sd_unet() -> torch.nn.Module:
    """SD 1.x's block layout at tiny widths; weights random everywhere (no zero-initialised outputs)."""
    torch.manual_seed(0)
    model = diffusers.UNet2DConditionModel(
        sample_size=16,
        block_out_channels=WIDTHS,
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CONTEXT,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


def _per_frame_error(model: UNet3D, sd_unet: torch.nn.Module) -> float:
    torch.manual_seed(1)
    x, context, t = torch.randn(2, 4, 3, 16, 16), torch.randn(2, 7, CONTEXT), torch.tensor([10, 700])
    with torch.no_grad():
        out = model(x, t, context=context)
        return max(
            (out[:, :, f] - sd_unet(x[:, :, f], t, encoder_hidden_states=context).sample).abs().max().item()
            for f in range(x.shape[2])
        )


def test_converted_sd_unet_equals_sd_on_every_frame(sd_unet: torch.nn.Module) -> None:
    model = UNet3D(**T2V_UNET).eval()
    kept = load_sd_unet(model, diffusers_to_ldm(sd_unet.state_dict(), num_res_blocks=2))
    assert kept and all(".temporal1." in k or ".temporal2." in k for k in kept)
    assert _per_frame_error(model, sd_unet) <= 1e-5
    # The temporal layers are what keeps it SD: a moved output projection mixes frames.
    with torch.no_grad():
        model.input_blocks[1][1].blocks[0].temporal1.attention.to_out.weight.normal_(0, 0.5)
    assert _per_frame_error(model, sd_unet) > 1e-3


def test_ldm_names_are_what_diffusers_converts_back(sd_unet: torch.nn.Module) -> None:
    """diffusers' own single-file converter (LDM -> diffusers) inverts `diffusers_to_ldm` exactly."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    state = sd_unet.state_dict()
    ldm = {LDM_UNET_PREFIX + k: v for k, v in diffusers_to_ldm(state, 2).items()}
    back = convert_ldm_unet_checkpoint(ldm, dict(sd_unet.config))
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


def test_single_file_and_diffusers_folder_read_the_same(sd_unet: torch.nn.Module, tmp_path: Path) -> None:
    ldm = diffusers_to_ldm(sd_unet.state_dict(), 2)
    single = {LDM_UNET_PREFIX + k: v.contiguous() for k, v in ldm.items()}
    single["first_stage_model.decoder.conv_out.weight"] = torch.zeros(3)  # other SD parts are ignored
    save_file(single, tmp_path / "sd.safetensors")
    torch.save({"state_dict": single, "global_step": 1}, tmp_path / "sd.ckpt")
    sd_unet.save_pretrained(tmp_path / "sd" / "unet", safe_serialization=True)
    for path in (tmp_path / "sd.safetensors", tmp_path / "sd.ckpt", tmp_path / "sd"):
        read = read_sd_unet(path)
        assert read.keys() == ldm.keys() and all(torch.equal(read[k], ldm[k]) for k in ldm), path


def test_sd_weights_refuse_a_network_of_another_layout(sd_unet: torch.nn.Module, tmp_path: Path) -> None:
    lvdm_layout = UNet3D(**{**T2V_UNET, "use_scale_shift_norm": True})
    with pytest.raises(StableDiffusionWeightsError, match="emb_layers.1.weight: shape"):
        load_sd_unet(lvdm_layout, diffusers_to_ldm(sd_unet.state_dict(), 2))
    with pytest.raises(FileNotFoundError, match="do not exist.*unet/diffusion_pytorch_model.safetensors"):
        read_sd_unet(Path("/nonexistent-sd-folder"))
    with pytest.raises(FileNotFoundError, match="unet/diffusion_pytorch_model.safetensors"):
        read_sd_unet(tmp_path)


def test_frame_autoencoder_is_sds_vae_on_every_frame(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
    ).eval()
    vae.save_pretrained(tmp_path / "sd" / "vae", safe_serialization=True)
    frames = FrameAutoencoder.from_folder(tmp_path / "sd").eval()
    assert (frames.fs, frames.ft) == (2, 1)
    x = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        posterior = frames.encode(x)
        video = frames.decode(posterior.mean)
        for f in range(3):
            reference = vae.encode(x[:, :, f]).latent_dist
            assert (posterior.mean[:, :, f] - reference.mean).abs().max() <= 1e-5
            assert (posterior.logvar[:, :, f] - reference.logvar).abs().max() <= 1e-5
            assert (video[:, :, f] - vae.decode(reference.mean).sample).abs().max() <= 1e-5
    assert posterior.mean.shape == (2, *frames.latent_shape(3, 16, 16))
    with pytest.raises(FileNotFoundError, match="vae/config.json"):
        FrameAutoencoder.from_folder(tmp_path / "empty")
    assert json.loads((tmp_path / "sd" / "vae" / "config.json").read_text())["latent_channels"] == 4
