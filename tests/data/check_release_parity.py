"""Side by side with the release's own modules: our imported networks compute its function.

Not a test (it needs the release's code, which the project does not depend on); it measured
the figures in the README section "Using the released LVDM checkpoints". Setup, with the
release's package renamed `lvdm_release` (the name `lvdm` is ours) as in make_release_names.py,
and, for a float64 comparison, its one float32 cast in the attention softmax lifted:

    sed -i 's/F.softmax(weight.float(), dim=-1).type(weight.dtype)/F.softmax(weight, dim=-1)/' \
        /tmp/r/lvdm_release/models/modules/attention_temporal.py
    RELEASE=/tmp/r python tests/data/check_release_parity.py

(GroupNorm32's float32 cast and the float32 `self.dtype` / timestep embedding are lifted below
at run time.) Release-format checkpoints are written under /tmp/relcheck, imported with
`import_release_checkpoint`, and the outputs compared on the same input, float64.
"""

# ruff: noqa: E402  (imports follow the sys.path set-up for the release)
import os
import sys
import types
from pathlib import Path

os.makedirs("/tmp/relcheck", exist_ok=True)
sys.path.insert(0, os.environ.get("RELEASE", "/tmp/lvdm_release"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import torch

torch.set_default_dtype(torch.float64)
torch.manual_seed(0)
import lvdm_release.models.modules.util as rutil
from torch import nn

rutil.GroupNorm32.forward = nn.GroupNorm.forward  # the release casts to float32; float64 check
import lvdm_release.models.modules.openaimodel3d as ro

_te = ro.timestep_embedding
ro.timestep_embedding = lambda *a, **k: _te(*a, **k).double()
from lvdm_release.models.modules.aemodules3d import Decoder, Encoder, SamePadConv3d
from lvdm_release.models.modules.distributions import DiagonalGaussianDistribution
from lvdm_release.models.modules.ema import LitEma

from lvdm.pretrained.release_import import import_release_checkpoint

SMALL = dict(
    image_size=8,
    model_channels=32,
    attention_resolutions=[4, 2],
    num_res_blocks=2,
    channel_mult=[1, 2, 2],
    num_heads=2,
    use_temporal_transformer=False,
    use_checkpoint=False,
    legacy=False,
    kernel_size_t=1,
    padding_t=0,
    use_relative_position=True,
    use_scale_shift_norm=True,
    dims=3,
)


def randomize(m):
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3 / max(1, p[0].numel()) ** 0.5 if p.ndim > 1 else 0.3)
    m.dtype = torch.float64
    return m


class Wrapper(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.diffusion_model = net


def diffusion_ckpt(net, path, ae=None):
    wrapper = Wrapper(net)
    ema = LitEma(wrapper)
    raw = {"model." + k: v.float().clone() for k, v in wrapper.state_dict().items()}
    # EMA differs from the raw weights: perturb raw so that choosing the wrong copy shows.
    raw = {k: v + 0.01 for k, v in raw.items()}
    sd = dict(raw)
    sd.update(
        {
            "model_ema." + k: v.float().clone() if v.is_floating_point() else v
            for k, v in ema.state_dict().items()
        }
    )
    sd["betas"] = torch.linspace(0.0015, 0.0155, 1000).float()
    sd["alphas_cumprod"] = torch.rand(1000).float()
    if ae is not None:
        sd.update({"first_stage_model." + k: v.float() for k, v in ae.state_dict().items()})
    hp = types.SimpleNamespace(scale_factor=0.3)
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 1234, "hyper_parameters": {"x": hp}}, path)


def max_diff(a, b):
    return (a - b).abs().max().item()


results = {}
# --- UNet (short) ---
rel = randomize(ro.UNetModel(in_channels=4, out_channels=4, temporal_length=4, **SMALL)).eval()
diffusion_ckpt(rel, "/tmp/relcheck/unet.ckpt")
rel_f32 = {k: v.float().double() for k, v in rel.state_dict().items()}  # the ckpt stores float32
rel.load_state_dict(rel_f32)
imp = import_release_checkpoint("/tmp/relcheck/unet.ckpt", "unet")
ours = imp.model.double().eval()
x = torch.randn(2, 4, 6, 8, 8)
t = torch.tensor([10, 900])
with torch.no_grad():
    a = rel(x, t)
    b = ours(x, t)
results["unet (EMA, t=6 frames)"] = (max_diff(a, b), a.abs().max().item())
print(imp.report.summary(), sorted(imp.inert_globals))
# --- prediction UNet ---
pred = randomize(
    ro.FrameInterpPredUNet(in_channels=5, out_channels=4, num_classes=251, temporal_length=4, **SMALL)
).eval()
diffusion_ckpt(pred, "/tmp/relcheck/pred.ckpt")
pred.load_state_dict({k: v.float().double() for k, v in pred.state_dict().items()})
imp = import_release_checkpoint("/tmp/relcheck/pred.ckpt", "pred")
ours = imp.model.double().eval()
x = torch.randn(2, 5, 4, 8, 8)
s = torch.tensor([0, 100])
with torch.no_grad():
    a = pred(x, t, y=s)
    b = ours(x, t, noise_level=s)
results["pred"] = (max_diff(a, b), a.abs().max().item())
# --- interpolation UNet ---
interp = randomize(
    ro.FrameInterpPredUNet(in_channels=5, out_channels=4, num_classes=251, temporal_length=5, **SMALL)
).eval()
diffusion_ckpt(interp, "/tmp/relcheck/interp.ckpt")
interp.load_state_dict({k: v.float().double() for k, v in interp.state_dict().items()})
imp = import_release_checkpoint("/tmp/relcheck/interp.ckpt", "interp")
ours = imp.model.double().eval()
x = torch.randn(2, 5, 5, 8, 8)
with torch.no_grad():
    a = interp(x, t, y=s)
    b = ours(x, t, noise_level=s)
results["interp"] = (max_diff(a, b), a.abs().max().item())


# --- autoencoder (small width: n_hiddens 32 is the smallest GroupNorm(32) allows) ---
class AE(nn.Module):
    dtype = torch.float64

    def __init__(self):
        super().__init__()
        self.encoder = Encoder(n_hiddens=32, downsample=[4, 8, 8], z_channels=4, double_z=True)
        self.decoder = Decoder(n_hiddens=32, upsample=[4, 8, 8], z_channels=4, image_channel=3)
        self.quant_conv = SamePadConv3d(8, 8, 1, padding_type="replicate")
        self.post_quant_conv = SamePadConv3d(4, 4, 1, padding_type="replicate")
        self.loss = nn.Linear(3, 3)  # stands for LPIPSWithDiscriminator's tensors


ae = randomize(AE()).eval()
sd = {k: v.float() for k, v in ae.state_dict().items()}
torch.save(
    {"state_dict": sd, "global_step": 7, "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}}}]},
    "/tmp/relcheck/ae.ckpt",
)
ae.load_state_dict({k: v.double() for k, v in sd.items()})
imp = import_release_checkpoint("/tmp/relcheck/ae.ckpt", "autoencoder", release="sky")
ours = imp.model.double().eval()
print(imp.report.summary(), "params", sum(p.numel() for p in ours.parameters()))
video = torch.randn(1, 3, 8, 32, 32)
with torch.no_grad():
    moments = ae.quant_conv(ae.encoder(video))
    post = DiagonalGaussianDistribution(moments)
    mine = ours.encode(video)
    results["ae encode mean"] = (max_diff(post.mean, mine.mean), post.mean.abs().max().item())
    results["ae encode logvar"] = (max_diff(post.logvar, mine.logvar), post.logvar.abs().max().item())
    z = torch.randn(1, 4, 2, 4, 4)
    a = ae.decoder(ae.post_quant_conv(z))
    b = ours.decode(z)
    results["ae decode"] = (max_diff(a, b), a.abs().max().item())
# paper autoencoder param count: the release's modules
paper = AE()
del paper.loss
print("release paper AE params", sum(p.numel() for p in paper.parameters()))
from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder

print(
    "ours paper AE params", sum(p.numel() for p in VideoAutoencoder(AutoencoderConfig.paper()).parameters())
)
# --- DDIM parity (eta 0, 50 steps), release sampler with a fake LatentDiffusion ---
from lvdm_release.samplers.ddim import DDIMSampler

from lvdm.diffusion.samplers import ddim
from lvdm.diffusion.schedule import NoiseSchedule

schedule = NoiseSchedule.linear(timesteps=1000, linear_start=0.0015, linear_end=0.0155)
unet = rel


class FakeLDM:
    num_timesteps = 1000
    alphas_cumprod = schedule.alphas_cumprod.double()
    betas = schedule.betas.double()
    alphas_cumprod_prev = torch.cat([torch.ones(1), schedule.alphas_cumprod[:-1].double()])
    device = torch.device("cpu")

    def apply_model(self, x, t, c, **kw):
        return unet(x, t)


sampler = DDIMSampler(FakeLDM())
sampler.register_buffer = lambda name, attr: setattr(sampler, name, attr)
xT = torch.randn(1, 4, 4, 8, 8)
with torch.no_grad():
    a, _ = sampler.sample(50, 1, (4, 4, 8, 8), conditioning=None, eta=0.0, x_T=xT.clone(), verbose=False)
    ours_unet = import_release_checkpoint("/tmp/relcheck/unet.ckpt", "unet").model.double().eval()
    b = ddim(lambda x, t: ours_unet(x, t), xT.clone(), schedule, steps=50, eta=0.0, last_step="release")
    c = ddim(lambda x, t: ours_unet(x, t), xT.clone(), schedule, steps=50, eta=0.0)
results["DDIM eta=0 50 steps, last_step=release"] = (max_diff(a, b), a.abs().max().item())
results["DDIM eta=0 50 steps, last_step=x0 (ours)"] = (max_diff(a, c), a.abs().max().item())
for k, v in results.items():
    print(f"{k}: max abs diff {v[0]:.3e}" + (f" (output max |.| {v[1]:.3g})" if v[1] is not None else ""))
