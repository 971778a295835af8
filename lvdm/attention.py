"""The one multi-head attention of the LVDM UNet: spatial, temporal and cross attention.

The official release keeps several copies of attention that differ by a flag (a spatial
`QKVAttention`, a temporal `QKVAttention_temporal`, SD's `CrossAttention`, ...). Here there is
one module over tokens `b n c`; the blocks in `lvdm/unet.py` say with `einops.rearrange`
which axis becomes the token axis: `(b t) (h w) c` for space, `(b h w) t c` for time, and
the text tokens `b m d` as `context` for cross attention.

Temporal attention in LVDM (He et al. 2022, §3.2) carries learned *relative position*
tables for keys and for values (Shaw et al. 2018), indexed by the clipped distance k - q.
The key table is an additive bias to the logits, in one of two conventions
(`relative_key`): "standard" (Shaw et al.) `(q_i·k_j + q_i·r_k[clip(j − i)]) / √d`, or
"official", the term the released LVDM checkpoints were trained with,
`(q_i·k_j) / √d + (q_j·r_k[clip(i − j)]) / d^(1/4)`: the *key* frame's query against the
negated distance, scaled by d^(-1/4) only (the release scales q and k by d^(-1/4) each, then
adds an einsum of the scaled q with the key table whose output axes are swapped). No weight
mapping turns one into the other, so a network must run with the convention it was trained
with. The value table adds Σ_j a_ij · r_v(j - i) to the output (the same in both), which
needs the attention weights `a` themselves, so that path computes them explicitly (a
sequence is only t long); every other path is one call of
`torch.nn.functional.scaled_dot_product_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn

RELATIVE_KEY_CONVENTIONS = ("standard", "official")


class Attention(nn.Module):
    """Multi-head attention from tokens `x: b n dim` to `context: b m context_dim` (default: `x`).

    Args:
        dim: token width; also the width of q, k, v and the output (head width = dim / heads).
        heads: number of heads.
        context_dim: width of the context tokens for cross attention; None means self-attention.
        bias: bias on the q, k, v projections. The LVDM blocks have it (the official 1x1 qkv
            convolution); Stable Diffusion's transformer does not, so its weights load as they are.
        max_distance: if set, learned relative position tables for keys and values of shape
            `(2 * max_distance + 1, dim / heads)`, shared by the heads, indexed by k - q clipped
            to ±max_distance (LVDM's temporal attention, `temporal_length` = max_distance).
        relative_key: how the key table enters the logits, "standard" or "official" (see the
            module docstring); only with `max_distance`. "official" is self-attention only (its
            term reads the query at every key position).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        context_dim: int | None = None,
        bias: bool = True,
        max_distance: int | None = None,
        relative_key: str = "standard",
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"Attention: heads={heads} does not divide dim={dim}")
        if relative_key not in RELATIVE_KEY_CONVENTIONS:
            raise ValueError(
                f"Attention: relative_key={relative_key!r}; choose one of {RELATIVE_KEY_CONVENTIONS}"
            )
        if relative_key == "official" and context_dim is not None:
            raise ValueError(
                "Attention: relative_key='official' reads q at the key positions: self-attention only"
            )
        self.heads = heads
        self.head_width = dim // heads
        context_dim = dim if context_dim is None else context_dim
        # Separate q, k, v (not one fused qkv) so one layout serves self- and cross attention;
        # the parameter count equals the official fused 1x1 convolution's.
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_k = nn.Linear(context_dim, dim, bias=bias)
        self.to_v = nn.Linear(context_dim, dim, bias=bias)
        self.to_out = nn.Linear(dim, dim)
        self.max_distance = max_distance
        self.key_convention = relative_key
        if max_distance is not None:
            self.relative_key = nn.Parameter(torch.empty(2 * max_distance + 1, self.head_width))
            self.relative_value = nn.Parameter(torch.empty(2 * max_distance + 1, self.head_width))
            # The official RelativePosition initialises its table with xavier_uniform_.
            nn.init.xavier_uniform_(self.relative_key)
            nn.init.xavier_uniform_(self.relative_value)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        q, k, v = (
            rearrange(proj(src), "b n (heads d) -> b heads n d", heads=self.heads)
            for proj, src in ((self.to_q, x), (self.to_k, context), (self.to_v, context))
        )
        if self.max_distance is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = self._relative_attention(q, k, v)
        return self.to_out(rearrange(out, "b heads n d -> b n (heads d)"))

    def _relative_attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention with the relative key bias (either convention) and the value term Σ_j a_ij r_v(j-i)."""
        index = relative_distance_index(q.shape[-2], k.shape[-2], self.max_distance, q.device)  # i j
        relative_value = self.relative_value[index]  # i j d
        scale = self.head_width**-0.5
        logits = (q @ rearrange(k, "b h j d -> b h d j")) * scale
        if self.key_convention == "standard":
            key_term = einsum(q, self.relative_key[index], "b h i d, i j d -> b h i j") * scale
        else:
            # The same square index read the other way round: index[j, i] = clip(i - j) + L, the
            # row that the key frame j's query q_j meets for query frame i.
            key_term = einsum(q, self.relative_key[index], "b h j d, j i d -> b h i j") * scale**0.5
        # Softmax in at least float32 (half-precision logits), float64 kept as it is.
        dtype = torch.promote_types(logits.dtype, torch.float32)
        weights = (logits + key_term).softmax(dim=-1, dtype=dtype).to(v.dtype)
        return weights @ v + einsum(weights, relative_value, "b h i j, i j d -> b h i d")


def relative_distance_index(n_queries: int, n_keys: int, max_distance: int, device: torch.device) -> Tensor:
    """`(n_queries, n_keys)` row of each (query i, key j) pair in a relative table: clip(j - i) + max.

    Clipping makes the tables work for clips of any length: frames farther apart than
    `max_distance` share the outermost row, as in the paper's longer-than-training sampling.
    """
    distance = torch.arange(n_keys, device=device)[None, :] - torch.arange(n_queries, device=device)[:, None]
    return distance.clamp(-max_distance, max_distance) + max_distance
