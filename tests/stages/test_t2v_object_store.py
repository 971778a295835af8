"""Text-to-video on a workdir on an object store (a real moto S3 server): `train_t2v` builds its
frozen random CLIP in the stage folder there, and everything that opens a trained text-to-video
model (the training workers, `sample_t2v`, `lvdm sample --prompt`) reads it back from there."""

from __future__ import annotations

import torch

from data_prep import storage
from lvdm.diffusion.schedule import NoiseSchedule
from pipelines.config import RandomTextEncoderSection, T2VSection
from stages.contract import read_manifest
from stages.t2v_model import TextVideoModel, open_text_encoder
from stages.train_t2v import RANDOM_TEXT_WEIGHTS, text_encoder_folder
from tests.conftest import S3_BUCKET
from tests.fixtures.t2v_stage import FT, LATENT_SHAPE, UNET, write_t2v_stage


def test_random_text_encoder_is_built_on_the_store_and_the_model_opens_from_there(s3, one_thread) -> None:
    stage = f"s3://{S3_BUCKET}/t2v/stages/train_t2v-abc"
    options = RandomTextEncoderSection(width=UNET["context_dim"], layers=1, heads=2)
    folder = text_encoder_folder(T2VSection(random_text_encoder=options), stage)
    assert folder == f"{stage}/text_encoder" and storage.is_file(f"{folder}/{RANDOM_TEXT_WEIGHTS}")
    published = storage.walk_files(folder)
    assert text_encoder_folder(T2VSection(random_text_encoder=options), stage) == folder  # built once
    assert storage.walk_files(folder) == published
    assert open_text_encoder(folder).encode(["a red circle moving left"]).shape == (
        1,
        77,
        UNET["context_dim"],
    )

    write_t2v_stage(stage, text_encoder=folder)  # the UNet, the autoencoder and the manifest beside it
    model = TextVideoModel.load(read_manifest(stage), torch.device("cpu"))
    video = model.sample(
        ["a red circle moving left"],
        NoiseSchedule.linear(timesteps=100, linear_start=0.00085, linear_end=0.012),
        {"sampler": "ddim", "steps": 2, "eta": 0.0},
        generator=torch.Generator().manual_seed(0),
        frames=3,
    )
    assert model.ft == FT
    assert video.shape == (1, 3, 3, 2 * LATENT_SHAPE[2], 2 * LATENT_SHAPE[3])  # 2 latents, 1 frame cropped
