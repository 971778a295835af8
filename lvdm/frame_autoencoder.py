"""Stable Diffusion's 2D KL autoencoder applied to each frame: the first stage of LVDM's T2V model (§5).

The release's text-to-video model does not use the 3D video autoencoder: it encodes every
frame with SD's image autoencoder (fs = 8, 4 latent channels, no temporal compression, scale
0.18215), so the SD-initialised UNet sees the latents SD was trained on. This wraps
`diffusers.AutoencoderKL` read from a local folder, with the interface of
`lvdm.autoencoder.VideoAutoencoder` (`encode -> DiagonalGaussian`, `decode`, `latent_shape`) so
the latent cache and the samplers take either. `diffusers` is imported when a folder is
opened: `lvdm` stays importable with torch alone. SD's VAE as one file in the original LDM
layout (`.safetensors` / `.ckpt`, bare or under `first_stage_model.`) opens too
(`lvdm.pretrained.ldm_vae` renames it; a `.ckpt` is read without unpickling).
"""

from __future__ import annotations

from pathlib import Path

from einops import rearrange
from torch import Tensor, nn

from lvdm.autoencoder import DiagonalGaussian

SD_SCALE_FACTOR = 0.18215  # SD 1.x's latent scale, the release's `scale_factor`
_FILES = ("config.json", "diffusion_pytorch_model.safetensors")


class FrameAutoencoder(nn.Module):
    """`x: b c t h w` in [-1, 1] -> per-frame posteriors `b z t h/fs w/fs`, and back."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae
        self.latent_channels = int(vae.config.latent_channels)
        self.fs = 2 ** (len(vae.config.block_out_channels) - 1)
        self.ft = 1

    @classmethod
    def from_folder(cls, path: str | Path) -> FrameAutoencoder:
        """SD's VAE from a diffusers folder: the SD folder (its `vae/`) or the VAE folder itself;
        or from a single `.safetensors` / `.ckpt` file (`from_single_file`)."""
        root = Path(path)
        if root.is_file():
            return cls.from_single_file(root)
        folder = root / "vae" if (root / "vae").is_dir() else root
        missing = [str(folder / name) for name in _FILES if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"SD autoencoder folder {root}: missing {', '.join(missing)}. Supply Stable Diffusion 1.x's "
                "VAE in the diffusers layout (a folder with vae/config.json and "
                "vae/diffusion_pytorch_model.safetensors, e.g. the SD folder itself), or its VAE as one "
                ".safetensors / .ckpt file in the original LDM layout"
            )
        from diffusers import AutoencoderKL

        return cls(AutoencoderKL.from_pretrained(folder, local_files_only=True, use_safetensors=True))

    @classmethod
    def from_single_file(cls, path: str | Path) -> FrameAutoencoder:
        """SD's VAE from one file in the LDM layout (a VAE-only file, or a whole SD / LVDM T2V checkpoint)."""
        from diffusers import AutoencoderKL

        from lvdm.pretrained.ldm_vae import read_single_file_vae

        config, state = read_single_file_vae(path, scaling_factor=SD_SCALE_FACTOR)
        vae = AutoencoderKL(**config)
        vae.load_state_dict(state)
        return cls(vae.eval())

    def encode(self, x: Tensor) -> DiagonalGaussian:
        b = x.shape[0]
        posterior = self.vae.encode(rearrange(x, "b c t h w -> (b t) c h w")).latent_dist
        mean, logvar = (
            rearrange(m, "(b t) c h w -> b c t h w", b=b) for m in (posterior.mean, posterior.logvar)
        )
        return DiagonalGaussian(mean, logvar)

    def decode(self, z: Tensor) -> Tensor:
        if z.ndim != 5 or z.shape[1] != self.latent_channels:
            raise ValueError(f"decode expects latents (b {self.latent_channels} t h w), got {tuple(z.shape)}")
        frames = self.vae.decode(rearrange(z, "b c t h w -> (b t) c h w")).sample
        return rearrange(frames, "(b t) c h w -> b c t h w", b=z.shape[0])

    def latent_shape(self, t: int, h: int, w: int) -> tuple[int, int, int, int]:
        """`(c, t, h, w)` of the latent of one `t x h x w` clip: every frame kept."""
        return (self.latent_channels, t, h // self.fs, w // self.fs)
