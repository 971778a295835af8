"""The numpy-only unpickler against pickles written opcode by opcode, as an attacker would.

numpy's own `dtype.__setstate__` trusts the flags, item size and fields in the file: a float64
whose state sets NPY_ITEM_REFCOUNT is taken to hold PyObject pointers, so its raw bytes would be
dereferenced as objects. These pickles are the genuine array pickle with one field of the dtype's
state rewritten.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import pytest

from lvdm.pretrained.safe_unpickle import UnsafePickleError, load_numpy_pickle

FLOAT64_STATE = (3, "<", None, None, None, -1, -1, 0)  # what np.dtype("f8").__reduce__() gives


def _unicode(text: str) -> bytes:
    data = text.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _value(value) -> bytes:
    if value is None:
        return pickle.NONE
    if isinstance(value, bool):
        return pickle.NEWTRUE if value else pickle.NEWFALSE
    if isinstance(value, int):
        return pickle.BININT + struct.pack("<i", value)
    if isinstance(value, str):
        return _unicode(value)
    if isinstance(value, bytes):
        return pickle.BINBYTES + struct.pack("<I", len(value)) + value
    if isinstance(value, tuple):
        return pickle.MARK + b"".join(_value(v) for v in value) + pickle.TUPLE
    raise TypeError(value)


def _array_pickle(values: np.ndarray, spec: str, dtype_state: tuple) -> bytes:
    """`{"w": values}` pickled the way numpy does (protocol 2 opcodes), with `dtype_state` as the
    state that BUILD gives the dtype."""
    dtype = (
        pickle.GLOBAL + b"numpy\ndtype\n" + _value((spec, False, True)) + pickle.REDUCE
        + _value(dtype_state) + pickle.BUILD
    )  # fmt: skip
    array = (
        pickle.GLOBAL + b"numpy._core.multiarray\n_reconstruct\n"
        + pickle.MARK + pickle.GLOBAL + b"numpy\nndarray\n" + _value((0,)) + _value(b"b") + pickle.TUPLE
        + pickle.REDUCE
        + pickle.MARK + _value(1) + _value(values.shape) + dtype + _value(False) + _value(values.tobytes())
        + pickle.TUPLE + pickle.BUILD
    )  # fmt: skip
    data = pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + _unicode("w") + array + pickle.SETITEM + pickle.STOP
    pickletools.dis(data, out=io.StringIO())  # a well-formed pickle: only the content is hostile
    return data


def _write(tmp_path: Path, data: bytes) -> Path:
    file = tmp_path / "crafted.ckpt"
    file.write_bytes(data)
    return file


def test_hand_built_pickle_with_numpys_own_dtype_state_loads(tmp_path):
    values = np.array([1.5, -2.0, 3.25])
    assert np.dtype("f8").__reduce__()[2] == FLOAT64_STATE
    flat = load_numpy_pickle(_write(tmp_path, _array_pickle(values, "f8", FLOAT64_STATE)))
    assert flat["w"].dtype == np.float64 and np.array_equal(flat["w"], values)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (7, 1),  # flags: NPY_ITEM_REFCOUNT, "holds object references"
        (7, 0x3F),  # flags: every object/pointer flag
        (5, 4),  # item size rewritten
        (6, 1),  # alignment rewritten
        (3, ("x",)),  # field names on a scalar dtype
        (1, "|"),  # byte order "not applicable" on a float
    ],
)
def test_dtype_whose_state_was_rewritten_is_refused(tmp_path, field, value):
    state = FLOAT64_STATE[:field] + (value,) + FLOAT64_STATE[field + 1 :]
    file = _write(tmp_path, _array_pickle(np.arange(3.0), "f8", state))
    with pytest.raises(UnsafePickleError, match=r"dtype 'f8' with state .* refused") as info:
        load_numpy_pickle(file)
    assert str(file) in str(info.value)


def test_big_endian_array_is_still_read(tmp_path):
    values = np.arange(4, dtype=">f4")
    state = np.dtype(">f4").__reduce__()[2]
    flat = load_numpy_pickle(_write(tmp_path, _array_pickle(values, "f4", state)))
    assert np.array_equal(flat["w"], values)


def test_array_bytes_that_do_not_fill_the_shape_are_refused(tmp_path):
    data = _array_pickle(np.arange(3.0), "f8", FLOAT64_STATE)
    data = data.replace(struct.pack("<i", 3) + pickle.TUPLE, struct.pack("<i", 4) + pickle.TUPLE, 1)
    with pytest.raises(UnsafePickleError, match="does not match its 24 bytes"):
        load_numpy_pickle(_write(tmp_path, data))


def test_calling_numpy_ndarray_directly_is_refused(tmp_path):
    # ndarray((n,), "f8") would hand back n uninitialised floats of the process's heap.
    data = (
        pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + _unicode("w")
        + pickle.GLOBAL + b"numpy\nndarray\n" + _value(((1024,), "f8")) + pickle.REDUCE
        + pickle.SETITEM + pickle.STOP
    )  # fmt: skip
    with pytest.raises(UnsafePickleError, match="calling numpy.ndarray refused"):
        load_numpy_pickle(_write(tmp_path, data))


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_numpys_own_pickles_of_every_plain_dtype_load(tmp_path, protocol):
    tree = {name: np.arange(6).astype(name).reshape(2, 3) for name in ("?", "i1", "u2", "<i8", ">f4", "f8")}
    tree["fortran"] = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    flat = load_numpy_pickle(_write(tmp_path, pickle.dumps(tree, protocol=protocol)))
    for name, value in tree.items():
        assert flat[name].dtype == value.dtype and np.array_equal(flat[name], value)
