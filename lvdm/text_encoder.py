"""The frozen CLIP text encoder of LVDM's text-to-video model (§5): captions -> tokens `b m d`.

The release conditions on CLIP ViT-L/14's text transformer (`FrozenCLIPEmbedder`): captions
padded/truncated to 77 tokens, the last hidden state (width 768), never trained. This wraps
`transformers`' `CLIPTokenizer` + `CLIPTextModel`, read from a local folder only: these machines
reach no model hub, and a pipeline must not depend on one at run time.

A folder holds either layout:
- one CLIP folder (`openai/clip-vit-large-patch14` as saved by `save_pretrained`): `config.json`,
  `model.safetensors`, `vocab.json`, `merges.txt`;
- a Stable Diffusion folder in the diffusers layout: `text_encoder/` (config.json,
  model.safetensors) and `tokenizer/` (vocab.json, merges.txt).

Only safetensors weights are read: a `pytorch_model.bin` is a pickle, and nothing user-writable
is unpickled here. `transformers` is imported when a folder is opened, so `lvdm` stays
importable with torch alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

MAX_TOKENS = 77  # CLIP's context length; the release pads and truncates every caption to it
_MODEL_FILES = ("config.json", "model.safetensors")
_TOKENIZER_FILES = ("vocab.json", "merges.txt")


class TextEncoderFolderError(FileNotFoundError):
    """The folder lacks the files of a CLIP text encoder."""


def text_encoder_folders(path: str | Path) -> tuple[Path, Path]:
    """(model folder, tokenizer folder) of a CLIP folder or an SD folder in the diffusers layout.

    Raises TextEncoderFolderError naming the folder and every missing file.
    """
    root = Path(path)
    if (root / "text_encoder").is_dir():
        model_dir, tokenizer_dir = root / "text_encoder", root / "tokenizer"
    else:
        model_dir = tokenizer_dir = root
    missing = [str(model_dir / name) for name in _MODEL_FILES if not (model_dir / name).is_file()]
    missing += [str(tokenizer_dir / n) for n in _TOKENIZER_FILES if not (tokenizer_dir / n).is_file()]
    if missing:
        raise TextEncoderFolderError(
            f"text encoder folder {root}: missing {', '.join(missing)}. Supply CLIP ViT-L/14's text "
            "encoder (openai/clip-vit-large-patch14) saved with transformers' save_pretrained: "
            f"{', '.join(_MODEL_FILES + _TOKENIZER_FILES)} in one folder, or a Stable Diffusion folder "
            "in the diffusers layout (text_encoder/ + tokenizer/). Weights must be safetensors."
        )
    return model_dir, tokenizer_dir


class TextEncoder(nn.Module):
    """Frozen CLIP text transformer: `encode(captions) -> b m d` (m = 77, d = hidden width)."""

    def __init__(self, model: nn.Module, tokenizer, max_tokens: int = MAX_TOKENS):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    @classmethod
    def from_folder(cls, path: str | Path) -> TextEncoder:
        """Open a local CLIP (or diffusers SD) folder; never contacts a hub."""
        model_dir, tokenizer_dir = text_encoder_folders(path)
        from transformers import CLIPTextModel, CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        model = CLIPTextModel.from_pretrained(model_dir, local_files_only=True, use_safetensors=True)
        return cls(model, tokenizer, min(MAX_TOKENS, model.config.max_position_embeddings))

    @property
    def width(self) -> int:
        """d of the tokens: the UNet's `context_dim`."""
        return self.model.config.hidden_size

    def tokenize(self, captions: Sequence[str]) -> Tensor:
        """`b m` token ids, padded (with CLIP's end token) and truncated to `max_tokens`."""
        ids = self.tokenizer(
            list(captions), padding="max_length", truncation=True, max_length=self.max_tokens
        )["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    @torch.no_grad()
    def encode_tokens(self, token_ids: Tensor) -> Tensor:
        """`b m` ids -> `b m d`: the last hidden state (the release's FrozenCLIPEmbedder)."""
        device = next(self.model.parameters()).device
        return self.model(input_ids=token_ids.to(device)).last_hidden_state

    def encode(self, captions: Sequence[str]) -> Tensor:
        """Captions -> `b m d` text tokens for the UNet's cross-attention."""
        return self.encode_tokens(self.tokenize(captions))

    def train(self, mode: bool = True) -> TextEncoder:
        # Frozen: a trainer's `.train()` must not switch on the encoder's dropout.
        super().train(mode)
        self.model.eval()
        return self
