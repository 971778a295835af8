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

Structure (`lvdm.pretrained.release_structure`): kwargs from a release YAML or off the tensor
shapes; `KNOWN_RELEASES` are the release's own config files' numbers. Imported UNets use
`relative_key="official"`, the release's temporal key term (`lvdm/attention.py`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from lvdm.pretrained.release_structure import (
    ReleaseImportError,
    autoencoder_kwargs_from_release_config,
    infer_autoencoder_kwargs,
    infer_unet_kwargs,
    latent_normalisation_from_release_config,
    unet_kwargs_from_release_config,
)
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
