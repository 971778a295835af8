"""Importing the released LVDM checkpoints: name map, restricted loader, round trip, errors.

The release's tensor names and shapes come from tests/data/lvdm_release_names.json (made from
github.com/YingqingHe/LVDM@d251dcc by tests/data/make_release_names.py); the checkpoints here
are built from that list with random tensors, in the release's Lightning layout, so no test
needs the release's code.
"""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
import torch
import yaml

from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from lvdm.pretrained.lightning_checkpoint import read_checkpoint
from lvdm.pretrained.release_import import (
    import_release_checkpoint,
    release_autoencoder_name,
    release_name_map,
    release_unet_name,
)
from lvdm.pretrained.release_structure import (
    ReleaseImportError,
    autoencoder_kwargs_from_release_config,
    infer_unet_kwargs,
    unet_kwargs_from_release_config,
)
from lvdm.unet import UNet3D
from pipelines.cli import main
from stages.autoencoder_file import load_autoencoder, save_autoencoder
from stages.unet_file import load_unet

NAMES = json.loads((Path(__file__).parents[1] / "data" / "lvdm_release_names.json").read_text())["networks"]
UNETS = [k for k in NAMES if not k.startswith("videoae")]
AUTOENCODERS = [k for k in NAMES if k.startswith("videoae")]


def unet_config(entry: dict) -> dict:
    """The release YAML's shape, around the UNet arguments the names file records."""
    return {"model": {"params": {"unet_config": {"params": entry["unet_config"]}}}}


def autoencoder_config(entry: dict, scale: float | None = None) -> dict:
    dd = entry["ddconfig"]
    encoder = {"n_hiddens": dd["n_hiddens"], "downsample": dd["downsample"], "z_channels": dd["z_channels"]}
    params = {"embed_dim": dd["embed_dim"], "ddconfig": {"encoder": {"params": encoder}}}
    return {"model": {"params": params}}


def is_alias(name: str, names: dict) -> bool:
    """The release's SamePadConv3d registers its conv weight twice: `x.weight` beside `x.conv.weight`."""
    return (
        name.endswith(".weight") and not name.endswith(".conv.weight") and name[:-6] + "conv.weight" in names
    )


def release_tensors(entry: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    names = entry["tensors"]
    tensors = {
        n: torch.randn(shape, generator=generator) for n, shape in names.items() if not is_alias(n, names)
    }
    tensors |= {n: tensors[n[:-6] + "conv.weight"] for n in names if is_alias(n, names)}
    return tensors


class LightningHyperparameters:
    """Stands for the Lightning / OmegaConf objects a release checkpoint pickles by reference."""

    def __init__(self) -> None:
        self.scale_factor = 0.33422927


def diffusion_checkpoint(path: Path, network: dict[str, torch.Tensor]) -> Path:
    """The release's LatentDiffusion layout: raw weights, their EMA copy (dots removed), buffers."""
    state = {f"model.diffusion_model.{k}": v + 1.0 for k, v in network.items()}  # raw != EMA
    state |= {"model_ema.diffusion_model" + k.replace(".", ""): v for k, v in network.items()}
    state |= {
        "model_ema.decay": torch.tensor(0.9999),
        "model_ema.num_updates": torch.tensor(7, dtype=torch.int),
    }
    state |= {"betas": torch.linspace(0.0015, 0.0155, 10), "alphas_cumprod": torch.rand(10)}
    torch.save(
        {
            "epoch": 2,
            "global_step": 1234,
            "state_dict": state,
            "hyper_parameters": LightningHyperparameters(),
        },
        path,
    )
    return path


def autoencoder_checkpoint(path: Path, network: dict[str, torch.Tensor]) -> Path:
    state = dict(network) | {
        "loss.discriminator.main.0.weight": torch.randn(2, 3),
        "loss.logvar": torch.zeros(()),
    }
    torch.save(
        {"global_step": 99, "state_dict": state, "optimizer_states": [{"exp_avg": torch.zeros(4)}]}, path
    )
    return path


@pytest.mark.parametrize("network", UNETS)
def test_every_release_unet_name_maps_to_exactly_one_of_ours(network):
    entry = NAMES[network]
    kwargs = unet_kwargs_from_release_config(unet_config(entry))
    with torch.device("meta"):
        ours = UNet3D(**kwargs).state_dict()
    for ema in (False, True):  # the EMA's dot-less names must not collide either
        release_name_map(ours, release_unet_name, ema=ema)
    wanted = release_name_map(ours, release_unet_name)
    assert set(wanted) == set(entry["tensors"])
    for release_name, targets in wanted.items():
        shape = entry["tensors"][release_name]
        share = torch.Size(shape).numel() // len(targets)  # a fused qkv feeds three of ours
        assert all(ours[name].numel() == share for name, _ in targets), release_name
    assert sum(len(t) for t in wanted.values()) == len(ours)


@pytest.mark.parametrize("network", AUTOENCODERS)
def test_every_release_autoencoder_name_maps_to_exactly_one_of_ours(network):
    entry = NAMES[network]
    names = entry["tensors"]
    with torch.device("meta"):
        model = VideoAutoencoder(
            AutoencoderConfig(**autoencoder_kwargs_from_release_config(autoencoder_config(entry)))
        )
    ours = model.state_dict()
    wanted = release_name_map(ours, release_autoencoder_name)
    assert set(wanted) == {n for n in names if not is_alias(n, names)}
    assert all(list(ours[targets[0][0]].shape) == names[key] for key, targets in wanted.items())
    assert sum(p.numel() for p in model.parameters()) == entry["parameters"]


def test_paper_autoencoder_has_the_release_parameter_count():
    assert sum(p.numel() for p in VideoAutoencoder(AutoencoderConfig.paper()).parameters()) == 19_446_759
    assert NAMES["videoae/paper"]["parameters"] == 19_446_759


def test_unet_import_save_load_round_trip_takes_the_ema_copy(tmp_path):
    entry = NAMES["lvdm_short/small"]
    network = release_tensors(entry)
    ckpt = diffusion_checkpoint(tmp_path / "sky.ckpt", network)
    config = tmp_path / "sky.yaml"
    config.write_text(yaml.safe_dump(unet_config(entry) | {"lightning": {"trainer": {"max_epochs": 1}}}))
    assert (
        main(
            [
                "weights",
                "import",
                str(ckpt),
                "--kind",
                "unet",
                "--out",
                str(tmp_path / "models"),
                "--config",
                str(config),
            ]
        )
        == 0
    )
    model, meta = load_unet(str(tmp_path / "models" / "unet.pt"))
    assert meta["config"]["relative_key"] == "official" and meta["step"] == 1234
    ours = model.state_dict()
    for release_name, targets in release_name_map(ours, release_unet_name).items():
        for name, part in targets:
            source = network[release_name] if part is None else network[release_name].chunk(3)[part]
            assert torch.equal(ours[name], source.reshape(ours[name].shape)), name
    # e.g. the temporal key projection is the second third of the release's fused 1x1 qkv conv
    c = ours["input_blocks.4.1.temporal.attention.to_k.weight"].shape[0]
    assert torch.equal(
        ours["input_blocks.4.1.temporal.attention.to_k.weight"],
        network["input_blocks.4.1.qkv_t.weight"][c : 2 * c, :, 0],
    )

    raw = import_release_checkpoint(str(ckpt), "unet", ema=False).model.state_dict()
    assert torch.equal(raw["out.2.weight"], network["out.2.weight"] + 1.0)


def test_structure_inferred_from_shapes_equals_the_config(tmp_path):
    for network in ("lvdm_short/small", "sky_interp/small", "sky_pred/paper"):
        entry = NAMES[network]
        shapes = {k: torch.empty(v, device="meta") for k, v in entry["tensors"].items()}
        assert infer_unet_kwargs(shapes) == unet_kwargs_from_release_config(unet_config(entry)), network
    pred = release_tensors(NAMES["sky_pred/small"])
    imported = import_release_checkpoint(str(diffusion_checkpoint(tmp_path / "pred.ckpt", pred)), "pred")
    assert imported.kwargs["in_channels"] == 5 and imported.kwargs["max_noise_level"] == 250


def test_autoencoder_import_keeps_scale_shift_and_loads(tmp_path):
    entry = NAMES["videoae/small"]
    network = release_tensors(entry, seed=1)
    ckpt = autoencoder_checkpoint(tmp_path / "ae.ckpt", network)
    config = tmp_path / "videoae.yaml"
    config.write_text(yaml.safe_dump(autoencoder_config(entry)))
    out = tmp_path / "models"
    args = [
        "weights",
        "import",
        str(ckpt),
        "--kind",
        "autoencoder",
        "--out",
        str(out),
        "--config",
        str(config),
    ]
    assert main(args) == 1  # a videoae config has no latent scale / shift: asked for, not made up
    assert main([*args, "--scale", "0.33422927", "--shift", "1.4606637"]) == 0
    model, meta = load_autoencoder(str(out / "autoencoder.pt"))
    assert (meta["scale"], meta["shift"], meta["step"]) == (0.33422927, 1.4606637, 99)
    assert torch.equal(
        model.state_dict()["decoder.levels.0.0.conv.weight"], network["decoder.conv_blocks.0.up.convt.weight"]
    )
    assert torch.equal(model.state_dict()["quant_conv.conv.bias"], network["quant_conv.conv.bias"])


def test_autoencoder_files_without_quant_convs_load_and_compute_as_before(tmp_path):
    torch.manual_seed(0)
    config = AutoencoderConfig(
        hidden=8, channel_multipliers=(1, 2), latent_channels=4, fs=4, ft=2, norm_groups=4
    )
    model = VideoAutoencoder(config).eval()
    path = str(tmp_path / "autoencoder.pt")
    save_autoencoder(path, model, 0.5, 0.1, 3)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if "quant_conv" not in k}
    torch.save(payload, path)  # the layout before the release's quant convs
    loaded, _ = load_autoencoder(path)
    old = VideoAutoencoder(config).eval()  # the old function: no quant convs at all
    old.load_state_dict(model.state_dict())
    video = torch.randn(1, 3, 4, 8, 8)
    with torch.no_grad():
        z = loaded.encode(video).mean
        assert torch.allclose(z, old.encoder(video).chunk(2, dim=1)[0], atol=1e-6)
        assert torch.allclose(loaded.decode(z), old.decoder(z), atol=1e-6)


def test_restricted_loader_reads_tensors_and_never_runs_pickled_code(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (builtins.open, (str(marker), "w"))

    tensor = torch.arange(6.0).reshape(2, 3)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": tensor, "w_t": tensor.t()}, "callbacks": Payload()}, path)
    torch.load(path, weights_only=False)  # the ordinary loader runs it: the file is live
    assert marker.exists()
    marker.unlink()
    contents = read_checkpoint(path)
    tensors = contents.load(contents.state_dict())
    assert not marker.exists()
    assert "io.open" in contents.inert_globals  # builtins.open pickles by its home, io
    assert torch.equal(tensors["w"], tensor) and torch.equal(tensors["w_t"], tensor.t())


def test_wrong_kind_and_wrong_network_say_what_to_do(tmp_path):
    uncond = diffusion_checkpoint(tmp_path / "uncond.ckpt", release_tensors(NAMES["lvdm_short/small"]))
    pred = diffusion_checkpoint(tmp_path / "pred.ckpt", release_tensors(NAMES["sky_pred/small"]))
    ae = autoencoder_checkpoint(tmp_path / "ae.ckpt", release_tensors(NAMES["videoae/small"]))
    with pytest.raises(ReleaseImportError, match="autoencoder checkpoint; use --kind autoencoder"):
        import_release_checkpoint(str(ae), "unet")
    with pytest.raises(ReleaseImportError, match="unconditional network.*use --kind unet"):
        import_release_checkpoint(str(uncond), "pred")
    with pytest.raises(ReleaseImportError, match="prediction/interpolation network.*--kind pred"):
        import_release_checkpoint(str(pred), "unet")
    with pytest.raises(ReleaseImportError, match="no autoencoder"):
        import_release_checkpoint(str(uncond), "autoencoder")
    # The paper network's structure does not fit a small checkpoint: the missing tensors are named.
    with pytest.raises(ReleaseImportError, match=r"missing \d+: .*--config"):
        import_release_checkpoint(str(uncond), "unet", release="sky")
