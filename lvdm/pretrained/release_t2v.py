"""The LVDM release's text-to-video checkpoint (`t2v.ckpt`, configs/lvdm_short/text2video.yaml at
d251dcc) as this project's three T2V parts: UNet3D, SD's VAE for diffusers, CLIP for transformers.

The checkpoint is the release's `LatentDiffusion` Lightning state dict, read without unpickling
(`lightning_checkpoint.read_checkpoint`). Its parts and where each goes:
- `model.diffusion_model.*` (or an EMA copy `model_ema.diffusion_model<name without dots>`, taken
  by default where present; the release's config trains with `use_ema: false`, so its file has
  none and the raw weights are what it samples with): SD 1.x's UNet made 3D. Our `UNet3D` with
  `temporal_transformer=True, use_scale_shift_norm=False` has SD's blocks at SD's indices; the
  release's `BasicTransformerBlockST` adds `attn1_tmp` / `attn2_tmp` (with `norm4` / `norm5`
  before them), which are our `temporal1` / `temporal2`. Its temporal attention adds
  q_i·r_k(j - i) / sqrt(d), Shaw et al.'s term: `relative_key="standard"`. Its GroupNorms act
  over the whole clip: `frame_group_norm=False`. The 1x1x1 Conv3d `proj_in` / `proj_out` become
  our Linear layers by dropping unit axes.
- `first_stage_model.*`: SD's 2D KL autoencoder in LDM names -> `diffusers.AutoencoderKL`
  (`lvdm.pretrained.ldm_vae`), applied per frame with scale 0.18215.
- `cond_stage_model.transformer.*`: `transformers.CLIPTextModel` (CLIP ViT-L/14's text tower)
  in the transformers naming of its day (`lvdm.pretrained.clip_text`).
Every tensor of each part is used exactly once, both ways (`release_import.convert`); what is
not a part (schedule buffers, the other weight copy) is skipped and reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lvdm.pretrained.clip_text import TEXT_PREFIX, clip_text_config, clip_text_state
from lvdm.pretrained.ldm_vae import autoencoder_kl_config, diffusers_vae_state, vae_tensors
from lvdm.pretrained.release_import import ImportReport, convert
from lvdm.pretrained.release_structure import ReleaseImportError, release_unet_layout, walked_unet_kwargs
from lvdm.unet import UNet3D

UNET_PREFIX, EMA_PREFIX, VAE_PREFIX = (
    "model.diffusion_model.",
    "model_ema.diffusion_model",
    "first_stage_model.",
)
# configs/lvdm_short/text2video.yaml: SD's latent scale and noise schedule, 16 frames of 32x32 latents.
SD_SCALE_FACTOR = 0.18215
RELEASE_SCHEDULE = {"timesteps": 1000, "linear_start": 0.00085, "linear_end": 0.012}
RELEASE_LATENT_SIZE = 32  # image_size: 256 px through SD's fs = 8

# --- The UNet: our name -> the release's ------------------------------------------------------

_TRANSFORMER = {
    "self_attention.to_out": "attn1.to_out.0",
    "self_attention": "attn1",
    "cross_attention.to_out": "attn2.to_out.0",
    "cross_attention": "attn2",
    "feed_forward.proj_in": "ff.net.0.proj",  # GEGLU's projection
    "feed_forward.proj_out": "ff.net.2",
    "temporal1.norm": "norm4",
    "temporal2.norm": "norm5",
    "temporal1.attention.to_out": "attn1_tmp.to_out.0",
    "temporal2.attention.to_out": "attn2_tmp.to_out.0",
    "temporal1.attention": "attn1_tmp",
    "temporal2.attention": "attn2_tmp",
}
_RELATIVE = {
    "relative_key": "relative_position_k.embeddings_table",
    "relative_value": "relative_position_v.embeddings_table",
}
_RESBLOCK = {"out_norm": "out_layers.0", "out_layers.2": "out_layers.3", "skip": "skip_connection"}


def release_t2v_unet_name(name: str) -> tuple[str, None]:
    """The release's name for our T2V UNet parameter `name` (never a fused tensor)."""
    module, param = name.rsplit(".", 1)
    head, sep, inner = module.partition(".blocks.")  # inside a SpatioTemporalTransformer
    if sep:
        index, _, layer = inner.partition(".")
        for ours, theirs in _TRANSFORMER.items():  # a layer's own entry comes before its parent's
            if layer == ours or layer.startswith(ours + "."):
                layer = theirs + layer[len(ours) :]
                break
        return f"{head}.transformer_blocks.{index}.{layer}.{_RELATIVE.get(param, param)}", None
    for ours, theirs in _RESBLOCK.items():
        if module.endswith("." + ours):
            return f"{module[: -len(ours)]}{theirs}.{param}", None
    if module.startswith("input_blocks.") and module.endswith(".0.conv"):  # Downsample's conv is `op`
        return f"{module[: -len('conv')]}op.{param}", None
    return name, None


def _lookup(release: Mapping[str, Tensor]) -> Callable[[str], Tensor | None]:
    """`get(name)`: a release tensor by its dotted name, or the EMA copy's dotless key; None if absent."""

    def get(name: str) -> Tensor | None:
        for key in (name, "model_ema:" + name.replace(".", "")):
            if key in release:
                return release[key]
        return None

    return get


def infer_t2v_unet_kwargs(release: Mapping[str, Tensor]) -> dict:
    """`UNet3D` kwargs of the release's T2V UNet read off its tensor shapes (release names or EMA keys)."""
    get = _lookup(release)

    def need(name: str) -> Tensor:
        tensor = get(name)
        if tensor is None:
            raise ReleaseImportError(f"cannot read the T2V UNet's structure: no {name}")
        return tensor

    middle = "middle_block.1.transformer_blocks"

    def table() -> Tensor:
        found = get(f"{middle}.0.attn1_tmp.relative_position_k.embeddings_table")
        if found is None:
            raise ReleaseImportError(
                "the T2V UNet has no temporal relative-position tables (use_relative_position: false, or "
                "not a text-to-video checkpoint): only the release's text2video.yaml network imports"
            )
        return found

    depth = 0
    while get(f"{middle}.{depth}.norm1.weight") is not None:
        depth += 1

    def has(name: str) -> bool:
        return get(name) is not None

    return walked_unet_kwargs(need, has, attention_marker="proj_in.weight", table=table) | {
        "context_dim": int(need(f"{middle}.0.attn2.to_k.weight").shape[1]),
        "transformer_depth": depth,
        "relative_key": "standard",
        "use_scale_shift_norm": False,
        "temporal_transformer": True,
        "frame_group_norm": False,
    }


@dataclass(frozen=True)
class T2VSettings:
    """What the release's config fixes besides the tensors: latent scale, schedule, clip window."""

    scale: float = SD_SCALE_FACTOR
    schedule: dict = field(default_factory=lambda: dict(RELEASE_SCHEDULE))
    frames: int | None = None  # video_length; None: the UNet's temporal_length (16 in the release)
    latent_size: int = RELEASE_LATENT_SIZE
    unet: dict | None = None  # UNet3D kwargs from the config; None: from the tensor shapes


def t2v_settings_from_release_config(config: Mapping) -> T2VSettings:
    """`T2VSettings` of a release YAML (`yaml.safe_load`'ed): configs/lvdm_short/text2video.yaml."""
    try:
        model = config["model"]["params"]
        params = model["unet_config"]["params"]
    except (KeyError, TypeError):
        raise ReleaseImportError("release config has no model.params.unet_config.params") from None
    if not params.get("use_temporal_transformer") or params.get("context_dim") is None:
        raise ReleaseImportError(
            "this release config is not the text-to-video one (no use_temporal_transformer / context_dim): "
            "use --kind unet|pred|interp for it"
        )
    problems = [
        f"{key}: {params.get(key, default)!r} (only {want!r} imports)"
        for key, want, default in (
            ("use_scale_shift_norm", False, False),
            ("kernel_size_t", 1, 1),
            ("use_relative_position", True, False),
            ("num_head_channels", -1, -1),
        )
        if params.get(key, default) != want
    ]
    if model.get("parameterization", "eps") != "eps":
        problems.append(f"parameterization: {model['parameterization']!r} (only 'eps' imports)")
    if problems:
        raise ReleaseImportError("release config: " + "; ".join(problems))
    unet = release_unet_layout(params) | {
        "context_dim": int(params["context_dim"]),
        "transformer_depth": int(params.get("transformer_depth", 1)),
        "relative_key": "standard",
        "use_scale_shift_norm": False,
        "temporal_transformer": True,
        "frame_group_norm": False,
    }
    return T2VSettings(
        scale=float(model.get("scale_factor", SD_SCALE_FACTOR)),
        schedule={
            "timesteps": int(model.get("timesteps", 1000)),
            "linear_start": float(model.get("linear_start", RELEASE_SCHEDULE["linear_start"])),
            "linear_end": float(model.get("linear_end", RELEASE_SCHEDULE["linear_end"])),
        },
        frames=int(model["video_length"]) if "video_length" in model else None,
        latent_size=_first(model.get("image_size", RELEASE_LATENT_SIZE)),
        unet=unet,
    )


def _first(size: int | list) -> int:
    return int(size[0] if isinstance(size, list | tuple) else size)


# --- One call: the checkpoint -> the three parts ---------------------------------------------------


@dataclass
class ImportedT2V:
    """The release T2V model as ours: the UNet (built), SD's VAE and CLIP (kwargs + state dicts, for
    the diffusers / transformers folders), the latent normalisation, schedule and clip window."""

    unet: UNet3D
    unet_kwargs: dict
    vae_config: dict
    vae_state: dict[str, Tensor]
    text_config: dict
    text_state: dict[str, Tensor]
    scale: float
    schedule: dict
    latent_shape: tuple[int, int, int, int]  # c t h w of one clip
    step: int
    ema: bool  # the UNet is the file's EMA copy (False: its raw weights)
    reports: dict[str, ImportReport]
    inert_globals: set[str]

    def summary(self) -> str:
        """One line per part: what was imported and what skipped."""
        weights = "EMA copy (model_ema.*)" if self.ema else "raw weights (model.diffusion_model.*)"
        lines = [f"{part}: {report.summary()}" for part, report in self.reports.items() if part != "skipped"]
        skipped = self.reports["skipped"].ignored
        if skipped:
            lines.append("skipped: " + "; ".join(f"{n} {why}" for why, n in sorted(skipped.items())))
        return "\n".join([*lines, f"UNet weights: {weights}"])


def split_t2v_checkpoint(
    state: Mapping[str, object], *, ema: bool, source: str
) -> tuple[dict[str, dict[str, object]], ImportReport, bool]:
    """The three parts' tensors by release name (UNet EMA keys as `model_ema:<dotless>`), the
    report of what is none of them, and whether the UNet is the EMA copy. Values pass through
    untouched (lazy or real)."""
    has_ema = any(k.startswith(EMA_PREFIX) for k in state)
    if not any(k.startswith(UNET_PREFIX) for k in state) and not has_ema:
        raise ReleaseImportError(
            f"{source} has no diffusion UNet (model.diffusion_model.*): not a T2V checkpoint"
        )
    if not any(k.startswith(TEXT_PREFIX) for k in state):
        raise ReleaseImportError(
            f"{source} has no text encoder ({TEXT_PREFIX}*): not the release's text-to-video checkpoint; "
            "use --kind unet|pred|interp|autoencoder"
        )
    take_ema = ema and has_ema
    parts: dict[str, dict[str, object]] = {"unet": {}, "vae": {}, "text": {}}
    other = ImportReport()
    for name, value in state.items():
        if take_ema and name.startswith(EMA_PREFIX):
            parts["unet"]["model_ema:" + name[len(EMA_PREFIX) :]] = value
        elif not take_ema and name.startswith(UNET_PREFIX):
            parts["unet"][name[len(UNET_PREFIX) :]] = value
        elif name.startswith(VAE_PREFIX):
            parts["vae"][name[len(VAE_PREFIX) :]] = value
        elif name.startswith(TEXT_PREFIX):
            parts["text"][name[len(TEXT_PREFIX) :]] = value
        elif name.startswith(("model.", "model_ema.")):
            other.ignore(name, "raw (non-EMA) UNet weights" if take_ema else "EMA UNet copy / bookkeeping")
        else:
            other.ignore(name, "tensors outside the three networks (schedule buffers, ...)")
    if not any(k.startswith("encoder.") for k in parts["vae"]):
        raise ReleaseImportError(f"{source} has no autoencoder ({VAE_PREFIX}encoder.*)")
    vae = vae_tensors(parts["vae"])
    for name in parts["vae"].keys() - vae.keys():  # a training checkpoint's loss.*: not the VAE
        other.ignore(name, f"{VAE_PREFIX}* tensors outside the VAE (loss, ...)")
    parts["vae"] = vae
    return parts, other, take_ema


def import_release_t2v(
    path: str,
    *,
    ema: bool = True,
    config: Mapping | None = None,
    text_heads: int | None = None,
) -> ImportedT2V:
    """Read the release's `t2v.ckpt` without running its pickle and convert its three parts.

    Structure: the UNet's from `config` (a release YAML as a dict) if given, else its tensor
    shapes; the VAE's and CLIP's from their shapes. `ema`: the EMA copy where the file has one.
    """
    from lvdm.pretrained.lightning_checkpoint import read_checkpoint

    settings = t2v_settings_from_release_config(config) if config is not None else T2VSettings()
    contents = read_checkpoint(path)
    lazy, other, took_ema = split_t2v_checkpoint(contents.state_dict(), ema=ema, source=str(path))
    reports = {"unet": ImportReport(), "vae": ImportReport(), "text": ImportReport()}

    unet_tensors = contents.load(lazy["unet"])
    kwargs = settings.unet or infer_t2v_unet_kwargs(unet_tensors)
    with torch.device("meta"):  # names and shapes first: a checkpoint that does not fit fails fast
        skeleton = UNet3D(**kwargs)
    weights = convert(
        unet_tensors, skeleton, release_t2v_unet_name, source=f"{path} (UNet)", report=reports["unet"]
    )
    del unet_tensors
    # The converted tensors become the parameters (no second 3.8 GB copy, no random init of 959M).
    unet = skeleton
    unet.load_state_dict(weights, assign=True)
    del weights

    vae_ldm = contents.load(lazy["vae"])
    vae_config = autoencoder_kl_config(vae_ldm, scaling_factor=settings.scale)
    fs = 2 ** (len(vae_config["block_out_channels"]) - 1)
    vae_config["sample_size"] = settings.latent_size * fs  # the training frames' size (256 px)
    vae_state = diffusers_vae_state(vae_ldm, vae_config, source=str(path), report=reports["vae"])

    text = contents.load(lazy["text"])
    text_config = clip_text_config(text, text_heads)
    text_state = clip_text_state(text, text_config, source=str(path), report=reports["text"])

    reports["skipped"] = other
    frames = settings.frames or kwargs["temporal_length"]
    root = contents.root
    step = root.get("global_step", 0) if isinstance(root, dict) else 0
    return ImportedT2V(
        unet=unet.eval(),
        unet_kwargs={k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
        vae_config=vae_config,
        vae_state=vae_state,
        text_config=text_config,
        text_state=text_state,
        scale=settings.scale,
        schedule=dict(settings.schedule),
        latent_shape=(vae_config["latent_channels"], frames, settings.latent_size, settings.latent_size),
        step=step if isinstance(step, int) else 0,
        ema=took_ema,
        reports=reports,
        inert_globals=contents.inert_globals,
    )
