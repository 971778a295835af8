"""CLIP's text tower from a release checkpoint (`cond_stage_model.transformer.*`) for transformers.

The LVDM release's `FrozenCLIPEmbedder` (like SD 1.x's) holds `transformers.CLIPTextModel` loaded
from `openai/clip-vit-large-patch14`, so its tensors are that class's state dict in the naming
of transformers 4.x: under `text_model.`, with a persistent `position_ids` buffer (before 4.31).
transformers 5 drops the `text_model.` level and builds `position_ids` itself: the rule below maps
whichever naming the installed version uses, and the buffer is checked to be 0..n-1 and dropped.
The tokenizer is not in the checkpoint; it is CLIP's BPE vocabulary, which `lvdm.random_clip`
writes in transformers' layout, so the vocabulary must be CLIP's 49,408 tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from lvdm.pretrained.release_import import ImportReport, ReleaseImportError, convert
from lvdm.random_clip import VOCAB_SIZE

TEXT_PREFIX = "cond_stage_model.transformer."
CLIP_HEAD_WIDTH = 64  # every OpenAI CLIP text tower (ViT-L/14: 768 wide, 12 heads); not in the shapes


def clip_text_config(text: Mapping[str, Tensor], heads: int | None = None) -> dict:
    """`transformers.CLIPTextConfig` kwargs of CLIP text weights (named after `TEXT_PREFIX`).

    Heads are not in the shapes: `heads`, else width / 64, OpenAI CLIP's head width.
    """

    def shape(name: str) -> tuple[int, ...]:
        if f"text_model.{name}" not in text:
            raise ReleaseImportError(f"the CLIP text encoder lacks {TEXT_PREFIX}text_model.{name}")
        return tuple(text[f"text_model.{name}"].shape)

    vocab, width = shape("embeddings.token_embedding.weight")
    if vocab != VOCAB_SIZE:
        raise ReleaseImportError(
            f"the text encoder's vocabulary has {vocab} tokens, not CLIP's {VOCAB_SIZE}: its tokenizer "
            "cannot be rebuilt from CLIP's BPE merges"
        )
    layers = len({k.split(".")[3] for k in text if k.startswith("text_model.encoder.layers.")})
    heads = heads or width // CLIP_HEAD_WIDTH
    if not heads or width % heads:
        raise ReleaseImportError(f"CLIP text width {width}: give its number of attention heads")
    return {
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": shape("encoder.layers.0.mlp.fc1.weight")[0],
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": shape("embeddings.position_embedding.weight")[0],
        "hidden_act": "quick_gelu",  # OpenAI CLIP's activation
        "layer_norm_eps": 1e-5,
        "bos_token_id": VOCAB_SIZE - 2,
        "eos_token_id": VOCAB_SIZE - 1,
        "pad_token_id": VOCAB_SIZE - 1,  # FrozenCLIPEmbedder pads with <|endoftext|>
    }


def clip_text_state(
    text: Mapping[str, Tensor], config: dict, *, source: str, report: ImportReport
) -> dict[str, Tensor]:
    """The state dict of `CLIPTextModel(CLIPTextConfig(**config))` in this transformers' naming.

    transformers 5 names the layers without the `text_model.` level the release's (4.x) file has;
    the rule adds it back for whichever naming the installed version uses.
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    text = dict(text)
    position_ids = text.pop("text_model.embeddings.position_ids", None)
    if position_ids is not None:
        expected = torch.arange(config["max_position_embeddings"])
        if not torch.equal(position_ids.reshape(-1).round().long(), expected):
            raise ReleaseImportError(
                f"{source}: {TEXT_PREFIX}text_model.embeddings.position_ids is not 0..{len(expected) - 1}: "
                "the release's text encoder would not compute CLIP's function"
            )
        report.ignore("position_ids", "CLIP position_ids buffer (checked 0..76; rebuilt by transformers)")
    with torch.device("meta"):
        skeleton = CLIPTextModel(CLIPTextConfig(**config))

    def rule(name: str) -> tuple[str, None]:
        return (name if name.startswith("text_model.") else f"text_model.{name}"), None

    return convert(text, skeleton, rule, source=f"{source} (CLIP text encoder)", report=report)
