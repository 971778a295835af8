"""Training steps of the text-to-video model (LVDM §5): `DiffusionTrainer` with captions.

A step takes the latents and their captions' text tokens; each caption is dropped to the
empty caption's tokens with probability `caption_dropout` (drawn from the trainer's own
generator, so a resumed run drops the same captions), then the usual ε-prediction step runs
with the tokens fed to the network's cross-attention.

Text joins §3.3's mask conditioning through `DiffusionTrainer`'s own `mask_sampler` and
`max_noise_level` (long text-to-video, `t2v.cond_frames`): the mask and the caption dropout are
drawn apart, so the one network learns ε given frames and caption, either one, and neither, which
is what a continuation with both frame and classifier-free text guidance evaluates.

The tokens reach the network through a forward pre-hook held for the step: the shared
`diffusion_loss` calls `model(x, t)` and needs no text argument, and the network (possibly
DDP-wrapped) and its checkpoints stay exactly those of `DiffusionTrainer`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from lvdm.diffusion.text_guidance import drop_captions
from lvdm.diffusion_training import DiffusionTrainer

DEFAULT_CAPTION_DROPOUT = 0.1


@contextmanager
def feeding_context(network: nn.Module, context: Tensor) -> Iterator[None]:
    """While open, every `network(x, t, ...)` call gets `context=` this tensor."""

    def add_context(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**kwargs, "context": context}

    handle = network.register_forward_pre_hook(add_context, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


class TextDiffusionTrainer(DiffusionTrainer):
    """`step(latents, context)`: caption dropout to `null_context`, then `DiffusionTrainer`'s step.

    `null_context: m d` is the empty caption's text tokens (`TextEncoder.encode([""])[0]`).
    The other keyword arguments are `DiffusionTrainer`'s.
    """

    def __init__(
        self,
        model: nn.Module,
        schedule,
        *,
        null_context: Tensor,
        caption_dropout: float = DEFAULT_CAPTION_DROPOUT,
        **kwargs,
    ) -> None:
        super().__init__(model, schedule, **kwargs)
        if not 0.0 <= caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout={caption_dropout}: must be in [0, 1]")
        self.null_context = null_context.detach()
        self.caption_dropout = caption_dropout

    def step(self, batch: Tensor, context: Tensor, global_step: int = 0) -> dict[str, float]:
        """One optimiser step on latents `batch: b c t h w` with text tokens `context: b m d`."""
        if context.ndim != 3 or context.shape[0] != batch.shape[0]:
            raise ValueError(
                f"context has shape {tuple(context.shape)}; expected ({batch.shape[0]}, tokens, width)"
            )
        generator = self.generator.on(batch.device)
        context = drop_captions(context.to(batch.device), self.null_context, self.caption_dropout, generator)
        with feeding_context(self.network, context):
            return super().step(batch, global_step)
