"""One demo-autoencoder training run with every knob on the command line: the sweep behind
the demo's settings (README, "The demo autoencoder").

    python benchmarks/bench_demo_autoencoder_sweep.py --fs 4 --lr 3e-4 --b1 0.5 --b2 0.9 --steps 100
    python benchmarks/bench_demo_autoencoder_sweep.py --fs 2 --lr 5e-4 --steps 400 --every 100
    python benchmarks/bench_demo_autoencoder_sweep.py --fs 2 --lr 5e-4 --steps 400 --every 100 --bf16 1

A plain loop (no Ray, no discriminator): AdamW on MSE or L1, gradient clipping at 1, batch
`--bs` of the demo's clips (32 train / 8 test videos of bouncing shapes, generated in memory
by `benchmarks/bench_demo_autoencoder.py`'s `clips`), held-out PSNR of the posterior mean every
`--every` steps, and seconds per step. Prints one line: the settings, the PSNR list, s/step.
"""

import argparse
import time

import numpy as np
import torch
from bench_demo_autoencoder import clips

from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from lvdm.autoencoder_training import psnr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", type=int, default=16)
    p.add_argument("--up", default="transposed")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--b1", type=float, default=0.5)
    p.add_argument("--b2", type=float, default=0.9)
    p.add_argument("--loss", default="mse")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--bs", type=int, default=4)
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--fs", type=int, default=4)
    p.add_argument("--latent", type=int, default=4)
    p.add_argument("--sample", type=int, default=1)
    p.add_argument("--bf16", type=int, default=0)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--every", type=int, default=50)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tr, _ = clips("train", 32, (0.08, 0.15))
    te, _ = clips("test", 8, (0.08, 0.15))
    m = VideoAutoencoder(
        AutoencoderConfig(
            hidden=a.hidden, fs=a.fs, ft=2, latent_channels=a.latent, norm_groups=a.groups, upsample=a.up
        )
    )
    opt = torch.optim.AdamW(m.parameters(), lr=a.lr, betas=(a.b1, a.b2), weight_decay=0)
    rng = np.random.default_rng(0)
    t0 = time.time()
    out = []
    for step in range(1, a.steps + 1):
        m.train()
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, step / a.warmup) if a.warmup else a.lr
        x = tr[rng.choice(len(tr), a.bs, replace=False)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(a.bf16)):
            post = m.encode(x)
            z = post.sample() if a.sample else post.mode()
            r = m.decode(z).float()
        loss = ((r - x) ** 2).mean() if a.loss == "mse" else (r - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        if step % a.every == 0:
            m.eval()
            with torch.no_grad():
                rec = m.decode(m.encode(te).mode()).clamp(-1, 1)
            out.append(round(psnr(te, rec), 2))
    print(vars(a), out, f"{(time.time() - t0) / a.steps:.3f}s/step", flush=True)


if __name__ == "__main__":
    main()
