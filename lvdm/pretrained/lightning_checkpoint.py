"""Read the tensors of a PyTorch Lightning `.ckpt` without running any of its pickled code.

A release checkpoint is `torch.save`'s zip: `<name>/data.pkl` (a pickle) beside one raw file
per storage (`<name>/data/<key>`). Its pickle names Lightning, OmegaConf and optimizer objects
besides tensors, so `torch.load(weights_only=True)` refuses it and `weights_only=False` would
run whatever callable it names. This reader unpickles `data.pkl` with a restricted unpickler
(the approach of `lvdm.pretrained.safe_unpickle`, here for torch's format):

- the tensor rebuild functions, the legacy storage types and `collections.OrderedDict` are
  replaced by our own builders that only record what the file says (storage key, dtype,
  offset, size, stride);
- every other global the pickle names becomes an inert placeholder class: "calling" it,
  building it or setting its state records the arguments and never runs anything.

Tensors are then built from the raw storage bytes with `torch.frombuffer`, lazily, so the
optimizer state of a 550M-parameter checkpoint is never read into memory.
"""

from __future__ import annotations

import collections
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lvdm.pretrained.safe_unpickle import UnsafePickleError

# torch.save writes a storage as persistent id ('storage', <legacy storage class>, key, location,
# numel); the class names its dtype.
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: torch.dtype
    numel: int


@dataclass(frozen=True)
class LazyTensor:
    """A tensor the file describes: `storage`'s elements at `offset` with `size` and `stride`."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.size


class Inert:
    """Stands for a global the checkpoint names that is not a tensor part: records, never runs.

    `find_class` makes one subclass per global name (`inert_name` says which), so a pickle's
    REDUCE/NEWOBJ/BUILD/SETITEMS/APPENDS on it only store their arguments here.
    """

    inert_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = object.__new__(cls)
        obj.__dict__["args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Inert:
        return Inert(*args)

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("items", {})[repr(key)] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("list", []).extend(values)

    def __repr__(self) -> str:
        return f"<inert {self.inert_name}>"


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> LazyTensor:
    if not isinstance(storage, _StorageRef):
        raise UnsafePickleError(f"tensor storage {storage!r} is not a storage of this file")
    if not (isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)):
        raise UnsafePickleError("tensor offset/size/stride are not integers")
    if len(size) != len(stride) or not all(isinstance(n, int) and n >= 0 for n in (*size, *stride)):
        raise UnsafePickleError(f"tensor size {size} / stride {stride} refused")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) if math.prod(size) else offset
    if offset < 0 or (math.prod(size) and last >= storage.numel):
        raise UnsafePickleError(f"tensor of size {size} at offset {offset} runs past its storage")
    return LazyTensor(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *rest: Any) -> Any:
    return data


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    if args:  # torch writes OrderedDict() and fills it with SETITEMS
        raise UnsafePickleError("OrderedDict with constructor arguments refused")
    return collections.OrderedDict()


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, name: str):
        super().__init__(file)
        self.name = name
        self.inert: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        qualified = f"{module}.{name}"
        self.inert.add(qualified)
        return type(f"Inert[{qualified}]", (Inert,), {"inert_name": qualified})

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"{self.name}: persistent id {pid!r} is not a torch storage")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"{self.name}: storage type {storage_type!r} refused")
        if not (isinstance(key, str) and key.isalnum() and isinstance(numel, int) and numel >= 0):
            raise UnsafePickleError(f"{self.name}: storage {key!r} of {numel!r} elements refused")
        return _StorageRef(key, storage_type.dtype, numel)


@dataclass
class CheckpointContents:
    """What a checkpoint holds: its top-level object (tensors as `LazyTensor`), the globals that
    became inert placeholders, and a way to build the tensors."""

    path: Path
    root: Any
    inert_globals: set[str]
    _archive: str

    def state_dict(self) -> dict[str, LazyTensor]:
        """The Lightning `state_dict` (or the top-level dict itself, for a plain state dict)."""
        root = self.root
        if isinstance(root, dict) and isinstance(root.get("state_dict"), dict):
            root = root["state_dict"]
        if not isinstance(root, dict):
            raise UnsafePickleError(
                f"{self.path}: holds a {type(root).__name__}, not a Lightning checkpoint (a dict with "
                "'state_dict') or a state dict"
            )
        tensors = {k: v for k, v in root.items() if isinstance(k, str) and isinstance(v, LazyTensor)}
        if not tensors:
            raise UnsafePickleError(f"{self.path}: its state_dict holds no tensors")
        return tensors

    def load(self, tensors: dict[str, LazyTensor]) -> dict[str, torch.Tensor]:
        """Build `tensors` (name -> LazyTensor) from the storage bytes; storages read once each."""
        built: dict[str, torch.Tensor] = {}
        storages: dict[str, torch.Tensor] = {}
        with zipfile.ZipFile(self.path) as archive:
            for name, lazy in tensors.items():
                ref = lazy.storage
                if ref.key not in storages:
                    raw = bytearray(archive.read(f"{self._archive}data/{ref.key}"))
                    itemsize = torch.empty((), dtype=ref.dtype).element_size()
                    if len(raw) != ref.numel * itemsize:
                        raise UnsafePickleError(
                            f"{self.path}: storage {ref.key} has {len(raw)} bytes, expected "
                            f"{ref.numel} x {itemsize}"
                        )
                    storages[ref.key] = (
                        torch.frombuffer(raw, dtype=ref.dtype) if raw else torch.empty(0, dtype=ref.dtype)
                    )
                flat = storages[ref.key]
                built[name] = flat.as_strided(lazy.size, lazy.stride, lazy.offset).clone()
        return built


def read_checkpoint(path: str | Path) -> CheckpointContents:
    """Unpickle a `torch.save` zip checkpoint's structure without running code (tensors stay lazy)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise UnsafePickleError(
            f"{path}: not a torch.save zip checkpoint (legacy torch < 1.6 files are not read; "
            "re-save it with a current torch first)"
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise UnsafePickleError(f"{path}: expected one <name>/data.pkl in the zip, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist():
            order = archive.read(f"{prefix}byteorder").decode(errors="replace").strip()
            if order != "little":
                raise UnsafePickleError(f"{path}: byte order {order!r}; only little-endian files are read")
        with archive.open(pickles[0]) as file:
            unpickler = _RestrictedUnpickler(file, str(path))
            try:
                root = unpickler.load()
            except UnsafePickleError:
                raise
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
                raise UnsafePickleError(f"{path}: unreadable checkpoint pickle ({err})") from err
    return CheckpointContents(path, root, unpickler.inert, prefix)
