"""Stable Diffusion 1.x weights into the spatial layers of the text-to-video `UNet3D` (LVDM §5).

The paper initialises every spatial layer (convolutions, spatial self- and cross-attention,
feed-forward) from SD and the temporal layers as the identity. `UNet3D` built with
`use_scale_shift_norm=False, temporal_transformer=True` has SD's blocks at SD's indices, so a
state dict in the original (LDM / CompVis) naming maps onto it by renaming inside each block;
the diffusers naming first becomes the LDM one. Tensors change only by unit dimensions: a 2D
kernel `(o, i, 3, 3)` becomes the 1x3x3 kernel `(o, i, 1, 3, 3)`, a 1x1 projection convolution a
Linear weight. Everything the UNet has besides SD's weights must be temporal; anything else
missing or left over is an error, so a checkpoint of another model cannot half-load.

Files: the single-file layout (`v1-5-pruned-emaonly.safetensors`, or a `.ckpt` read through
`lvdm.pretrained.lightning_checkpoint` without running its pickle) with keys under
`model.diffusion_model.`, or a diffusers folder (`unet/diffusion_pytorch_model.safetensors`).
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import Tensor

from lvdm.unet import UNet3D

LDM_UNET_PREFIX = "model.diffusion_model."
DIFFUSERS_UNET_WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"

# Inside one block: the LDM name's tail -> UNet3D's.
_RESBLOCK = {
    "in_layers.0": "in_layers.0",
    "in_layers.2": "in_layers.2",
    "emb_layers.1": "emb_layers.1",
    "out_layers.0": "out_norm",
    "out_layers.3": "out_layers.2",
    "skip_connection": "skip",
}
_TRANSFORMER = {
    "attn1.to_q": "self_attention.to_q",
    "attn1.to_k": "self_attention.to_k",
    "attn1.to_v": "self_attention.to_v",
    "attn1.to_out.0": "self_attention.to_out",
    "attn2.to_q": "cross_attention.to_q",
    "attn2.to_k": "cross_attention.to_k",
    "attn2.to_v": "cross_attention.to_v",
    "attn2.to_out.0": "cross_attention.to_out",
    "ff.net.0.proj": "feed_forward.proj_in",
    "ff.net.2": "feed_forward.proj_out",
    "norm1": "norm1",
    "norm2": "norm2",
    "norm3": "norm3",
}
_DIFFUSERS_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


class StableDiffusionWeightsError(ValueError):
    """The weights are not an SD 1.x UNet that fits this `UNet3D`."""


def _ldm_to_unet3d_name(name: str) -> str:
    """One LDM UNet key (without `model.diffusion_model.`) -> the UNet3D key."""
    if name.startswith(("time_embed.", "out.")):
        return name
    block, param = name.rsplit(".", 1)
    if match := re.fullmatch(r"((?:input|output)_blocks\.\d+\.\d+|middle_block\.\d+)\.(.+)", block):
        head, tail = match.groups()
        if tail in _RESBLOCK:
            return f"{head}.{_RESBLOCK[tail]}.{param}"
        if tail in ("op", "conv"):  # Downsample's `op`, Upsample's `conv`
            return f"{head}.conv.{param}"
        if tail in ("norm", "proj_in", "proj_out"):
            return f"{head}.{tail}.{param}"
        if sub := re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)", tail):
            index, inner = sub.groups()
            if inner in _TRANSFORMER:
                return f"{head}.blocks.{index}.{_TRANSFORMER[inner]}.{param}"
    if name.startswith("input_blocks.0.0."):
        return name
    raise StableDiffusionWeightsError(f"SD UNet key {name!r} is not part of SD 1.x's UNet")


def diffusers_to_ldm(state: dict[str, Tensor], num_res_blocks: int) -> dict[str, Tensor]:
    """A diffusers `UNet2DConditionModel` state dict -> the LDM names (no prefix).

    Up blocks hold `num_res_blocks + 1` resnets; the upsampler's index inside its LDM block is 2
    when that block has an attention, else 1.
    """
    n = num_res_blocks
    has_attention = {
        int(m.group(1)) * (n + 1) + int(m.group(2))
        for key in state
        if (m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.", key))
    }
    fixed = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        module, param = key.rsplit(".", 1)
        if module in fixed:
            out[f"{fixed[module]}.{param}"] = tensor
            continue
        if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", module):
            level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            head = f"input_blocks.{1 + level * (n + 1) + j}.{0 if kind == 'resnets' else 1}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", module):
            head, rest = f"input_blocks.{(int(m[1]) + 1) * (n + 1)}.0.op", None
        elif m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", module):
            kind, j, rest = m[1], int(m[2]), m[3]
            head = f"middle_block.{1 if kind == 'attentions' else 2 * j}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", module):
            level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            head = f"output_blocks.{level * (n + 1) + j}.{0 if kind == 'resnets' else 1}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", module):
            block = int(m[1]) * (n + 1) + n
            head, rest = f"output_blocks.{block}.{2 if block in has_attention else 1}.conv", None
        else:
            raise StableDiffusionWeightsError(f"diffusers UNet key {key!r} is not part of SD 1.x's UNet")
        if rest is not None and "resnets" in module:
            rest = _DIFFUSERS_RESNET.get(rest, rest)
        out[f"{head}.{rest}.{param}" if rest else f"{head}.{param}"] = tensor
    return out


def _same_but_unit_dims(source: tuple[int, ...], target: tuple[int, ...]) -> bool:
    return [d for d in source if d != 1] == [d for d in target if d != 1]


def _is_temporal(name: str) -> bool:
    """Layers SD does not have: the temporal attentions inside the T2V transformer blocks."""
    return ".temporal1." in name or ".temporal2." in name


def load_sd_unet(model: UNet3D, ldm_state: dict[str, Tensor]) -> list[str]:
    """Copy SD's UNet (LDM names, no prefix) into `model`'s spatial layers; returns the temporal keys kept.

    The temporal layers keep their initialisation (identity: zero output projections).
    """
    target = model.state_dict()
    merged, problems = dict(target), []
    for name, tensor in ldm_state.items():
        ours = _ldm_to_unet3d_name(name)
        if ours not in target:
            problems.append(f"{name} (as {ours}): not in this UNet3D")
        elif not _same_but_unit_dims(tuple(tensor.shape), tuple(target[ours].shape)):
            problems.append(f"{name}: shape {tuple(tensor.shape)} cannot become {tuple(target[ours].shape)}")
        else:
            merged[ours] = tensor.reshape(target[ours].shape).to(target[ours].dtype)
    loaded = {_ldm_to_unet3d_name(name) for name in ldm_state}
    kept = sorted(name for name in target if name not in loaded)
    problems += [f"{name}: not in the SD weights" for name in kept if not _is_temporal(name)]
    if problems:
        raise StableDiffusionWeightsError(
            "Stable Diffusion weights do not fit this UNet3D (build it with use_scale_shift_norm: false, "
            "temporal_transformer: true and SD's widths): "
            + "; ".join(problems[:8])
            + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        )
    model.load_state_dict(merged)
    return kept


def read_sd_unet(path: str | Path) -> dict[str, Tensor]:
    """SD's UNet weights in LDM names from a single file (.safetensors / .ckpt) or a diffusers folder.

    A diffusers folder's names are converted by `diffusers_to_ldm`, which needs the blocks per
    level: read from `unet/config.json` (`layers_per_block`).
    """
    import json

    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"Stable Diffusion weights {path} do not exist: supply SD 1.x as one file (.safetensors, or "
            f".ckpt) or a diffusers folder (with {DIFFUSERS_UNET_WEIGHTS})"
        )
    if path.is_dir():
        weights = path / DIFFUSERS_UNET_WEIGHTS
        if not weights.is_file():
            raise FileNotFoundError(
                f"{path}: no {DIFFUSERS_UNET_WEIGHTS}; supply a Stable Diffusion 1.x folder in the diffusers "
                "layout (unet/ with config.json and diffusion_pytorch_model.safetensors) or a single file"
            )
        config = json.loads((weights.parent / "config.json").read_text())
        return diffusers_to_ldm(load_file(weights), int(config["layers_per_block"]))
    if path.suffix == ".safetensors":
        state = load_file(path)
    elif path.suffix == ".ckpt":
        from lvdm.pretrained.lightning_checkpoint import read_checkpoint

        contents = read_checkpoint(path)
        lazy = contents.state_dict()
        state = contents.load({k: v for k, v in lazy.items() if k.startswith(LDM_UNET_PREFIX)})
    else:
        raise FileNotFoundError(
            f"{path}: not a Stable Diffusion checkpoint; give a .safetensors or .ckpt single file "
            "(keys under model.diffusion_model.) or a diffusers folder"
        )
    unet = {k[len(LDM_UNET_PREFIX) :]: v for k, v in state.items() if k.startswith(LDM_UNET_PREFIX)}
    if not unet:
        raise StableDiffusionWeightsError(f"{path}: no tensors under {LDM_UNET_PREFIX!r}: not SD weights")
    return unet
