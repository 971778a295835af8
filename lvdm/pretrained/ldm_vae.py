"""Stable Diffusion's 2D KL autoencoder from the original single-file (LDM / CompVis) layout, for diffusers.

SD 1.x checkpoints, and the LVDM release's text-to-video checkpoint under `first_stage_model.`,
store the VAE with LDM's module names (`encoder.down.0.block.1.conv1`, `decoder.up.3.upsample`,
`mid.attn_1.q`, ...); `diffusers.AutoencoderKL`, which `lvdm.frame_autoencoder` runs, names the
same layers differently. The conversion is a renaming plus one reshape, as diffusers' own
`convert_ldm_vae_checkpoint` does it (written here to be strict, which that one is not):
- decoder levels are numbered the other way round: LDM's `up.{i}` is diffusers' `up_blocks.{n-1-i}`;
- a ResBlock's 1x1 `nin_shortcut` is `conv_shortcut`, the mid blocks `block_1/2` are `resnets.0/1`;
- the mid attention's q, k, v and proj_out are 1x1 Conv2d `(c, c, 1, 1)` in LDM and Linear
  `(c, c)` in diffusers: the same matrix.

The rule runs from diffusers' name to LDM's (`ldm_vae_name`), so `release_import.convert` uses
every LDM tensor exactly once and names any that is missing or left over. The structure
(`autoencoder_kl_config`) is read off the tensor shapes; LDM's `Normalize` is always
GroupNorm(32), so `norm_num_groups` is 32. Nothing here imports diffusers: the callers build
`AutoencoderKL(**config)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from lvdm.pretrained.release_import import ImportReport, ReleaseImportError, convert

LDM_NORM_GROUPS = 32  # ldm.modules.diffusionmodules.model.Normalize: GroupNorm(32, c, eps=1e-6)
SD_VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def ldm_vae_name_rule(levels: int) -> Callable[[str], tuple[str, None]]:
    """diffusers `AutoencoderKL` parameter name -> its LDM single-file name, for `levels` levels."""

    def rule(name: str) -> tuple[str, None]:
        module, param = name.rsplit(".", 1)
        side, _, rest = module.partition(".")
        if side not in ("encoder", "decoder"):  # quant_conv, post_quant_conv
            return name, None
        if rest == "conv_norm_out":
            return f"{side}.norm_out.{param}", None
        if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)", rest):
            return f"{side}.down.{m[1]}.block.{m[2]}.{_resnet(m[3])}.{param}", None
        if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", rest):
            return f"{side}.down.{m[1]}.downsample.conv.{param}", None
        if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)", rest):
            return f"{side}.up.{levels - 1 - int(m[1])}.block.{m[2]}.{_resnet(m[3])}.{param}", None
        if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", rest):
            return f"{side}.up.{levels - 1 - int(m[1])}.upsample.conv.{param}", None
        if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(\w+)", rest):
            return f"{side}.mid.block_{int(m[1]) + 1}.{_resnet(m[2])}.{param}", None
        if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest):
            if m[1] in _ATTENTION:
                return f"{side}.mid.attn_1.{_ATTENTION[m[1]]}.{param}", None
        return name, None  # conv_in, conv_out: the same in both

    return rule


def _resnet(part: str) -> str:
    return "nin_shortcut" if part == "conv_shortcut" else part


def vae_tensors(state: Mapping[str, object]) -> dict[str, object]:
    """The VAE's own tensors of a single file, without a `first_stage_model.` prefix.

    A whole SD (or LVDM T2V) checkpoint holds them under `first_stage_model.`; a VAE-only file
    (`vae-ft-mse-840000-ema-pruned`) bare. Everything else (the UNet, the text encoder, a
    training checkpoint's `loss.*`) is not the VAE.
    """
    prefix = "first_stage_model." if any(k.startswith("first_stage_model.") for k in state) else ""
    out = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    out = {k: v for k, v in out.items() if k.startswith(SD_VAE_PARTS)}
    if "encoder.conv_in.weight" not in out:
        raise ReleaseImportError(
            "no Stable Diffusion VAE in these weights (no encoder.conv_in.weight, bare or under "
            "first_stage_model.): give SD's VAE as a single .safetensors/.ckpt or a diffusers folder"
        )
    return out


def autoencoder_kl_config(
    ldm: Mapping[str, Tensor], *, sample_size: int = 256, scaling_factor: float
) -> dict:
    """`diffusers.AutoencoderKL` kwargs of an LDM-named VAE, from its tensor shapes.

    `sample_size` only sets diffusers' tiling threshold (the release trained at 256 px).
    """

    def shape(name: str) -> tuple[int, ...]:
        if name not in ldm:
            raise ReleaseImportError(f"the Stable Diffusion VAE lacks {name}: not an LDM KL autoencoder")
        return tuple(ldm[name].shape)

    levels = sorted({int(m[1]) for k in ldm if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    if levels != list(range(len(levels))) or not levels:
        raise ReleaseImportError(f"the Stable Diffusion VAE's encoder levels are {levels}: expected 0..n-1")
    blocks = {int(m[1]) for k in ldm if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
    latent = shape("decoder.conv_in.weight")[1]
    if shape("quant_conv.weight")[0] != 2 * latent:
        raise ReleaseImportError(
            f"quant_conv gives {shape('quant_conv.weight')[0]} channels, not 2 x {latent} "
            "(mean and log-variance)"
        )
    return {
        "in_channels": shape("encoder.conv_in.weight")[1],
        "out_channels": shape("decoder.conv_out.weight")[0],
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
        "block_out_channels": [shape(f"encoder.down.{i}.block.0.conv1.weight")[0] for i in levels],
        "layers_per_block": len(blocks),
        "latent_channels": latent,
        "norm_num_groups": LDM_NORM_GROUPS,
        "sample_size": sample_size,
        "scaling_factor": scaling_factor,
    }


def diffusers_vae_state(
    ldm: Mapping[str, Tensor], config: dict, *, source: str, report: ImportReport
) -> dict[str, Tensor]:
    """The `AutoencoderKL(**config)` state dict from LDM-named tensors; every tensor used once."""
    from diffusers import AutoencoderKL

    with torch.device("meta"):  # names and shapes only: nothing is allocated or initialised
        skeleton = AutoencoderKL(**config)
    rule = ldm_vae_name_rule(len(config["block_out_channels"]))
    return convert(ldm, skeleton, rule, source=f"{source} (Stable Diffusion VAE)", report=report)


def read_single_file_vae(path: str | Path, *, scaling_factor: float) -> tuple[dict, dict[str, Tensor]]:
    """`(AutoencoderKL kwargs, state dict)` of SD's VAE in one `.safetensors` or `.ckpt` file.

    The file may be the VAE alone or a whole SD / LVDM T2V checkpoint (`first_stage_model.*`);
    only the VAE's tensors are read. A `.ckpt` goes through the restricted reader, never a pickle.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(path, framework="pt") as file:
            names = vae_tensors(dict.fromkeys(file.keys()))
            prefix = (
                "first_stage_model." if any(k.startswith("first_stage_model.") for k in file.keys()) else ""
            )
            ldm = {name: file.get_tensor(prefix + name) for name in names}
    elif path.suffix == ".ckpt":
        from lvdm.pretrained.lightning_checkpoint import read_checkpoint

        contents = read_checkpoint(path)
        ldm = contents.load(vae_tensors(contents.state_dict()))
    else:
        raise ReleaseImportError(f"{path}: a single-file VAE is a .safetensors or .ckpt file")
    config = autoencoder_kl_config(ldm, scaling_factor=scaling_factor)
    return config, diffusers_vae_state(ldm, config, source=str(path), report=ImportReport())
