"""Make `lvdm_release_names.json`: every tensor name and shape of the released LVDM networks.

Source: github.com/YingqingHe/LVDM at commit d251dcc (MIT licence), its own modules
instantiated with its config files' arguments and their `state_dict()` listed — nothing of
its code is copied here. The import tests (tests/lvdm/test_release_import.py) read only the
JSON, so they need neither the release nor its dependencies. Regenerate with a checkout
whose package is renamed `lvdm_release` (the name `lvdm` is ours):

    git clone https://github.com/YingqingHe/LVDM /tmp/r && git -C /tmp/r checkout d251dcc
    cp -r /tmp/r/lvdm /tmp/r/lvdm_release && grep -rl 'lvdm\\.' /tmp/r/lvdm_release \\
        | xargs sed -i 's/\\blvdm\\./lvdm_release./g'
    PYTHONPATH=/tmp/r python tests/data/make_release_names.py

Networks, each at the paper width and at a small width (model_channels 32, channel_mult
[1, 2, 2], num_res_blocks 2, attention at 2 and 4, 2 heads; the videoae's smallest width is
n_hiddens 32, as GroupNorm(32) needs, so its small one has downsample [2, 4, 4]):
  lvdm_short (configs/lvdm_short/{sky,ucf,taichi}.yaml: UNetModel, 4 -> 4 channels)
  sky_pred   (configs/lvdm_long/sky_pred.yaml: FrameInterpPredUNet, 5 -> 4, num_classes 251)
  sky_interp (configs/lvdm_long/sky_interp.yaml: the same with temporal_length 5)
  videoae    (configs/videoae/*.yaml: AutoencoderKL's encoder, decoder, quant_conv,
              post_quant_conv; loss.* left out, not part of the network)
Each entry: the release config's UNet / autoencoder arguments and `{name: shape}`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

PAPER_UNET = dict(
    model_channels=256,
    channel_mult=[1, 2, 3, 4],
    num_res_blocks=3,
    attention_resolutions=[8, 4, 2],
    num_heads=4,
)
SMALL_UNET = dict(
    model_channels=32, channel_mult=[1, 2, 2], num_res_blocks=2, attention_resolutions=[4, 2], num_heads=2
)
COMMON = dict(
    image_size=32,
    use_temporal_transformer=False,
    use_checkpoint=False,
    legacy=False,
    kernel_size_t=1,
    padding_t=0,
    use_relative_position=True,
    use_scale_shift_norm=True,
    dims=3,
)
NETWORKS = {
    "lvdm_short": dict(in_channels=4, out_channels=4, temporal_length=4),
    "sky_pred": dict(in_channels=5, out_channels=4, temporal_length=4, num_classes=251),
    "sky_interp": dict(in_channels=5, out_channels=4, temporal_length=5, num_classes=251),
}


def main() -> None:
    from lvdm_release.models.modules.aemodules3d import Decoder, Encoder, SamePadConv3d
    from lvdm_release.models.modules.openaimodel3d import FrameInterpPredUNet, UNetModel

    out: dict[str, dict] = {}
    for width, unet in (("paper", PAPER_UNET), ("small", SMALL_UNET)):
        for name, extra in NETWORKS.items():
            params = {**COMMON, **unet, **extra}
            cls = FrameInterpPredUNet if "num_classes" in extra else UNetModel
            with torch.device("meta"):
                net = cls(**params)
            out[f"{name}/{width}"] = {
                "unet_config": {k: v for k, v in params.items() if k != "dims"},
                "tensors": {k: list(v.shape) for k, v in net.state_dict().items()},
            }
    # The videoae at the paper's downsample [4, 8, 8] and at a small one, [2, 4, 4] (two levels).
    for width, down in (("paper", [4, 8, 8]), ("small", [2, 4, 4])):
        ddconfig = dict(n_hiddens=32, downsample=down, z_channels=4)
        with torch.device("meta"):
            ae = torch.nn.Module()
            ae.encoder = Encoder(double_z=True, image_channel=3, **ddconfig)
            ae.decoder = Decoder(n_hiddens=32, upsample=down, z_channels=4, image_channel=3)
            ae.quant_conv = SamePadConv3d(8, 8, 1)
            ae.post_quant_conv = SamePadConv3d(4, 4, 1)
        out[f"videoae/{width}"] = {
            "ddconfig": {**ddconfig, "embed_dim": 4, "image_channel": 3},
            "parameters": sum(p.numel() for p in ae.parameters()),
            "tensors": {k: list(v.shape) for k, v in ae.state_dict().items()},
        }
    path = Path(__file__).with_name("lvdm_release_names.json")
    path.write_text(json.dumps({"source": "github.com/YingqingHe/LVDM@d251dcc", "networks": out}, indent=0))
    print(f"wrote {path}: " + ", ".join(f"{k} {len(v['tensors'])}" for k, v in out.items()))


if __name__ == "__main__":
    main()
