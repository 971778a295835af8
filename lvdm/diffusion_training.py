"""One training step of a latent video diffusion model, in plain PyTorch.

`DiffusionTrainer` owns the UNet (possibly DDP-wrapped), its EMA copy, the AdamW optimiser
and the random generator every draw of a step comes from (timesteps, noise, masks, the
perturbation level s). The stages wrap it with Ray Train and MLflow. Its `state_dict()` holds
all of that, so the step after a resume has exactly the loss of the uninterrupted run.

Which of the paper's three models it trains is decided by `mask_sampler` (§3.3):
None trains the unconditional model; a prediction or interpolation mask sampler trains a
conditional one, with conditional latent perturbation up to `max_noise_level`. With `roles`,
one network learns several of them: each step draws one role (`WindowRole`), which cuts the
window and draws the mask (the shared network of `train_pred.roles`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lvdm.diffusion.draws import uniform_integers
from lvdm.diffusion.loss import check_weighting, diffusion_loss
from lvdm.diffusion.parameterisation import model_prediction
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.diffusion.strides import strided_windows, window_span
from lvdm.ema import EMA
from lvdm.lr_schedule import lr_factor
from lvdm.parallel import unwrap
from lvdm.precision import autocast
from lvdm.resumable_generator import ResumableGenerator

MaskSampler = Callable[[int, int, torch.Generator], Tensor]  # (batch, frames, generator) -> (b t) bool


@dataclass(frozen=True)
class WindowRole:
    """One role of a network that holds several (§3.3's masks make one network unconditional,
    a predictor and an interpolator): a step of it takes `frames` latents (at a stride drawn
    from `strides`, for a stride-aware network; else consecutive, told nothing, i.e. stride 1)
    from the front of the batch's window and draws its mask with `mask_sampler` (None: the
    unconditional role of a network without the mask channel)."""

    frames: int
    mask_sampler: MaskSampler | None
    strides: tuple[int, ...] | None = None

    @property
    def span(self) -> int:
        """Consecutive latents one example of this role needs."""
        return window_span(self.frames, max(self.strides)) if self.strides else self.frames


class DiffusionTrainer:
    """AdamW steps on the diffusion loss (ε or v, as the network says), gradient clipping, optional
    autocast, EMA."""

    def __init__(
        self,
        model: nn.Module,
        schedule: NoiseSchedule,
        *,
        lr: float = 6e-5,
        weight_decay: float = 0.01,
        grad_clip: float | None = 1.0,
        ema_decay: float = 0.9999,
        loss_type: str = "l1",
        mask_sampler: MaskSampler | None = None,
        max_noise_level: int = 0,
        autocast_dtype: torch.dtype | None = None,
        seed: int = 0,
        strides: Sequence[int] | None = None,
        frames: int | None = None,
        roles: Sequence[WindowRole] | None = None,
        lr_schedule: str = "constant",
        total_steps: int | None = None,
        warmup_steps: int = 0,
        loss_weighting: str = "none",
        min_snr_gamma: float = 5.0,
    ) -> None:
        """`lr` 6e-5 (unconditional) / 8e-5 (prediction, interpolation) and AdamW's default
        weight decay are the official settings. `autocast_dtype` is torch.bfloat16 or None;
        the loss is reduced in fp32 either way. With `strides` (a stride-aware prediction
        network), batches hold `window_span(frames, max(strides))` consecutive latents and each
        example is cut to `frames` latents at a stride drawn from `strides`. With `roles` (a
        shared network) each step draws one of them uniformly, from the trainer's generator (a
        resumed run draws the same roles), and batches hold the longest role's span; `roles`
        replaces `mask_sampler`, `strides` and `frames`. `lr_schedule` "cosine" (or
        `warmup_steps` > 0) sets the rate of each step from its global step
        (`lvdm.lr_schedule.lr_factor`) over `total_steps`, which it then needs.
        `loss_weighting` "min_snr" weighs each example by Min-SNR-`min_snr_gamma`
        (`lvdm.diffusion.loss.min_snr_weights`)."""
        if strides is not None and frames is None:
            raise ValueError("strides given without frames: say how many latents a window holds")
        if roles is not None and (not roles or mask_sampler is not None or strides is not None):
            raise ValueError("roles: give at least one, and no mask_sampler or strides beside them")
        if autocast_dtype not in (None, torch.bfloat16):
            raise ValueError(f"autocast_dtype={autocast_dtype}: use torch.bfloat16 or None")
        self.model = model
        self.schedule = schedule
        self.ema = EMA(unwrap(model), decay=ema_decay)
        scheduled = lr_schedule != "constant" or warmup_steps > 0
        if scheduled and total_steps is None:
            raise ValueError(
                f"lr_schedule {lr_schedule!r} with {warmup_steps} warmup steps needs total_steps"
            )
        if scheduled:
            lr_factor(lr_schedule, 0, total_steps, warmup_steps)  # refuses a bad schedule here, not at step 1
        self.optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.base_lr = lr
        self.lr_schedule = (lr_schedule, total_steps, warmup_steps) if scheduled else None
        self.grad_clip = grad_clip
        self.loss_type = loss_type
        check_weighting(loss_weighting, min_snr_gamma)
        self.loss_weighting, self.min_snr_gamma = loss_weighting, min_snr_gamma
        self.mask_sampler = mask_sampler
        self.max_noise_level = max_noise_level
        self.autocast_dtype = autocast_dtype
        self.last_timesteps: Tensor | None = None
        self.last_losses: Tensor | None = None
        self.generator = ResumableGenerator(seed)
        self.strides = list(strides) if strides is not None else None
        self.frames = frames
        self.roles = list(roles) if roles is not None else None

    @property
    def network(self) -> nn.Module:
        return unwrap(self.model)

    def step(self, batch: Tensor, global_step: int = 0) -> dict[str, float]:
        """One optimiser step on normalised latents `batch (b c t h w)`.

        Returns the loss, the gradient norm before clipping and the EMA decay used; the
        per-example losses and their timesteps stay in `last_losses` / `last_timesteps`
        for per-timestep-bucket logging.
        """
        self.model.train()
        generator = self.generator.on(batch.device)
        mask_sampler, strides, frames = self.mask_sampler, self.strides, self.frames
        if self.roles is not None:
            role = self.roles[int(uniform_integers(0, len(self.roles), 1, generator=generator))]
            if batch.shape[2] < role.span:
                raise ValueError(f"a window of {batch.shape[2]} latents; this role needs {role.span}")
            batch = batch[:, :, : role.span]
            mask_sampler, strides, frames = role.mask_sampler, role.strides, role.frames
        stride = None
        if strides is not None:
            batch, stride = strided_windows(batch, frames, list(strides), generator=generator)
        b, _, frames, _, _ = batch.shape
        mask = mask_sampler(b, frames, generator).to(batch.device) if mask_sampler else None
        with autocast(batch.device, self.autocast_dtype):
            out = diffusion_loss(
                self.model,
                batch,
                self.schedule,
                mask=mask,
                max_noise_level=self.max_noise_level,
                loss_type=self.loss_type,
                generator=generator,
                stride=stride,
                prediction=model_prediction(self.network),
                weighting=self.loss_weighting,
                min_snr_gamma=self.min_snr_gamma,
            )
        lr = self._set_lr(global_step)
        self.optimiser.zero_grad(set_to_none=True)
        out.loss.float().backward()
        max_norm = self.grad_clip if self.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.optimiser.step()
        self.ema.update(self.network)
        self.last_timesteps, self.last_losses = out.t.detach().cpu(), out.per_example.detach().float().cpu()
        logs = {
            "loss": out.loss.item(),
            "grad_norm": grad_norm.item(),
            "ema_decay": self.ema.current_decay(),
            "lr": lr,
        }
        if mask is not None:
            logs["conditioned_fraction"] = mask.any(dim=1).float().mean().item()
        return logs

    def _set_lr(self, global_step: int) -> float:
        """The rate of this step, set on every parameter group (a pure function of the step)."""
        if self.lr_schedule is None:
            return self.base_lr
        schedule, total_steps, warmup_steps = self.lr_schedule
        lr = self.base_lr * lr_factor(schedule, global_step, total_steps, warmup_steps)
        for group in self.optimiser.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {
            "model": self.network.state_dict(),
            "ema": self.ema.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "generator": self.generator.state(),
        }

    def load_state_dict(self, state: dict) -> None:
        missing = {"model", "ema", "optimiser"} - state.keys()
        if missing:
            raise KeyError(f"DiffusionTrainer.load_state_dict: checkpoint lacks {sorted(missing)}")
        self.network.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.generator.load(state.get("generator"))


class TimestepBuckets:
    """Mean loss per range of timesteps over a logging window: the loss at small t (fine
    detail) and large t (layout) move differently, and one average hides which is learning."""

    def __init__(self, timesteps: int, buckets: int = 4) -> None:
        self.edges = torch.linspace(0, timesteps, buckets + 1).long()
        self.sums = torch.zeros(buckets, dtype=torch.float64)
        self.counts = torch.zeros(buckets, dtype=torch.long)

    def add(self, timesteps: Tensor, losses: Tensor) -> None:
        index = torch.bucketize(timesteps, self.edges[1:-1], right=True)
        self.sums.index_add_(0, index, losses.double())
        self.counts.index_add_(0, index, torch.ones_like(index))

    def pop(self) -> dict[str, float]:
        """`loss/t<lo>-<hi>` for every bucket that saw a sample since the last pop."""
        logs = {
            f"loss/t{int(self.edges[i])}-{int(self.edges[i + 1]) - 1}": (self.sums[i] / self.counts[i]).item()
            for i in range(len(self.counts))
            if self.counts[i] > 0
        }
        self.sums.zero_()
        self.counts.zero_()
        return logs
