"""`UNet3DConfig`: the architecture of `lvdm.unet.UNet3D`, checked where it is built.

Its own module because the building blocks (`lvdm.unet_blocks`, `lvdm.t2v_blocks`) and the
network (`lvdm.unet`) all read it, and the pipeline's config validates a YAML section against
it without building anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from lvdm.attention import RELATIVE_KEY_CONVENTIONS


@dataclass
class UNet3DConfig:
    """Architecture of `UNet3D`; the field names are the keys of the pipeline's `diffusion.unet`.

    The defaults are the official `lvdm_short` unconditional network (sky, UCF-101, TaiChi).
    """

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 256
    # Level i has model_channels * channel_mult[i] channels; levels but the last end in a 2x
    # spatial downsampling.
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks: int = 3
    # Downsampling factors (1, 2, 4, ...) of the levels that get space-time attention; the
    # middle block always has it.
    attention_resolutions: tuple[int, ...] = (2, 4, 8)
    # Factors of further levels that get temporal attention only (no spatial attention): the
    # convolutions are frame-wise, so without it a level's frames see each other only through
    # the levels below. Costs a fraction of space-time attention (1.34x the step time of the
    # reference UNet with it at 16x16 latents, against 2.16x); on the reference run's small
    # prediction network it did not help (issue 21, README point 4), v-prediction did.
    temporal_attention_resolutions: tuple[int, ...] = ()
    num_heads: int = 4
    # Largest relative distance with its own row in the temporal position tables; farther
    # frames share the outermost row, so any number of frames works.
    temporal_length: int = 4
    norm_groups: int = 32
    dropout: float = 0.0
    use_checkpoint: bool = False
    # > 0: the long-video models' noise-level embedding (§4.1, conditional latent
    # perturbation), nn.Embedding(max_noise_level + 1, 4 * model_channels).
    max_noise_level: int = 0
    # > 0: the stride embedding of the prediction model (issue 21): the distance in latents
    # between the frames of its window, 1..max_stride, embedded like the noise level, so one
    # network predicts at the data's pace (stride 1, autoregressive) and at the keys' pace
    # (the key stride, hierarchical), as later models condition on frame rate.
    max_stride: int = 0
    # Width of the text tokens for cross attention; None: no cross attention.
    context_dim: int | None = None
    transformer_depth: int = 1
    # How the temporal attention's relative key table enters the logits (lvdm/attention.py):
    # "official" is the release's term, which its checkpoints (and the paper pipelines,
    # ucf101/sky_timelapse/taichi.yaml) need; "standard" is Shaw et al.'s. The default stays
    # "standard" so unet.pt files written before this option load and compute what they were
    # trained to; the demo keeps it for the same reason (its trained models and cached stages
    # stay valid) — both conventions train equally from scratch.
    relative_key: str = "standard"
    # Text-to-video (§5, the text-to-video blocks below). False: SD's ResBlocks, which add the timestep
    # embedding instead of LVDM's scale/shift (the release's T2V `use_scale_shift_norm`).
    use_scale_shift_norm: bool = True
    # The release's `use_temporal_transformer`: SD's spatial transformer with temporal
    # attentions inside each block replaces the space-time attention; needs context_dim.
    temporal_transformer: bool = False
    # GroupNorm per frame (SD's norm on an image) instead of over the clip (the release):
    # an SD-initialised network then computes SD's function exactly on every frame.
    frame_group_norm: bool = False
    # What the output is: "eps" the noise (the paper, the release, SD), "v" the velocity
    # (lvdm/diffusion/parameterisation.py; issue 21: a small prediction network reads its given
    # frames far better with it). Stored with the weights, so samplers read it off the network.
    prediction: str = "eps"

    def __post_init__(self) -> None:
        # YAML gives lists; the config is immutable in spirit, so store tuples.
        self.channel_mult = tuple(self.channel_mult)
        self.attention_resolutions = tuple(self.attention_resolutions)
        self.temporal_attention_resolutions = tuple(self.temporal_attention_resolutions)
        for name in (
            "in_channels",
            "out_channels",
            "model_channels",
            "num_res_blocks",
            "num_heads",
            "temporal_length",
            "norm_groups",
            "transformer_depth",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"UNet3DConfig.{name}={getattr(self, name)}: must be >= 1")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(
                f"UNet3DConfig.channel_mult={self.channel_mult}: give one positive multiplier per level"
            )
        for channels in self.level_channels:
            if channels % self.norm_groups:
                raise ValueError(
                    f"UNet3DConfig.norm_groups={self.norm_groups} does not divide {channels} channels "
                    f"(model_channels={self.model_channels} x channel_mult={self.channel_mult}); "
                    "pick norm_groups dividing every level's channels"
                )
        reachable = tuple(2**level for level in range(len(self.channel_mult)))
        for field in ("attention_resolutions", "temporal_attention_resolutions"):
            for factor in getattr(self, field):
                if factor not in reachable:
                    raise ValueError(
                        f"UNet3DConfig.{field} contains {factor}, but with "
                        f"{len(self.channel_mult)} levels the downsampling factors are {reachable}; "
                        "remove it or add levels to channel_mult"
                    )
        both = set(self.attention_resolutions) & set(self.temporal_attention_resolutions)
        if both:
            raise ValueError(
                f"UNet3DConfig.temporal_attention_resolutions repeats {sorted(both)} of "
                "attention_resolutions, whose space-time attention has a temporal half already; remove them"
            )
        for channels in self.attention_channels:
            if channels % self.num_heads:
                raise ValueError(
                    f"UNet3DConfig.num_heads={self.num_heads} does not divide the {channels} channels "
                    "of an attention level; pick num_heads dividing model_channels x channel_mult "
                    "at every attention level and the last level"
                )
        if self.max_stride < 0:
            raise ValueError(f"UNet3DConfig.max_stride={self.max_stride}: 0 (no stride embedding) or more")
        if self.max_noise_level < 0:
            raise ValueError(
                f"UNet3DConfig.max_noise_level={self.max_noise_level}: 0 (no noise-level embedding) or more"
            )
        if self.context_dim is not None and self.context_dim < 1:
            raise ValueError(
                f"UNet3DConfig.context_dim={self.context_dim}: None (no cross attention) or >= 1"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNet3DConfig.dropout={self.dropout}: must be in [0, 1)")
        if self.relative_key not in RELATIVE_KEY_CONVENTIONS:
            raise ValueError(
                f"UNet3DConfig.relative_key={self.relative_key!r}: choose one of {RELATIVE_KEY_CONVENTIONS} "
                "('official' for the released LVDM checkpoints)"
            )
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"UNet3DConfig.prediction={self.prediction!r}: 'eps' (the paper's) or 'v'")
        if self.temporal_transformer and self.context_dim is None:
            raise ValueError(
                "UNet3DConfig.temporal_transformer=true needs context_dim (the text tokens' width); "
                "set context_dim or temporal_transformer: false"
            )

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.model_channels * m for m in self.channel_mult)

    @property
    def attention_channels(self) -> tuple[int, ...]:
        """Channels of every level with attention, the middle (last level) included."""
        attended = (*self.attention_resolutions, *self.temporal_attention_resolutions)
        levels = [c for i, c in enumerate(self.level_channels) if 2**i in attended]
        return (*levels, self.level_channels[-1])

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @property
    def spatial_factor(self) -> int:
        """h and w must be divisible by this: one 2x downsampling per level but the last."""
        return 2 ** (len(self.channel_mult) - 1)
