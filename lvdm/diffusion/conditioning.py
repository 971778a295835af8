"""Frame conditioning for one network that predicts, interpolates and generates (paper §3.3).

Three small functions that wrap the denoiser's input and output:
- `conditional_latent_perturbation`: condition on a diffused copy z_s of the given latents;
- `masked_input`: put the condition into the masked frames and append the mask channel;
- `unconditional_guidance`: combine a conditional and an unconditional prediction.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat

from lvdm.diffusion.schedule import NoiseSchedule


def conditional_latent_perturbation(
    z_cond: torch.Tensor, s: torch.Tensor, schedule: NoiseSchedule, noise: torch.Tensor
) -> torch.Tensor:
    """z_s ~ q(z_s | z_cond): the conditioning latent diffused to level `s` per example (§3.3).

    Conditioning on slightly noised frames makes the network tolerate the errors of its own
    earlier outputs, which is what keeps autoregressive long-video prediction from drifting.

    Level 0 is the clean latent, returned bit-for-bit; level s ≥ 1 is the DDPM marginal after
    s forward steps (timestep index s − 1). So the levels 0..max_noise_level are
    max_noise_level + 1 distinct inputs, the official embedding's 251 rows for s_max = 250.
    (The official code used q_sample at index s directly, so its "level 0" was already noised.)

    Args:
        z_cond: `(b, c, t, h, w)` conditioning latents.
        s: `(b,)` long noise levels in [0, T].
        noise: `(b, c, t, h, w)` standard normal draws.
    """
    s = torch.as_tensor(s, device=z_cond.device).long()
    if s.ndim != 1 or s.shape[0] != z_cond.shape[0]:
        raise ValueError(f"s must be (b,) = ({z_cond.shape[0]},) noise levels, got shape {tuple(s.shape)}")
    if bool(((s < 0) | (s > schedule.timesteps)).any()):
        raise ValueError(f"noise levels s must lie in [0, {schedule.timesteps}], got {s.tolist()}")
    diffused = schedule.q_sample(z_cond, (s - 1).clamp_min(0), noise)
    return torch.where(rearrange(s == 0, "b -> b 1 1 1 1"), z_cond, diffused)


def masked_input(x_t: torch.Tensor, z_cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The network's input: `(b, c + 1, t, h, w)` = [x_t with masked frames ← z_cond, mask].

    Args:
        x_t: `(b, c, t, h, w)` noisy latents.
        z_cond: `(b, c, t, h, w)` conditioning latents (only the masked frames are read).
        mask: `(b, t)` bool, True where a frame is given.
    """
    b, _, t, h, w = x_t.shape
    if z_cond.shape != x_t.shape:
        raise ValueError(f"z_cond must have x_t's shape {tuple(x_t.shape)}, got {tuple(z_cond.shape)}")
    if tuple(mask.shape) != (b, t):
        raise ValueError(f"mask must be (b, t) = ({b}, {t}) over latent frames, got {tuple(mask.shape)}")
    mask = mask.to(device=x_t.device, dtype=torch.bool)
    frames = torch.where(rearrange(mask, "b t -> b 1 t 1 1"), z_cond, x_t)
    channel = repeat(mask, "b t -> b 1 t h w", h=h, w=w).to(x_t.dtype)
    return torch.cat([frames, channel], dim=1)


def unconditional_guidance(eps_c: torch.Tensor, eps_u: torch.Tensor, w: float) -> torch.Tensor:
    """ε̃ = (1 + w) · ε_c − w · ε_u (paper §3.3; classifier-free guidance with one network).

    w = 0 is plain conditional sampling; w > 0 pushes samples toward the condition.
    """
    return (1.0 + w) * eps_c - w * eps_u
