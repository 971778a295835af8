"""The DDPM noise schedule (Ho et al. 2020), as LVDM trains it (paper §3.2).

Only betas and the quantities derived from them live here: the schedule knows nothing about
the network, the loss or the sampler (STYLE.md point 5). Tables are float64 and cast to the
data's dtype on use: `1 - alphas_cumprod` near t = 0 is ~1e-3 and loses digits if the
cumulative product itself is accumulated in float32.

Timesteps are 0-based indices `t ∈ [0, T)`: index t is the paper's step t + 1, so
`alphas_cumprod[0] = 1 - betas[0]` (one step of noise), never 1.
"""

from __future__ import annotations

import torch


class NoiseSchedule:
    """Betas and their derived tables, float64 `(T,)` on the CPU.

    Args:
        betas: `(T,)` variances of the forward steps, each in (0, 1).
    """

    def __init__(self, betas: torch.Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or len(betas) < 2:
            raise ValueError(
                f"betas must be a 1-D tensor of at least 2 steps, got shape {tuple(betas.shape)}"
            )
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("every beta must lie in (0, 1): check linear_start / linear_end")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        # q(x_{t-1} | x_t, x_0) = N(coef_x0 · x_0 + coef_xt · x_t, posterior_variance)   (DDPM eq. 6-7)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The variance is 0 at t = 0: clip its log to the t = 1 value, as DDPM and LDM do.
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef_x0 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef_xt = (
            (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / (1.0 - self.alphas_cumprod)
        )

    @classmethod
    def linear(
        cls, timesteps: int = 1000, linear_start: float = 0.0015, linear_end: float = 0.0155
    ) -> NoiseSchedule:
        """The official "linear" schedule: `betas = linspace(√start, √end, T)²`.

        Defaults are LVDM's (all its configs); Stable Diffusion's are 0.00085 / 0.012, which the
        text-to-video variant uses. The name is the official one: the betas are linear in √β.
        """
        if timesteps < 2:
            raise ValueError(f"timesteps must be at least 2, got {timesteps}")
        if not 0 < linear_start < linear_end < 1:
            raise ValueError(
                f"need 0 < linear_start < linear_end < 1, got linear_start={linear_start}, "
                f"linear_end={linear_end}"
            )
        root = torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64)
        return cls(root**2)

    @property
    def timesteps(self) -> int:
        """T, the number of forward steps."""
        return len(self.betas)

    def __len__(self) -> int:
        return self.timesteps

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(T={self.timesteps}, beta_0={self.betas[0].item():.6g}, "
            f"beta_T={self.betas[-1].item():.6g})"
        )

    def at(self, table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """`table[t]` as `(b, 1, ..., 1)` in `like`'s dtype and device, to broadcast over `like`.

        The cast happens on the CPU before the move: some devices (MPS) have no float64.
        """
        if t.ndim != 1 or t.shape[0] != like.shape[0]:
            raise ValueError(f"t must have shape (b,) = ({like.shape[0]},), got {tuple(t.shape)}")
        values = table.to(dtype=like.dtype).to(like.device)[t.to(like.device).long()]
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε, a draw of q(x_t | x_0) (DDPM eq. 4)."""
        return (
            self.at(self.sqrt_alphas_cumprod, t, x0) * x0
            + self.at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x̂_0 = (x_t − √(1 − ᾱ_t) · ε) / √ᾱ_t, the inverse of `q_sample` for a given ε."""
        return (x_t - self.at(self.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / self.at(
            self.sqrt_alphas_cumprod, t, x_t
        )

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """ε̂ = (x_t − √ᾱ_t · x_0) / √(1 − ᾱ_t), the inverse of `q_sample` for a given x_0."""
        return (x_t - self.at(self.sqrt_alphas_cumprod, t, x_t) * x0) / self.at(
            self.sqrt_one_minus_alphas_cumprod, t, x_t
        )

    def posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_{t−1} | x_t, x_0): `(mean, variance, log_variance_clipped)`, the last two `(b, 1, …)`."""
        mean = (
            self.at(self.posterior_mean_coef_x0, t, x_t) * x0
            + self.at(self.posterior_mean_coef_xt, t, x_t) * x_t
        )
        return (
            mean,
            self.at(self.posterior_variance, t, x_t),
            self.at(self.posterior_log_variance_clipped, t, x_t),
        )
