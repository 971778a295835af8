"""Latent diffusion for video (paper §3.2, §3.3): schedule, masks, conditioning, loss, samplers.

Network, schedule, loss and samplers are kept apart (STYLE.md point 5): the samplers are
functions over a denoiser callable, and `sample_latents` is the glue that wraps a network
with masks, the conditional latent perturbation and unconditional guidance.
"""

from lvdm.diffusion.conditioning import conditional_latent_perturbation, masked_input, unconditional_guidance
from lvdm.diffusion.loss import DiffusionLoss, diffusion_loss
from lvdm.diffusion.masks import frames_mask, interpolation_mask, prediction_mask
from lvdm.diffusion.samplers import ddim, ddim_timesteps, ddpm, dpmpp
from lvdm.diffusion.sampling import model_takes_noise_level, sample_latents
from lvdm.diffusion.schedule import NoiseSchedule

__all__ = [
    "DiffusionLoss",
    "NoiseSchedule",
    "conditional_latent_perturbation",
    "ddim",
    "ddim_timesteps",
    "ddpm",
    "diffusion_loss",
    "dpmpp",
    "frames_mask",
    "interpolation_mask",
    "masked_input",
    "model_takes_noise_level",
    "prediction_mask",
    "sample_latents",
    "unconditional_guidance",
]
