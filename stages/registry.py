"""Every stage the runner knows, by name. A pipeline file lists which of them it runs."""

from __future__ import annotations

from stages import (
    cache_latents,
    cache_t2v_latents,
    evaluate,
    evaluate_t2v,
    evaluate_t2v_zero_shot,
    sample,
    sample_t2v,
    shard,
    train_autoencoder,
    train_interp,
    train_pred,
    train_t2v,
    train_uncond,
)
from stages.contract import Stage

STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        shard.STAGE,
        train_autoencoder.STAGE,
        cache_latents.STAGE,
        train_uncond.STAGE,
        train_pred.STAGE,
        train_interp.STAGE,
        cache_t2v_latents.STAGE,
        train_t2v.STAGE,
        sample_t2v.STAGE,
        evaluate_t2v.STAGE,
        evaluate_t2v_zero_shot.STAGE,
        sample.STAGE,
        evaluate.STAGE,
    )
}
