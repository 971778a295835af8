"""One training step of the adversarial video autoencoder, in plain PyTorch.

`AutoencoderTrainer` owns the model, the discriminator, the loss and their two optimisers;
the `train_autoencoder` stage wraps it with Ray Train, MLflow and checkpoint files. It
works when the model and the discriminator are wrapped in DistributedDataParallel:

- the generator pass runs the *unwrapped* discriminator with its parameters frozen, so the
  generator's backward neither fills nor all-reduces discriminator gradients;
- the discriminator sees real clips and detached reconstructions in *one* forward call
  (concatenated), because DDP expects one forward per backward. (The release makes two
  calls; with BatchNorm the two halves now share batch statistics.)
- the adaptive weight reads the gradient at `model.module.last_layer_weight` through
  `torch.autograd.grad`, which does not trigger DDP's gradient reduction.

The posterior sample draws from a generator owned by the trainer and saved in its state,
so a run resumed from `state_dict()` continues bit for bit (give each DDP rank its own seed).
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn

from lvdm.autoencoder import VideoAutoencoder
from lvdm.losses.autoencoder_loss import AutoencoderLoss
from lvdm.parallel import unwrap
from lvdm.resumable_generator import ResumableGenerator


def psnr(x: Tensor, y: Tensor) -> float:
    """Mean per-clip PSNR in dB of `y` against `x`, both `b c t h w` in [-1, 1] (peak 1 after [0, 1])."""
    if x.shape != y.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    # Halving the difference maps [-1, 1] errors onto the [0, 1] scale PSNR is quoted in.
    mse = ((x.float() - y.float()) / 2).clamp(-1, 1).pow(2).flatten(1).mean(dim=1)
    return (10 * torch.log10(1.0 / mse)).mean().item()


class AutoencoderTrainer:
    """Alternating autoencoder / discriminator AdamW steps with clipping and optional autocast."""

    def __init__(
        self,
        model: nn.Module,
        discriminator: nn.Module,
        loss: AutoencoderLoss,
        lr: float = 3.6e-5,
        disc_lr: float | None = None,
        betas: tuple[float, float] = (0.5, 0.9),
        weight_decay: float = 0.0,
        grad_clip: float | None = 1.0,
        autocast_dtype: torch.dtype | None = None,
        seed: int = 0,
        sample_posterior: bool = True,
    ) -> None:
        """`lr` 3.6e-5 and betas (0.5, 0.9) are the official `videoae` settings (Adam there;
        AdamW with `weight_decay=0` is the same update). `autocast_dtype` is torch.bfloat16 or
        torch.float16 on GPU (fp16 adds a gradient scaler per optimiser), None for fp32 / CPU.
        `sample_posterior=False` decodes the posterior mean in training (deterministic
        autoencoder); the release samples.
        """
        if not isinstance(unwrap(model), VideoAutoencoder):
            raise TypeError(
                f"AutoencoderTrainer: model must be a VideoAutoencoder, got {type(unwrap(model))}"
            )
        if autocast_dtype not in (None, torch.bfloat16, torch.float16):
            raise ValueError(f"autocast_dtype={autocast_dtype}: use torch.bfloat16, torch.float16 or None")
        self.model = model
        self.discriminator = discriminator
        self.loss = loss
        self.grad_clip = grad_clip
        self.autocast_dtype = autocast_dtype
        self.sample_posterior = sample_posterior
        self.opt_ae = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
        self.opt_disc = torch.optim.AdamW(
            discriminator.parameters(),
            lr=lr if disc_lr is None else disc_lr,
            betas=betas,
            weight_decay=weight_decay,
        )
        fp16 = autocast_dtype == torch.float16
        self.scaler_ae = torch.amp.GradScaler(enabled=fp16)
        self.scaler_disc = torch.amp.GradScaler(enabled=fp16)
        self.generator = ResumableGenerator(seed)

    @property
    def autoencoder(self) -> VideoAutoencoder:
        return unwrap(self.model)

    def step(self, batch: Tensor, global_step: int) -> dict[str, float]:
        """One autoencoder step, then (from `disc_start` on) one discriminator step.

        `batch: (b c t h w)` in [-1, 1]. Returns every loss term, both gradient norms
        (0 for the discriminator before it is switched on) and whether it was.
        """
        self.model.train()
        self.discriminator.train()
        adversarial = self.loss.adversarial_active(global_step)
        generator = self.generator.on(batch.device)

        with self._autocast(batch.device):
            recon, posterior = self.model(batch, sample_posterior=self.sample_posterior, generator=generator)
            logits_fake = None
            if adversarial:
                bare_disc = unwrap(self.discriminator)
                bare_disc.requires_grad_(False)
                try:
                    logits_fake = bare_disc(recon)
                finally:
                    bare_disc.requires_grad_(True)
            # Pixel terms in fp32 (autocast leaves elementwise ops alone); the perceptual
            # network's convs run in the autocast dtype.
            ae_terms = self.loss.generator_loss(
                batch.float(),
                recon.float(),
                posterior,
                global_step,
                logits_fake=logits_fake,
                last_layer=self.autoencoder.last_layer_weight,
            )
        grad_norm_ae = self._optimise(ae_terms["loss"], self.opt_ae, self.scaler_ae, self.model)

        logs = {f"ae/{name}": value.item() for name, value in ae_terms.items()}
        logs["ae/grad_norm"] = grad_norm_ae
        logs["disc/active"] = float(adversarial)
        logs["disc/loss"] = logs["disc/logits_real"] = logs["disc/logits_fake"] = logs["disc/grad_norm"] = 0.0
        if adversarial:
            with self._autocast(batch.device):
                logits = self.discriminator(torch.cat([batch, recon.detach()]))
            logits_real, logits_fake = logits.chunk(2)
            disc_terms = self.loss.discriminator_loss(logits_real, logits_fake)
            logs["disc/grad_norm"] = self._optimise(
                disc_terms["loss"], self.opt_disc, self.scaler_disc, self.discriminator
            )
            logs.update({f"disc/{name}": value.item() for name, value in disc_terms.items()})
        return logs

    @torch.no_grad()
    def reconstruct(self, batch: Tensor) -> Tensor:
        """Deterministic reconstruction (posterior mean) for previews and held-out PSNR."""
        self.model.eval()
        with self._autocast(batch.device):
            recon, _ = self.autoencoder(batch, sample_posterior=False)
        return recon.float().clamp(-1, 1)

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly: weights, both optimisers and
        scalers, and the posterior-sampling generator."""
        return {
            "model": self.autoencoder.state_dict(),
            "discriminator": unwrap(self.discriminator).state_dict(),
            "opt_ae": self.opt_ae.state_dict(),
            "opt_disc": self.opt_disc.state_dict(),
            "scaler_ae": self.scaler_ae.state_dict(),
            "scaler_disc": self.scaler_disc.state_dict(),
            "generator": self.generator.state(),
        }

    def load_state_dict(self, state: dict) -> None:
        missing = {"model", "discriminator", "opt_ae", "opt_disc"} - state.keys()
        if missing:
            raise KeyError(f"AutoencoderTrainer.load_state_dict: checkpoint lacks {sorted(missing)}")
        self.autoencoder.load_state_dict(state["model"])
        unwrap(self.discriminator).load_state_dict(state["discriminator"])
        self.opt_ae.load_state_dict(state["opt_ae"])
        self.opt_disc.load_state_dict(state["opt_disc"])
        if state.get("scaler_ae"):
            self.scaler_ae.load_state_dict(state["scaler_ae"])
        if state.get("scaler_disc"):
            self.scaler_disc.load_state_dict(state["scaler_disc"])
        self.generator.load(state.get("generator"))

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def _optimise(
        self, loss: Tensor, optimiser: torch.optim.Optimizer, scaler: torch.amp.GradScaler, module: nn.Module
    ) -> float:
        """Backward, unscale, clip, step; returns the gradient norm before clipping."""
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimiser)
        max_norm = self.grad_clip if self.grad_clip is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
        scaler.step(optimiser)
        scaler.update()
        return norm.item()
