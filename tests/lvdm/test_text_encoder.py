"""lvdm/text_encoder.py: a tiny random CLIP text model saved in the real layout, CLIP's real vocabulary."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from lvdm.text_encoder import MAX_TOKENS, TextEncoder, TextEncoderFolderError
from tests.fixtures.clip_folder import write_tiny_clip


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def encoder(clip_folder: Path) -> TextEncoder:
    return TextEncoder.from_folder(clip_folder)


def test_tokens_are_clips_ids_padded_to_77(encoder: TextEncoder) -> None:
    ids = encoder.tokenize(["a photo of a cat", ""])
    assert ids.shape == (2, MAX_TOKENS)
    # CLIP's ids: <|startoftext|> a photo of a cat <|endoftext|>, then end tokens as padding.
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (ids[0, 7:] == 49407).all() and ids[1, :2].tolist() == [49406, 49407]


def test_long_caption_is_truncated_to_77_tokens(encoder: TextEncoder) -> None:
    ids = encoder.tokenize(["red " * 200])
    assert ids.shape == (1, MAX_TOKENS) and ids[0, -1] == 49407


def test_encode_gives_frozen_last_hidden_state(encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder.train()
    tokens = encoder.encode(["a red circle moving left", "a blue square moving down"])
    assert tokens.shape == (2, MAX_TOKENS, encoder.width) and encoder.width == 32
    assert not tokens.requires_grad and not any(p.requires_grad for p in encoder.parameters())
    assert not encoder.model.training  # no dropout even inside a training loop
    assert torch.equal(tokens[:1], encoder.encode(["a red circle moving left"]))
    assert not torch.allclose(tokens[0], tokens[1])


def test_reads_stable_diffusions_diffusers_layout(
    clip_folder: Path, encoder: TextEncoder, tmp_path: Path
) -> None:
    sd = tmp_path / "sd"
    shutil.copytree(clip_folder, sd / "text_encoder")
    shutil.copytree(clip_folder, sd / "tokenizer")
    tokens = TextEncoder.from_folder(sd).encode(["a cat"])
    assert torch.equal(tokens, encoder.encode(["a cat"]))


def test_folder_without_weights_names_what_to_supply(clip_folder: Path, tmp_path: Path) -> None:
    shutil.copytree(clip_folder, tmp_path / "clip")
    (tmp_path / "clip" / "model.safetensors").unlink()
    expected = r"clip/model\.safetensors.*openai/clip-vit-large-patch14"
    with pytest.raises(TextEncoderFolderError, match=expected):
        TextEncoder.from_folder(tmp_path / "clip")
    with pytest.raises(TextEncoderFolderError, match="missing.*config.json.*vocab.json"):
        TextEncoder.from_folder(tmp_path / "nowhere")
