"""Sampler quality at equal steps, with the exact denoiser of a known distribution.

    python benchmarks/bench_samplers.py                 # 50k samples, steps 10 20 50
    python benchmarks/bench_samplers.py --samples 20000 --steps 10 20 50 100

The target is a 1-D Gaussian mixture per element, whose noised marginal q(x_t) is again a
mixture, so the ideal ε-predictor ε*(x_t, t) = −√(1 − ᾱ_t) · ∇ log q(x_t) is exact in closed
form. With it, a sampler's error is its discretisation error alone (a trained network adds
its own on top): the table shows how far each sampler's samples are from the true
distribution, as the 1-D Wasserstein distance W1 (the mean gap between sorted samples and
sorted exact draws), and the errors of mean and std, beside seconds per run. The last row
"exact draws" is two independent samples of the target: the noise floor of the W1 estimate.

The schedule is LVDM's (linear, T = 1000, 0.0015 to 0.0155). DPM-Solver++ needs
`pip install 'lvdm-pipeline[samplers]'`; without it those rows are skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lvdm.diffusion import NoiseSchedule, ddim, ddpm, dpmpp


@dataclass(frozen=True)
class GaussianMixture:
    """p(x) = Σ_k w_k N(μ_k, σ_k²) per element."""

    weights: tuple[float, ...] = (0.3, 0.7)
    means: tuple[float, ...] = (-1.5, 1.0)
    stds: tuple[float, ...] = (0.2, 0.5)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        w, mu, sd = (torch.tensor(v, dtype=torch.float64) for v in (self.weights, self.means, self.stds))
        k = torch.multinomial(w, n, replacement=True, generator=generator)
        return mu[k] + sd[k] * torch.randn(n, generator=generator, dtype=torch.float64)

    def exact_eps(self, schedule: NoiseSchedule) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """ε*(x_t, t): q(x_t) = Σ w_k N(a μ_k, a² σ_k² + s²), a = √ᾱ_t, s = √(1 − ᾱ_t)."""
        w, mu, sd = (torch.tensor(v, dtype=torch.float64) for v in (self.weights, self.means, self.stds))

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            a = schedule.at(schedule.sqrt_alphas_cumprod, t, x.double())[..., None]
            s = schedule.at(schedule.sqrt_one_minus_alphas_cumprod, t, x.double())[..., None]
            var = a**2 * sd**2 + s**2
            diff = x.double()[..., None] - a * mu
            log_r = torch.log(w) - 0.5 * torch.log(var) - 0.5 * diff**2 / var
            r = torch.softmax(log_r, dim=-1)
            score = -(r * diff / var).sum(-1)
            return (-s[..., 0] * score).to(x.dtype)

        return eps


def wasserstein1(x: torch.Tensor, y: torch.Tensor) -> float:
    return (x.double().flatten().sort().values - y.double().flatten().sort().values).abs().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=50_000, help="elements sampled per run")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50], help="step counts to compare")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    schedule = NoiseSchedule.linear()
    target = GaussianMixture()
    eps = target.exact_eps(schedule)
    reference = target.sample(args.samples, torch.Generator().manual_seed(args.seed + 1))
    true_mean, true_std = reference.mean().item(), reference.std().item()

    if importlib.util.find_spec("diffusers") is not None:
        import diffusers  # noqa: F401  (imported once here, so its import time stays out of the timings)
    runs: list[tuple[str, int, Callable[..., torch.Tensor]]] = [
        ("DDPM", 1000, lambda x, g, n: ddpm(eps, x, schedule, generator=g))
    ]
    for n in args.steps:
        runs.append(("DDIM η=0", n, lambda x, g, n: ddim(eps, x, schedule, steps=n, eta=0.0, generator=g)))
        runs.append(("DDIM η=1", n, lambda x, g, n: ddim(eps, x, schedule, steps=n, eta=1.0, generator=g)))
        if importlib.util.find_spec("diffusers") is not None:
            runs.append(("DPM-Solver++(2M)", n, lambda x, g, n: dpmpp(eps, x, schedule, steps=n)))
    runs.sort(key=lambda run: (run[1], run[0]))

    print(f"target: {target}; {args.samples} samples; true mean {true_mean:.4f}, std {true_std:.4f}")
    header = f"{'sampler':<18} {'steps':>5} {'W1':>8} {'|Δmean|':>8} {'|Δstd|':>8} {'seconds':>8}"
    print(header)
    print("-" * len(header))
    for name, n, run in runs:
        generator = torch.Generator().manual_seed(args.seed)
        x_T = torch.randn(args.samples, generator=generator)
        start = time.perf_counter()
        x = run(x_T, generator, n)
        seconds = time.perf_counter() - start
        print(
            f"{name:<18} {n:>5} {wasserstein1(x, reference):>8.4f} {abs(x.mean().item() - true_mean):>8.4f} "
            f"{abs(x.std().item() - true_std):>8.4f} {seconds:>8.2f}"
        )
    floor = target.sample(args.samples, torch.Generator().manual_seed(args.seed + 2))
    print(
        f"{'exact draws':<18} {'-':>5} {wasserstein1(floor, reference):>8.4f} "
        f"{abs(floor.mean().item() - true_mean):>8.4f} {abs(floor.std().item() - true_std):>8.4f} {'-':>8}"
    )


if __name__ == "__main__":
    main()
