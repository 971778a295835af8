"""The released LVDM checkpoints (github.com/YingqingHe/LVDM, commit d251dcc) as our networks.

Names: every parameter of ours comes from exactly one release tensor by a name rule
(`release_unet_name`, `release_autoencoder_name`); the release's fused 1x1 `qkv` convolution
feeds our three q/k/v projections (its channels are [q | k | v], each `(heads d)`, as ours),
its Conv1d weights `(c, c, 1)` lose the trailing unit axis. A release tensor that no rule
reads is an error, as is one that a rule needs but the checkpoint lacks: nothing is dropped
or made up silently. The only release tensors skipped on purpose are named in the report:
what is not the network (schedule buffers, the EMA's decay and step count, the discriminator
and LPIPS of an autoencoder checkpoint, the other half of a diffusion checkpoint) and the
autoencoder's `SamePadConv3d.weight` aliases (the release registers each conv weight twice,
`x.weight` and `x.conv.weight`; they are checked equal).

Structure: `unet_kwargs_from_release_config` / `autoencoder_kwargs_from_release_config` read a
release YAML (as a plain dict, `yaml.safe_load`'ed by the caller); `infer_unet_kwargs` /
`infer_autoencoder_kwargs` read it off the tensor shapes; `KNOWN_RELEASES` are the release's
own config files' numbers. Imported UNets use `relative_key="official"`, the release's
temporal key term (`lvdm/attention.py`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from lvdm.unet import UNet3D

KINDS = ("autoencoder", "unet", "pred", "interp")

# The release's configs (configs/lvdm_short/{sky,ucf,taichi}.yaml, configs/lvdm_long/
# sky_{pred,interp}.yaml, configs/videoae/*.yaml at d251dcc): the UNet and latent
# normalisation of each; every one of them uses the same autoencoder (n_hiddens 32,
# downsample [4, 8, 8], z_channels 4, embed_dim 4).
_SHORT_UNET = {
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 256,
    "channel_mult": (1, 2, 3, 4),
    "num_res_blocks": 3,
    "attention_resolutions": (2, 4, 8),
    "num_heads": 4,
    "temporal_length": 4,
    "norm_groups": 32,
    "relative_key": "official",
}
RELEASE_AUTOENCODER = {"in_channels": 3, "hidden": 32, "latent_channels": 4, "fs": 8, "ft": 4}
KNOWN_RELEASES: dict[str, dict] = {
    "sky": {"unet": _SHORT_UNET, "scale": 0.33422927, "shift": 1.4606637},
    "ucf": {"unet": _SHORT_UNET, "scale": 0.220142075, "shift": 0.5837740898},
    "taichi": {"unet": _SHORT_UNET, "scale": 0.175733933, "shift": 0.03291025},
    "sky_pred": {
        "unet": {**_SHORT_UNET, "in_channels": 5, "max_noise_level": 250},
        "scale": 0.33422927,
        "shift": 1.4606637,
    },
    "sky_interp": {
        "unet": {**_SHORT_UNET, "in_channels": 5, "max_noise_level": 250, "temporal_length": 5},
        "scale": 0.33422927,
        "shift": 1.4606637,
    },
}


class ReleaseImportError(ValueError):
    """A release checkpoint that does not fit the network it should become; says what to do."""


# --- Name rules: our parameter name -> (release name, qkv part or None) ------------------------

_UNET_RULES: list[tuple[str, str]] = [
    (r"^noise_level_embed\.weight$", "label_emb.weight"),
    (r"^(.*)\.out_norm\.(weight|bias)$", r"\1.out_layers.0.\2"),
    (r"^(.*)\.out_layers\.2\.(weight|bias)$", r"\1.out_layers.3.\2"),
    (r"^(.*)\.skip\.(weight|bias)$", r"\1.skip_connection.\2"),
    (r"^(input_blocks\.\d+\.0)\.conv\.(weight|bias)$", r"\1.op.\2"),  # Downsample
    (r"^(.*)\.spatial\.norm\.(weight|bias)$", r"\1.norm_s.\2"),
    (r"^(.*)\.temporal\.norm\.(weight|bias)$", r"\1.norm_t.\2"),
    (r"^(.*)\.spatial\.attention\.to_out\.(weight|bias)$", r"\1.proj_out_s.\2"),
    (r"^(.*)\.temporal\.attention\.to_out\.(weight|bias)$", r"\1.proj_out_t.\2"),
    (r"^(.*)\.temporal\.attention\.relative_key$", r"\1.relative_position_k.embeddings_table"),
    (r"^(.*)\.temporal\.attention\.relative_value$", r"\1.relative_position_v.embeddings_table"),
]
_QKV = re.compile(r"^(.*)\.(spatial|temporal)\.attention\.to_([qkv])\.(weight|bias)$")


def release_unet_name(name: str) -> tuple[str, int | None]:
    """The release's name for our UNet parameter `name`, and which third of a fused qkv it is."""
    match = _QKV.match(name)
    if match:
        prefix, axis, part, kind = match.groups()
        return f"{prefix}.qkv_{axis[0]}.{kind}", "qkv".index(part)
    for pattern, replacement in _UNET_RULES:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name), None
    return name, None


_RES_PARTS = {"0": "norm1", "2": "conv1.conv", "3": "norm2", "5": "conv2.conv"}


def release_autoencoder_name(name: str) -> tuple[str, int | None]:
    """The release's name for our autoencoder parameter `name` (never a fused tensor)."""
    rules: list[tuple[str, Callable[[re.Match], str]]] = [
        (r"^encoder\.stem\.(.*)$", lambda m: f"encoder.conv_first.{m[1]}"),
        (r"^encoder\.levels\.(\d+)\.0\.(.*)$", lambda m: f"encoder.conv_blocks.{m[1]}.down.{m[2]}"),
        (
            r"^encoder\.levels\.(\d+)\.1\.block\.(\d)\.(.*)$",
            lambda m: f"encoder.conv_blocks.{m[1]}.res.{_RES_PARTS[m[2]]}.{m[3].removeprefix('conv.')}",
        ),
        (r"^encoder\.head\.(.*)$", lambda m: f"encoder.final_block.{m[1]}"),
        (
            r"^decoder\.levels\.(\d+)\.0\.conv\.(.*)$",
            lambda m: f"decoder.conv_blocks.{m[1]}.up.convt.{m[2]}",
        ),
        (
            r"^decoder\.levels\.(\d+)\.([12])\.block\.(\d)\.(.*)$",
            lambda m: f"decoder.conv_blocks.{m[1]}.res{m[2]}.{_RES_PARTS[m[3]]}.{m[4].removeprefix('conv.')}",
        ),
    ]
    for pattern, replacement in rules:
        match = re.match(pattern, name)
        if match:
            return replacement(match), None
    return name, None


# --- Reading the network's tensors out of a checkpoint's state dict ---------------------------


@dataclass
class ImportReport:
    """What an import took from the checkpoint and what it skipped, by prefix."""

    used: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    def ignore(self, name: str, why: str) -> None:
        self.ignored[why] = self.ignored.get(why, 0) + 1

    def summary(self) -> str:
        parts = [f"{self.used} tensors imported"]
        parts += [f"ignored {n} {why}" for why, n in sorted(self.ignored.items())]
        if self.aliases:
            parts.append(f"{len(self.aliases)} duplicate conv-weight aliases checked equal and skipped")
        return "; ".join(parts)


_SCHEDULE_BUFFERS = {
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
    "scale_factor",
    "shift_factor",
    "lvlb_weights",
}


def network_tensors(
    state: Mapping[str, object], kind: str, *, ema: bool = True, source: str = "checkpoint"
) -> tuple[dict[str, object], ImportReport]:
    """The release network's own tensors from a Lightning state dict, by release name.

    kind "autoencoder": an autoencoder checkpoint's `encoder.*`, `decoder.*`, quant convs, or a
    diffusion checkpoint's `first_stage_model.*`; "unet" / "pred" / "interp": the diffusion
    wrapper's EMA copy (`model_ema.diffusion_model<name without dots>`, as the release samples)
    or with `ema=False` its raw `model.diffusion_model.*`. Values are passed through untouched
    (lazy or real tensors). Raises ReleaseImportError for a checkpoint of the wrong kind.
    """
    if kind not in KINDS:
        raise ReleaseImportError(f"kind {kind!r}: choose one of {KINDS}")
    report = ImportReport()
    is_diffusion = any(k.startswith(("model.diffusion_model.", "model_ema.")) for k in state)
    if kind == "autoencoder":
        prefix = "first_stage_model." if is_diffusion else ""
        if not any(k.startswith(f"{prefix}encoder.") for k in state):
            raise ReleaseImportError(
                f"{source} has no autoencoder (no {prefix}encoder.* tensors): it is not a release "
                "videoae checkpoint nor a diffusion checkpoint with its first stage; check --kind"
            )
        out = {}
        for name, value in state.items():
            if name.startswith(prefix) and name[len(prefix) :].split(".")[0] in (
                "encoder",
                "decoder",
                "quant_conv",
                "post_quant_conv",
            ):
                out[name[len(prefix) :]] = value
            else:
                report.ignore(name, _ignored_group(name))
        return out, report

    if not is_diffusion:
        raise ReleaseImportError(
            f"{source} has no diffusion network (no model.diffusion_model.* / model_ema.* tensors): "
            f"it looks like an autoencoder checkpoint; use --kind autoencoder"
        )
    if ema:
        if not any(k.startswith("model_ema.diffusion_model") for k in state):
            raise ReleaseImportError(
                f"{source} has no EMA weights (model_ema.*); import the raw weights with --no-ema"
            )
        out = {}
        for name, value in state.items():
            if name.startswith("model_ema.diffusion_model"):
                out["model_ema:" + name[len("model_ema.diffusion_model") :]] = value
            else:
                report.ignore(name, _ignored_group(name))
        return out, report
    out = {}
    for name, value in state.items():
        if name.startswith("model.diffusion_model."):
            out[name[len("model.diffusion_model.") :]] = value
        else:
            report.ignore(name, _ignored_group(name))
    return out, report


def _ignored_group(name: str) -> str:
    head = name.split(".")[0]
    if name in _SCHEDULE_BUFFERS:
        return "schedule buffers"
    if head == "model":
        return "raw (non-EMA) weights model.*"
    if head == "model_ema":
        return (
            "EMA tensors (model_ema.*)"
            if name not in ("model_ema.decay", "model_ema.num_updates")
            else ("EMA bookkeeping (model_ema.decay, num_updates)")
        )
    return f"{head}.* tensors"


def release_name_map(
    ours: Mapping[str, Tensor], rule: Callable[[str], tuple[str, int | None]], *, ema: bool = False
) -> dict[str, list[tuple[str, int | None]]]:
    """Release key -> our (name, qkv part) pairs it feeds, for every tensor of `ours`.

    With `ema`, keys are `model_ema:<release name without dots>` (the release's LitEma names).
    """
    wanted: dict[str, list[tuple[str, int | None]]] = {}
    plain: set[str] = set()
    for name in ours:
        release_name, part = rule(name)
        plain.add(release_name)
        key = "model_ema:" + release_name.replace(".", "") if ema else release_name
        wanted.setdefault(key, []).append((name, part))
    if len(wanted) != len(plain):
        raise ReleaseImportError("two release names collide once their dots are removed (EMA keys)")
    return wanted


def convert(
    release: Mapping[str, Tensor],
    model: torch.nn.Module,
    rule: Callable[[str], tuple[str, int | None]],
    *,
    source: str,
    report: ImportReport,
) -> dict[str, Tensor]:
    """`model`'s state dict from release tensors by `rule`; every tensor used exactly once.

    `release` keys are release names, or `model_ema:<name without dots>` for an EMA copy.
    """
    ema = any(k.startswith("model_ema:") for k in release)
    ours = model.state_dict()
    wanted = release_name_map(ours, rule, ema=ema)

    unused = set(release) - set(wanted)
    aliases = {k for k in unused if _is_alias(k, release)}
    report.aliases = sorted(aliases)
    unused -= aliases
    missing = sorted(set(wanted) - set(release))
    if missing or unused:
        problems = []
        if missing:
            problems.append(f"missing {len(missing)}: {_names(missing)}")
        if unused:
            problems.append(f"not part of this network {len(unused)}: {_names(sorted(unused))}")
        raise ReleaseImportError(
            f"{source} does not fit the network being built ({'; '.join(problems)}); pass the "
            "release config it was trained with (--config configs/.../X.yaml) or check --kind"
        )
    converted = {}
    for key, targets in wanted.items():
        tensor = release[key]
        for name, part in targets:
            piece = tensor.chunk(3, dim=0)[part] if part is not None else tensor
            target = ours[name]
            if piece.numel() != target.numel() or piece.shape[: target.ndim] != target.shape:
                raise ReleaseImportError(
                    f"{source}: {key} has shape {tuple(tensor.shape)}, which does not fit {name} "
                    f"{tuple(target.shape)}; pass the release config it was trained with (--config)"
                )
            converted[name] = piece.reshape(target.shape).to(target.dtype).clone()
    report.used = len(wanted) + 0
    return converted


def _is_alias(key: str, release: Mapping[str, Tensor]) -> bool:
    """The release's `SamePadConv3d.weight`, a second name of `<x>.conv.weight`, checked equal."""
    if not key.endswith(".weight") or key.endswith(".conv.weight"):
        return False
    twin = key[: -len("weight")] + "conv.weight"
    if twin not in release:
        return False
    if not torch.equal(release[key], release[twin]):
        raise ReleaseImportError(f"{key} and {twin} should be one tensor, but differ")
    return True


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(n.removeprefix("model_ema:") for n in names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


# --- Structure -------------------------------------------------------------------------------


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


# --- Building our networks -------------------------------------------------------------------


def import_unet(release: Mapping[str, Tensor], kwargs: dict, *, source: str, report: ImportReport) -> UNet3D:
    """Our UNet3D with `kwargs`, holding the release tensors (by release name or EMA key)."""
    if kwargs.get("relative_key", "official") != "official":
        raise ReleaseImportError("release UNets need relative_key='official'")
    with torch.device("meta"):  # names and shapes first: a checkpoint that does not fit fails fast
        skeleton = UNet3D(**kwargs)
    weights = convert(release, skeleton, release_unet_name, source=source, report=report)
    model = UNet3D(**kwargs)
    model.load_state_dict(weights)
    return model.eval()


def import_autoencoder(
    release: Mapping[str, Tensor], kwargs: dict, *, source: str, report: ImportReport
) -> VideoAutoencoder:
    """Our VideoAutoencoder with `kwargs`, holding the release tensors (release names)."""
    config = AutoencoderConfig(**kwargs)
    model = VideoAutoencoder(config)
    weights = convert(release, model, release_autoencoder_name, source=source, report=report)
    model.load_state_dict(weights)
    return model.eval()


# --- One call: a checkpoint file -> our network ------------------------------------------------


@dataclass
class ImportedModel:
    """A release network as ours: the model, the kwargs that build it, the latent
    normalisation (None where neither the config nor a known release gives it), the training
    step, what was skipped, and which globals of the pickle were left inert."""

    kind: str
    model: torch.nn.Module
    kwargs: dict
    scale: float | None
    shift: float | None
    step: int
    report: ImportReport
    inert_globals: set[str]


def import_release_checkpoint(
    path: str,
    kind: str,
    *,
    ema: bool = True,
    config: Mapping | None = None,
    release: str | None = None,
) -> ImportedModel:
    """Read a release `.ckpt` without running its pickle and build our network from it.

    Structure and latent normalisation come from `config` (a release YAML as a dict) if given,
    else from `release` (a name in `KNOWN_RELEASES`: its numbers, checked against the shapes
    by the import itself), else from the tensor shapes (normalisation then unknown: None).
    """
    from lvdm.pretrained.lightning_checkpoint import read_checkpoint

    if release is not None and release not in KNOWN_RELEASES:
        raise ReleaseImportError(f"release {release!r}: choose one of {sorted(KNOWN_RELEASES)}")
    contents = read_checkpoint(path)
    lazy, report = network_tensors(contents.state_dict(), kind, ema=ema, source=str(path))
    tensors = contents.load(lazy)
    scale = shift = None
    if config is not None:
        normalisation = latent_normalisation_from_release_config(config)
        if normalisation is not None:
            scale, shift = normalisation
    elif release is not None:
        scale, shift = KNOWN_RELEASES[release]["scale"], KNOWN_RELEASES[release]["shift"]
    if kind == "autoencoder":
        if config is not None:
            kwargs = autoencoder_kwargs_from_release_config(config)
        elif release is not None:
            kwargs = dict(RELEASE_AUTOENCODER)
        else:
            kwargs = infer_autoencoder_kwargs(tensors)
        model: torch.nn.Module = import_autoencoder(tensors, kwargs, source=str(path), report=report)
    else:
        if config is not None:
            kwargs = unet_kwargs_from_release_config(config)
        elif release is not None:
            kwargs = dict(KNOWN_RELEASES[release]["unet"])
        else:
            kwargs = infer_unet_kwargs(tensors)
        _check_unet_kind(kwargs, kind, str(path))
        model = import_unet(tensors, kwargs, source=str(path), report=report)
    root = contents.root
    step = root.get("global_step", 0) if isinstance(root, dict) else 0
    return ImportedModel(
        kind=kind,
        model=model,
        kwargs={k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
        scale=scale,
        shift=shift,
        step=step if isinstance(step, int) else 0,
        report=report,
        inert_globals=contents.inert_globals,
    )


def _check_unet_kind(kwargs: dict, kind: str, source: str) -> None:
    """The unconditional UNet has no mask channel; pred/interp have one and a noise-level embedding."""
    conditional = kwargs["in_channels"] == kwargs["out_channels"] + 1 and kwargs.get("max_noise_level", 0) > 0
    if kind == "unet" and conditional:
        raise ReleaseImportError(
            f"{source} is a prediction/interpolation network (mask channel, noise-level embedding): "
            "use --kind pred or --kind interp"
        )
    if kind in ("pred", "interp") and not conditional:
        raise ReleaseImportError(
            f"{source} is an unconditional network (no mask channel / noise-level embedding): use --kind unet"
        )
