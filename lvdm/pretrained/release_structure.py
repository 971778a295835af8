"""The structure of a released LVDM network: `UNet3D` / `VideoAutoencoder` kwargs read from a
release YAML or off the checkpoint's tensor shapes, before any tensor is copied
(`lvdm.pretrained.release_import` copies them).

`unet_kwargs_from_release_config` / `autoencoder_kwargs_from_release_config` read a release YAML
(as a plain dict, `yaml.safe_load`'ed by the caller); `infer_unet_kwargs` /
`infer_autoencoder_kwargs` read it off the tensor shapes, so a checkpoint imports without its
YAML; `walked_unet_kwargs` is the walk both UNet importers (this one and the text-to-video one)
share. Every network the release configures otherwise is refused here, naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from torch import Tensor


class ReleaseImportError(ValueError):
    """A release checkpoint that does not fit the network it should become; says what to do."""


def release_unet_layout(params: Mapping) -> dict:
    """The `UNet3D` kwargs every release UNet config states the same way (`unet_config.params`):
    widths, levels, attention and the temporal table; GroupNorm is always 32 groups there."""
    return {
        "in_channels": int(params["in_channels"]),
        "out_channels": int(params["out_channels"]),
        "model_channels": int(params["model_channels"]),
        "channel_mult": tuple(int(m) for m in params["channel_mult"]),
        "num_res_blocks": int(params["num_res_blocks"]),
        "attention_resolutions": tuple(sorted(int(a) for a in params["attention_resolutions"])),
        "num_heads": int(params["num_heads"]),
        "temporal_length": int(params["temporal_length"]),
        "norm_groups": 32,
    }


def unet_kwargs_from_release_config(config: Mapping) -> dict:
    """`UNet3D` kwargs from a release YAML (`model.params.unet_config.params`)."""
    try:
        params = config["model"]["params"]["unet_config"]["params"]
    except (KeyError, TypeError):
        raise ReleaseImportError(
            "release config has no model.params.unet_config.params: not a lvdm_short / lvdm_long config"
        ) from None
    if params.get("use_temporal_transformer") or params.get("context_dim") is not None:
        raise ReleaseImportError(
            "this is the text-to-video network (use_temporal_transformer): import it with "
            "`lvdm weights import t2v.ckpt --kind t2v --config text2video.yaml --out DIR`"
        )
    if not params.get("use_scale_shift_norm", False) or params.get("kernel_size_t", 1) != 1:
        raise ReleaseImportError("only use_scale_shift_norm: true and kernel_size_t: 1 networks import")
    if not params.get("use_relative_position", False):
        raise ReleaseImportError("only use_relative_position: true networks import")
    num_classes = params.get("num_classes")
    return release_unet_layout(params) | {
        "max_noise_level": int(num_classes) - 1 if num_classes else 0,
        "relative_key": "official",
    }


def autoencoder_kwargs_from_release_config(config: Mapping) -> dict:
    """`AutoencoderConfig` kwargs from a release YAML: a videoae config or a diffusion config's
    `first_stage_config`."""
    params = config.get("model", {}).get("params", {}) if isinstance(config, Mapping) else {}
    if "first_stage_config" in params:
        params = params["first_stage_config"].get("params", {})
    try:
        encoder = params["ddconfig"]["encoder"]["params"]
        embed_dim = int(params["embed_dim"])
    except (KeyError, TypeError):
        raise ReleaseImportError("release config has no autoencoder ddconfig.encoder / embed_dim") from None
    ft, fs, fs_w = (int(d) for d in encoder["downsample"])
    if fs != fs_w or embed_dim != int(encoder["z_channels"]):
        raise ReleaseImportError("only square downsampling with embed_dim == z_channels imports")
    return {
        "in_channels": int(encoder.get("image_channel", 3)),
        "hidden": int(encoder["n_hiddens"]),
        "latent_channels": embed_dim,
        "fs": fs,
        "ft": ft,
    }


def latent_normalisation_from_release_config(config: Mapping) -> tuple[float, float] | None:
    """`(scale, shift)` of a release diffusion config, None for a config without them."""
    params = config.get("model", {}).get("params", {}) if isinstance(config, Mapping) else {}
    if "scale_factor" not in params:
        return None
    return float(params["scale_factor"]), float(params.get("shift_factor", 0.0))


def infer_unet_kwargs(release: Mapping[str, Tensor]) -> dict:
    """`UNet3D` kwargs read off the tensor shapes (release names, or an EMA copy's keys)."""

    def key(name: str) -> str | None:
        for candidate in (name, "model_ema:" + name.replace(".", "")):
            if candidate in release:
                return candidate
        return None

    def get(name: str) -> Tensor:
        found = key(name)
        if found is None:
            raise ReleaseImportError(f"cannot infer the UNet's structure: no {name}; pass --config")
        return release[found]

    label = key("label_emb.weight")
    return walked_unet_kwargs(
        get,
        lambda name: key(name) is not None,
        attention_marker="norm_s.weight",
        table=lambda: get("middle_block.1.relative_position_k.embeddings_table"),
    ) | {
        "max_noise_level": int(release[label].shape[0]) - 1 if label else 0,
        "relative_key": "official",
    }


def walked_unet_kwargs(
    need: Callable[[str], Tensor],
    has: Callable[[str], bool],
    *,
    attention_marker: str,
    table: Callable[[], Tensor],
) -> dict:
    """The `UNet3D` kwargs every release UNet layout shows the same way in its shapes (the short,
    long and text-to-video ones): width, levels, attention levels, heads, temporal length.

    `need(name)` is a tensor or an error naming the layout's fix; `has(name)` whether it exists;
    `attention_marker` the tensor right after a level's ResBlock (`input_blocks.i.1.<marker>`)
    that says the level has attention; `table()` the temporal relative-position table, read
    after the walk so that a checkpoint without ResBlocks says so first."""
    stem = need("input_blocks.0.0.weight")
    model_channels = int(stem.shape[0])
    # Walk the encoder: a level is its ResBlocks up to the next Downsample (`.0.op`).
    levels: list[list[int]] = [[]]
    attention, factor, i = set(), 1, 1
    while True:
        if has(f"input_blocks.{i}.0.op.weight"):
            levels.append([])
            factor *= 2
        elif has(f"input_blocks.{i}.0.in_layers.2.weight"):
            levels[-1].append(i)
            if has(f"input_blocks.{i}.1.{attention_marker}"):
                attention.add(factor)
        else:
            break
        i += 1
    if not levels[0]:
        raise ReleaseImportError("cannot infer the UNet's structure (no ResBlocks found); pass --config")
    heads_and_length = table()
    channel_mult = tuple(
        int(need(f"input_blocks.{level[0]}.0.in_layers.2.weight").shape[0]) // model_channels
        for level in levels
    )
    return {
        "in_channels": int(stem.shape[1]),
        "out_channels": int(need("out.2.weight").shape[0]),
        "model_channels": model_channels,
        "channel_mult": channel_mult,
        "num_res_blocks": len(levels[0]),
        "attention_resolutions": tuple(sorted(attention)),
        "num_heads": model_channels * channel_mult[-1] // int(heads_and_length.shape[1]),
        "temporal_length": (int(heads_and_length.shape[0]) - 1) // 2,
        "norm_groups": 32,
    }


def infer_autoencoder_kwargs(release: Mapping[str, Tensor]) -> dict:
    """`AutoencoderConfig` kwargs from shapes; the strides are not in the shapes, so a release
    autoencoder's 3 levels mean its downsample [4, 8, 8] (every release config)."""
    levels = {int(m[1]) for k in release if (m := re.match(r"^encoder\.conv_blocks\.(\d+)\.", k))}
    if len(levels) != 3:
        raise ReleaseImportError(
            f"autoencoder with {len(levels)} levels: its strides are not in the tensor shapes; pass --config"
        )
    stem = release["encoder.conv_first.conv.weight"]
    return {
        "in_channels": int(stem.shape[1]),
        "hidden": int(stem.shape[0]),
        "latent_channels": int(release["post_quant_conv.conv.weight"].shape[0]),
        "fs": 8,
        "ft": 4,
    }
