"""`lvdm sample --models DIR` on models imported from release-format checkpoints."""

from __future__ import annotations

import av
import pytest
import yaml

from pipelines.cli import main
from tests.lvdm.test_release_import import (
    NAMES,
    autoencoder_checkpoint,
    autoencoder_config,
    diffusion_checkpoint,
    release_tensors,
)


def test_sample_writes_an_unconditional_clip_from_imported_release_weights(tmp_path, capsys):
    models = tmp_path / "models"
    config = tmp_path / "videoae.yaml"
    config.write_text(yaml.safe_dump(autoencoder_config(NAMES["videoae/small"])))
    ae = autoencoder_checkpoint(tmp_path / "ae.ckpt", release_tensors(NAMES["videoae/small"]))
    unet = diffusion_checkpoint(tmp_path / "sky.ckpt", release_tensors(NAMES["lvdm_short/small"]))
    import_ae = ["weights", "import", str(ae), "--kind", "autoencoder", "--out", str(models)]
    assert main([*import_ae, "--config", str(config), "--scale", "0.33422927", "--shift", "1.4606637"]) == 0
    assert main(["weights", "import", str(unet), "--kind", "unet", "--out", str(models)]) == 0

    # Long videos need the prediction network: the error says which file and command.
    with pytest.raises(SystemExit, match=r"no prediction and interpolation networks.*--kind pred\|interp"):
        main(["sample", "--models", str(models), "--frames", "64", "--resolution", "16"])
    out = tmp_path / "clip.mp4"
    code = main(["sample", "--models", str(models), "--resolution", "16", "--steps", "2", "--out", str(out)])
    assert code == 0
    with av.open(str(out)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    # videoae/small compresses time by 2, the UNet's clip is temporal_length 4 latents: 8 frames.
    assert len(frames) == 8 and frames[0].shape == (16, 16, 3)
    assert "unconditional clip, 8 frames" in capsys.readouterr().out
