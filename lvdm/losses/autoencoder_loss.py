"""The video autoencoder's training loss (LVDM §3.1, after VQGAN and latent diffusion).

Generator (autoencoder) side:

    loss = pixel + perceptual_weight * perceptual          (the reconstruction term)
         + kl_weight * KL / pixels_per_clip
         + [step >= disc_start] * disc_weight * adaptive_weight * (-mean(D(recon)))

Discriminator side: the hinge loss on real clips and detached reconstructions.

Every term is a *mean* over elements, where the official release (taming's
`LPIPSWithDiscriminator`) sums over pixels and divides by the batch. Dividing the KL sum by
the number of pixel values of a clip keeps `kl_weight` meaning exactly what it means in the
official configs, and the adaptive weight is a ratio of gradient norms, so it absorbs the
common factor. The release's learned `logvar` is dropped: its optimiser never receives that
parameter, so it stays at its initial 0 and the term is a no-op.

The perceptual metric is injected (`perceptual(x, y) -> (b,)` over frames `(b 3 h w)` in
[-1, 1], e.g. LPIPS-VGG) so this module never loads weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from lvdm.autoencoder import DiagonalGaussian

RECONSTRUCTION_KINDS = ("l1", "mse")


@dataclass
class AutoencoderLossConfig:
    """Loss weights; defaults are the official sky/ucf/taichi `videoae` configs."""

    reconstruction: str = "l1"
    perceptual_weight: float = 1.0
    kl_weight: float = 0.0
    disc_start: int = 50001
    disc_weight: float = 0.5
    # VQGAN clamps the adaptive weight so a vanishing generator gradient cannot blow it up.
    max_adaptive_weight: float = 1e4

    def __post_init__(self) -> None:
        if self.reconstruction not in RECONSTRUCTION_KINDS:
            raise ValueError(
                f"AutoencoderLossConfig.reconstruction={self.reconstruction!r}: choose one of "
                f"{RECONSTRUCTION_KINDS}"
            )
        for name in ("perceptual_weight", "kl_weight", "disc_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"AutoencoderLossConfig.{name}={getattr(self, name)}: must be >= 0")
        if self.disc_start < 0:
            raise ValueError(f"AutoencoderLossConfig.disc_start={self.disc_start}: must be >= 0")


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Hinge loss of the discriminator (Lim & Ye 2017), as in taming / LDM."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(
    reconstruction_loss: Tensor, generator_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4
) -> Tensor:
    """VQGAN's (Esser et al. 2021, eq. 7) balance: |grad rec| / |grad gen| at the decoder's last layer.

    It scales the adversarial gradient to the size of the reconstruction gradient, so the
    GAN neither swamps nor vanishes beside the pixel loss. Detached: it is a weight, not a
    term to optimise.
    """
    rec_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    gen_grad = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (gen_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


class AutoencoderLoss(nn.Module):
    """Both halves of the adversarial autoencoder loss; returns every term for logging.

    The discriminator is *not* owned here: the caller runs it (so it can be wrapped in
    DistributedDataParallel) and passes its logits in.
    """

    def __init__(self, config: AutoencoderLossConfig, perceptual: nn.Module | None = None) -> None:
        super().__init__()
        if config.perceptual_weight > 0 and perceptual is None:
            raise ValueError(
                f"AutoencoderLossConfig.perceptual_weight={config.perceptual_weight} needs a perceptual "
                "module (e.g. lvdm.losses.lpips.load_lpips()); pass one or set perceptual_weight: 0"
            )
        self.config = config
        self.perceptual = perceptual
        if perceptual is not None:
            # A fixed metric: never trained, and eval() freezes any dropout/batch-norm in it.
            perceptual.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> AutoencoderLoss:
        super().train(mode)
        if self.perceptual is not None:
            self.perceptual.eval()
        return self

    def adversarial_active(self, global_step: int) -> bool:
        """The discriminator joins at `disc_start` (taming's `adopt_weight`: active when step >= start)."""
        return global_step >= self.config.disc_start

    def reconstruction_terms(self, x: Tensor, recon: Tensor) -> dict[str, Tensor]:
        """Pixel and per-frame perceptual loss of `recon` against `x`, both `b c t h w`."""
        if self.config.reconstruction == "l1":
            pixel = (x - recon).abs().mean()
        else:
            pixel = F.mse_loss(recon, x)
        terms = {"pixel": pixel}
        reconstruction = pixel
        if self.perceptual is not None and self.config.perceptual_weight > 0:
            frames_x = rearrange(x, "b c t h w -> (b t) c h w")
            frames_recon = rearrange(recon, "b c t h w -> (b t) c h w")
            perceptual = self.perceptual(frames_x, frames_recon).mean()
            terms["perceptual"] = perceptual
            reconstruction = reconstruction + self.config.perceptual_weight * perceptual
        terms["reconstruction"] = reconstruction
        return terms

    def generator_loss(
        self,
        x: Tensor,
        recon: Tensor,
        posterior: DiagonalGaussian,
        global_step: int,
        logits_fake: Tensor | None = None,
        last_layer: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The autoencoder's loss; `"loss"` carries the graph, the other entries are detached.

        `logits_fake` (the discriminator on `recon`, gradients flowing into `recon`) and
        `last_layer` (the decoder's output weight) are needed once `adversarial_active`.
        """
        terms = self.reconstruction_terms(x, recon)
        pixels_per_clip = x[0].numel()
        kl = posterior.kl().mean() / pixels_per_clip
        loss = terms["reconstruction"] + self.config.kl_weight * kl
        terms["kl"] = kl

        zero = torch.zeros((), device=x.device)
        generator, weight = zero, zero
        if self.adversarial_active(global_step) and self.config.disc_weight > 0:
            if logits_fake is None or last_layer is None:
                raise ValueError(
                    f"step {global_step} >= disc_start={self.config.disc_start}: generator_loss needs "
                    "logits_fake (discriminator on the reconstruction) and last_layer (decoder output weight)"
                )
            generator = -logits_fake.float().mean()
            if torch.is_grad_enabled():
                weight = adaptive_weight(
                    terms["reconstruction"], generator, last_layer, self.config.max_adaptive_weight
                )
            # Without gradients (evaluation) there is no ratio to take; the term is logged at 0 weight.
            loss = loss + self.config.disc_weight * weight * generator
        terms["generator"] = generator
        terms["adaptive_weight"] = weight
        out = {name: value.detach() for name, value in terms.items()}
        out["loss"] = loss
        return out

    def discriminator_loss(self, logits_real: Tensor, logits_fake: Tensor) -> dict[str, Tensor]:
        """Hinge loss on real clips and *detached* reconstructions; `"loss"` carries the graph."""
        loss = hinge_d_loss(logits_real.float(), logits_fake.float())
        return {
            "loss": loss,
            "logits_real": logits_real.detach().float().mean(),
            "logits_fake": logits_fake.detach().float().mean(),
        }
