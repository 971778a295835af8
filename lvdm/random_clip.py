"""A small, randomly initialised CLIP text encoder, saved as the real one is, with CLIP's real vocabulary.

Where no pretrained text encoder exists (no hub reaches these machines, and the synthetic demo
needs none), a frozen random CLIP text transformer still maps each caption to distinct, fixed
tokens (`b m d`) that a UNet's cross-attention learns to read; writing it in transformers'
layout means it is then opened exactly as CLIP ViT-L/14 is (`lvdm.text_encoder.TextEncoder`).

The vocabulary comes from the BPE merges open_clip ships (`bpe_simple_vocab_16e6.txt.gz`, the
file OpenAI's CLIP tokenizer reads); `vocab.json` and `merges.txt` in transformers' layout are
derived from it exactly as CLIP builds its vocabulary (256 byte symbols, the same with `</w>`,
one token per merge, then the start and end tokens: 49,408 ids), so transformers'
`CLIPTokenizer` reads the two files `openai/clip-vit-large-patch14` ships. The file is located
without importing open_clip (which would import timm); transformers is imported when called.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import torch

VOCAB_SIZE = 49_408
START, END = "<|startoftext|>", "<|endoftext|>"


def _bpe_file() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "a random CLIP text encoder needs CLIP's BPE vocabulary, which open_clip_torch ships: "
            "pip install open_clip_torch==3.3.0 (or give a pretrained CLIP folder as t2v.text_encoder)"
        )
    return Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    ranges = (("!", "~"), ("¡", "¬"), ("®", "ÿ"))
    printable = [b for first, last in ranges for b in range(ord(first), ord(last) + 1)]
    codes, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


def write_clip_tokenizer(folder: Path) -> None:
    """`vocab.json` + `merges.txt` of CLIP's tokenizer, derived from open_clip's BPE file."""
    lines = gzip.open(_bpe_file()).read().decode("utf-8").split("\n")
    merges = lines[1 : VOCAB_SIZE - 256 * 2 - 2 + 1]  # CLIP's own slice: the first line is a header
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [START, END]
    assert len(vocab) == VOCAB_SIZE
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def write_random_clip(
    folder: str | Path, width: int = 32, layers: int = 2, heads: int = 4, seed: int = 0
) -> Path:
    """A `CLIPTextModel` of `width` and `layers` (random, from `seed`) + tokenizer, as `save_pretrained`
    writes them, in `folder`. The same arguments give the same weights."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    write_clip_tokenizer(folder)
    config = CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        bos_token_id=VOCAB_SIZE - 2,
        eos_token_id=VOCAB_SIZE - 1,
        pad_token_id=VOCAB_SIZE - 1,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CLIPTextModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt")).save_pretrained(folder)
    return folder
