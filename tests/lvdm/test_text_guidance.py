"""Caption dropout, batched classifier-free guidance, and the text trainer (LVDM §5)."""

from __future__ import annotations

import copy

import pytest
import torch

from lvdm.diffusion.sampling import sample_latents
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.diffusion.text_guidance import drop_captions, text_guided
from lvdm.text_diffusion_training import TextDiffusionTrainer
from lvdm.unet import UNet3D

TINY_T2V = dict(
    model_channels=16,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(2,),
    num_heads=2,
    norm_groups=8,
    context_dim=12,
    temporal_length=4,
    use_scale_shift_norm=False,
    temporal_transformer=True,
)


class CountingModel(torch.nn.Module):
    """ε = x·mean(context) + t/1000: depends on the text, and records every batch size it is called with."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x, t, *, context, noise_level=None):
        self.batches.append(x.shape[0])
        scale = context.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)
        extra = 0 if noise_level is None else noise_level.view(-1, 1, 1, 1, 1) / 100
        return x[:, :2] * scale + t.view(-1, 1, 1, 1, 1) / 1000 + extra


def test_caption_dropout_replaces_whole_captions_at_rate_p() -> None:
    context, null = torch.randn(4000, 3, 2), torch.zeros(3, 2)
    generator = torch.Generator().manual_seed(0)
    dropped = drop_captions(context, null, 0.1, generator).flatten(1)
    is_null, kept = (dropped == 0).all(dim=1), (dropped == context.flatten(1)).all(dim=1)
    assert bool((is_null | kept).all()) and 0.08 < is_null.float().mean() < 0.12
    assert torch.equal(drop_captions(context, null, 0.0, generator), context)
    assert bool((drop_captions(context, null, 1.0, generator) == 0).all())


def test_guidance_is_one_doubled_forward_equal_to_two_separate_ones() -> None:
    model = CountingModel()
    x, t = torch.randn(3, 2, 2, 4, 4), torch.tensor([1, 50, 999])
    context, null = torch.randn(3, 5, 4) + 1, torch.randn(5, 4)
    eps = text_guided(model, context, null, 15.0)(x, t)
    assert model.batches == [6]
    eps_c, eps_u = model(x, t, context=context), model(x, t, context=null.expand(3, 5, 4))
    torch.testing.assert_close(eps, eps_u + 15.0 * (eps_c - eps_u))
    model.batches.clear()
    torch.testing.assert_close(text_guided(model, context, null, 1.0)(x, t), eps_c)
    assert model.batches == [3]
    with pytest.raises(ValueError, match="guidance_scale"):
        text_guided(model, context, null, 0.5)


def test_text_guidance_composes_with_the_mask_guidance_of_long_videos() -> None:
    """Frame guidance doubles the batch (with its noise levels), text guidance doubles it again."""
    model = CountingModel()
    schedule = NoiseSchedule.linear(timesteps=20)
    context, null = torch.randn(2, 5, 4), torch.randn(5, 4)
    mask = torch.tensor([[True, False], [True, False]])
    out = sample_latents(
        text_guided(model, context, null, 7.5),
        (2, 2, 2, 4, 4),
        schedule,
        steps=3,
        z_cond=torch.randn(2, 2, 2, 4, 4),
        mask=mask,
        noise_level=5,
        guidance_weight=0.5,
        takes_noise_level=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == (2, 2, 2, 4, 4) and torch.isfinite(out).all()
    assert set(model.batches) == {8}


def _trainer(caption_dropout: float) -> TextDiffusionTrainer:
    torch.manual_seed(0)
    model = UNet3D(**TINY_T2V)
    with torch.no_grad():  # a trained network: a fresh one outputs zeros (zero-initialised last conv)
        for parameter in model.parameters():
            parameter.normal_(0, 0.1)
    return TextDiffusionTrainer(
        model,
        NoiseSchedule.linear(timesteps=100),
        null_context=torch.zeros(5, 12),
        caption_dropout=caption_dropout,
        loss_type="l2",
        seed=3,
    )


def test_text_trainer_feeds_the_captions_and_drops_them() -> None:
    latents = torch.randn(2, 4, 2, 8, 8)
    first, second = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    # Every caption dropped: the two contexts make no difference to the step.
    assert _trainer(1.0).step(latents, first)["loss"] == _trainer(1.0).step(latents, second)["loss"]
    # None dropped: the text reaches the network.
    assert _trainer(0.0).step(latents, first)["loss"] != _trainer(0.0).step(latents, second)["loss"]


def test_text_trainer_resumes_bit_for_bit() -> None:
    latents, context = torch.randn(2, 4, 2, 8, 8), torch.randn(2, 5, 12)
    run = _trainer(0.5)
    run.step(latents, context)
    saved = copy.deepcopy(run.state_dict())
    expected = run.step(latents, context)["loss"]
    resumed = _trainer(0.5)
    resumed.load_state_dict(saved)
    assert resumed.step(latents, context)["loss"] == expected
    with pytest.raises(ValueError, match="context has shape"):
        resumed.step(latents, context[:1])


def test_a_text_prediction_unet_trains_and_samples_with_masks_and_captions_together() -> None:
    """Issue 18 item 1, "text joins the mask conditioning": one T2V UNet with the mask channel and
    the noise-level embedding, started from the unconditional T2V one, trains on masks + captions
    and samples with text and frame guidance; the given frame comes out exactly."""
    from lvdm.diffusion.masks import frames_mask, prediction_mask
    from lvdm.unet import init_from_unconditional

    torch.manual_seed(0)
    pred = UNet3D(**TINY_T2V | {"in_channels": 5, "max_noise_level": 10})
    init_from_unconditional(pred, UNet3D(**TINY_T2V).state_dict())
    with torch.no_grad():  # a trained network: a fresh one outputs zeros (zero-initialised last conv)
        for parameter in pred.parameters():
            parameter.normal_(0, 0.1)
    losses = []
    for context in (torch.randn(2, 5, 12), torch.randn(2, 5, 12)):
        trainer = TextDiffusionTrainer(
            copy.deepcopy(pred),
            NoiseSchedule.linear(timesteps=100),
            null_context=torch.zeros(5, 12),
            caption_dropout=0.0,
            mask_sampler=lambda b, t, g: prediction_mask(b, t, k=1, p=1.0, generator=g),
            max_noise_level=10,
            seed=3,
        )
        logs = trainer.step(torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1)), context)
        assert logs["conditioned_fraction"] == 1.0
        losses.append(logs["loss"])
    assert losses[0] != losses[1]  # the captions reach the masked model

    z_cond = torch.randn(2, 4, 3, 8, 8)
    out = sample_latents(
        text_guided(pred.eval(), torch.randn(2, 5, 12), torch.zeros(5, 12), 3.0),
        (2, 4, 3, 8, 8),
        NoiseSchedule.linear(timesteps=100),
        steps=2,
        z_cond=z_cond,
        mask=frames_mask(2, 3, [0]),
        noise_level=5,
        guidance_weight=0.5,
        takes_noise_level=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(out[:, :, 0], z_cond[:, :, 0]) and torch.isfinite(out).all()
