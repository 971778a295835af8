import pytest
import torch
from torch import nn

from lvdm.autoencoder import DiagonalGaussian
from lvdm.losses.autoencoder_loss import (
    AutoencoderLoss,
    AutoencoderLossConfig,
    adaptive_weight,
    hinge_d_loss,
)


class FeatureDistance(nn.Module):
    """A tiny stand-in for LPIPS: squared distance of fixed random conv features, `(b,)`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return (self.features(x) - self.features(y)).pow(2).mean(dim=(1, 2, 3))


def video_pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 4, 8, 8, generator=g) * 2 - 1
    return x, (x + 0.2 * torch.randn(x.shape, generator=g)).requires_grad_(True)


def posterior(mean: float = 0.5) -> DiagonalGaussian:
    return DiagonalGaussian(torch.full((2, 4, 2, 2, 2), mean), torch.full((2, 4, 2, 2, 2), -1.0))


def test_hinge_loss_is_zero_for_confident_logits_and_one_at_zero():
    assert hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0)).item() == 0.0
    assert hinge_d_loss(torch.zeros(4), torch.zeros(4)).item() == 1.0


def test_adaptive_weight_is_the_ratio_of_gradient_norms_clamped():
    w = torch.ones(3, requires_grad=True)
    rec = (w * torch.tensor([3.0, 0.0, 4.0])).sum()  # gradient norm 5
    gen = (w * torch.tensor([0.0, 0.5, 0.0])).sum()  # gradient norm 0.5
    assert adaptive_weight(rec, gen, w).item() == pytest.approx(5 / (0.5 + 1e-4))
    flat = (w * 0.0).sum()
    assert adaptive_weight(rec, flat, w, max_weight=1e4).item() == 1e4


def test_reconstruction_is_l1_or_mse_plus_perceptual_on_every_frame():
    x, recon = video_pair()
    perceptual = FeatureDistance()
    l1 = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=0.5), perceptual)
    terms = l1.reconstruction_terms(x, recon)
    assert perceptual.calls == [(2 * 4, 3, 8, 8)]
    assert terms["pixel"].item() == pytest.approx((x - recon).abs().mean().item(), rel=1e-6)
    expected = terms["pixel"] + 0.5 * terms["perceptual"]
    assert terms["reconstruction"].item() == pytest.approx(expected.item(), rel=1e-6)
    mse = AutoencoderLoss(AutoencoderLossConfig(reconstruction="mse", perceptual_weight=0.0))
    assert mse.reconstruction_terms(x, recon)["reconstruction"].item() == pytest.approx(
        (x - recon).pow(2).mean().item(), rel=1e-6
    )


def test_perceptual_weight_without_a_perceptual_module_is_rejected():
    with pytest.raises(ValueError, match="load_lpips"):
        AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=1.0), None)
    with pytest.raises(ValueError, match="reconstruction='l2'"):
        AutoencoderLossConfig(reconstruction="l2")


def test_kl_weight_zero_leaves_the_kl_out_and_a_positive_weight_adds_it():
    x, recon = video_pair()
    off = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=0.0, kl_weight=0.0))
    on = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=0.0, kl_weight=1e-2))
    terms_off = off.generator_loss(x, recon, posterior(), global_step=0)
    terms_on = on.generator_loss(x, recon, posterior(), global_step=0)
    assert terms_off["kl"].item() > 0
    assert terms_off["loss"].item() == pytest.approx(terms_off["reconstruction"].item())
    # KL summed over the latent, per pixel value of the clip, as in the official configs' scale.
    kl_per_pixel = posterior().kl().mean().item() / x[0].numel()
    assert terms_on["kl"].item() == pytest.approx(kl_per_pixel)
    assert terms_on["loss"].item() == pytest.approx(terms_on["reconstruction"].item() + 1e-2 * kl_per_pixel)


def test_generator_term_is_zero_before_disc_start_and_weighted_after():
    x, _ = video_pair()
    last_layer = torch.randn(3, 3, requires_grad=True)
    recon = x + torch.einsum("ij,bjthw->bithw", last_layer, x) * 0.1
    logits_fake = recon.mean(dim=(1, 2)) * 2.0
    loss = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=0.0, disc_start=5, disc_weight=0.5))
    before = loss.generator_loss(x, recon, posterior(), 4, logits_fake, last_layer)
    after = loss.generator_loss(x, recon, posterior(), 5, logits_fake, last_layer)
    assert before["generator"].item() == 0.0 and before["adaptive_weight"].item() == 0.0
    assert after["generator"].item() == pytest.approx(-logits_fake.mean().item())
    assert after["adaptive_weight"].item() > 0
    expected = after["reconstruction"] + 0.5 * after["adaptive_weight"] * after["generator"]
    assert after["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="logits_fake"):
        loss.generator_loss(x, recon, posterior(), 5)
