"""Importing the release's text-to-video checkpoint (`lvdm weights import t2v.ckpt --kind t2v`).

The checkpoint is built here in the release's layout from three small random networks: our T2V
`UNet3D`, diffusers' `AutoencoderKL` and transformers' `CLIPTextModel`, renamed to the release's
keys (`model.diffusion_model.*` with `transformer_blocks.*.attn1_tmp`..., `first_stage_model.*` in
LDM names, `cond_stage_model.transformer.text_model.*`) and saved as a Lightning-style `.ckpt`.
The renames below are written independently of the importer's rules; the release's own names are
pinned by `RELEASE_TRANSFORMER_NAMES` (listed from the release's `UNetModel` at d251dcc) and the
LDM VAE names by diffusers' own single-file converter. The imported parts must compute their
source's function.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import diffusers
import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from lvdm.frame_autoencoder import FrameAutoencoder
from lvdm.pretrained.release_import import ReleaseImportError, release_name_map
from lvdm.pretrained.release_t2v import (
    import_release_t2v,
    infer_t2v_unet_kwargs,
    release_t2v_unet_name,
    t2v_settings_from_release_config,
)
from lvdm.random_clip import VOCAB_SIZE
from lvdm.text_encoder import TextEncoder
from lvdm.unet import UNet3D
from pipelines.cli import main
from stages.unet_file import load_unet

CLIP_WIDTH = 64  # one head of CLIP's width 64: the importer's default head count
UNET = dict(
    in_channels=4,
    out_channels=4,
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(1, 2),
    num_heads=2,
    temporal_length=4,
    norm_groups=32,  # the release's GroupNorm32 everywhere
    context_dim=CLIP_WIDTH,
    transformer_depth=1,
    relative_key="standard",
    use_scale_shift_norm=False,
    temporal_transformer=True,
    frame_group_norm=False,
)
# configs/lvdm_short/text2video.yaml (d251dcc), the parts the import reads.
TEXT2VIDEO_YAML = {
    "model": {
        "params": {
            "linear_start": 0.00085,
            "linear_end": 0.012,
            "timesteps": 1000,
            "image_size": [32, 32],
            "video_length": 16,
            "scale_factor": 0.18215,
            "unet_config": {
                "params": {
                    "image_size": 32,
                    "in_channels": 4,
                    "out_channels": 4,
                    "model_channels": 320,
                    "attention_resolutions": [4, 2, 1],
                    "num_res_blocks": 2,
                    "channel_mult": [1, 2, 4, 4],
                    "num_heads": 8,
                    "transformer_depth": 1,
                    "context_dim": 768,
                    "use_checkpoint": True,
                    "legacy": False,
                    "kernel_size_t": 1,
                    "padding_t": 0,
                    "use_temporal_transformer": True,
                    "temporal_length": 16,
                    "use_relative_position": True,
                }
            },
        }
    }
}
# Every tensor of one spatio-temporal transformer as the release's UNetModel (text2video.yaml)
# lists it, `input_blocks.1.1.` stripped; shapes at model_channels 320, 8 heads.
RELEASE_TRANSFORMER_NAMES = {
    "norm.weight": (320,),
    "norm.bias": (320,),
    "proj_in.weight": (320, 320, 1, 1, 1),
    "proj_in.bias": (320,),
    "proj_out.weight": (320, 320, 1, 1, 1),
    "proj_out.bias": (320,),
    **{
        f"transformer_blocks.0.{a}.to_{p}.weight": (320, 320)
        for a in ("attn1", "attn1_tmp", "attn2_tmp")
        for p in "qkv"
    },
    "transformer_blocks.0.attn2.to_q.weight": (320, 320),
    "transformer_blocks.0.attn2.to_k.weight": (320, 768),
    "transformer_blocks.0.attn2.to_v.weight": (320, 768),
    **{
        f"transformer_blocks.0.{a}.to_out.0.weight": (320, 320)
        for a in ("attn1", "attn2", "attn1_tmp", "attn2_tmp")
    },
    **{
        f"transformer_blocks.0.{a}.to_out.0.bias": (320,)
        for a in ("attn1", "attn2", "attn1_tmp", "attn2_tmp")
    },
    **{
        f"transformer_blocks.0.{a}.relative_position_{kv}.embeddings_table": (33, 40)
        for a in ("attn1_tmp", "attn2_tmp")
        for kv in "kv"
    },
    "transformer_blocks.0.ff.net.0.proj.weight": (2560, 320),
    "transformer_blocks.0.ff.net.0.proj.bias": (2560,),
    "transformer_blocks.0.ff.net.2.weight": (320, 1280),
    "transformer_blocks.0.ff.net.2.bias": (320,),
    **{f"transformer_blocks.0.norm{i}.{p}": (320,) for i in range(1, 6) for p in ("weight", "bias")},
}


def _randomise(model: torch.nn.Module, seed: int, std: float) -> torch.nn.Module:
    """Random weights everywhere, zero-initialised output projections included."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)
    return model.eval()


# --- The release's names, written out independently of the importer -----------------------------

_UNET_RENAMES = [  # our name fragment -> the release's (BasicTransformerBlockST, openaimodel3d)
    (".blocks.", ".transformer_blocks."),
    (".self_attention.to_out.", ".attn1.to_out.0."),
    (".self_attention.", ".attn1."),
    (".cross_attention.to_out.", ".attn2.to_out.0."),
    (".cross_attention.", ".attn2."),
    (".feed_forward.proj_in.", ".ff.net.0.proj."),
    (".feed_forward.proj_out.", ".ff.net.2."),
    (".temporal1.norm.", ".norm4."),
    (".temporal2.norm.", ".norm5."),
    (".temporal1.attention.to_out.", ".attn1_tmp.to_out.0."),
    (".temporal2.attention.to_out.", ".attn2_tmp.to_out.0."),
    (".temporal1.attention.relative_key", ".attn1_tmp.relative_position_k.embeddings_table"),
    (".temporal1.attention.relative_value", ".attn1_tmp.relative_position_v.embeddings_table"),
    (".temporal2.attention.relative_key", ".attn2_tmp.relative_position_k.embeddings_table"),
    (".temporal2.attention.relative_value", ".attn2_tmp.relative_position_v.embeddings_table"),
    (".temporal1.attention.", ".attn1_tmp."),
    (".temporal2.attention.", ".attn2_tmp."),
    (".out_norm.", ".out_layers.0."),
    (".out_layers.2.", ".out_layers.3."),
    (".skip.", ".skip_connection."),
]


def release_unet_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state.items():
        release = re.sub(r"^(input_blocks\.\d+\.0)\.conv\.", r"\1.op.", name)  # Downsample
        for ours, theirs in _UNET_RENAMES:
            release = release.replace(ours, theirs)
        if re.search(r"\.(proj_in|proj_out)\.weight$", release) and ".ff." not in release:
            tensor = tensor[:, :, None, None, None]  # the release's 1x1x1 Conv3d
        out[release] = tensor.clone()
    return out


def ldm_vae_state(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL names -> LDM's (checked against diffusers' own converter below)."""
    out = {}
    for name, tensor in state.items():
        ldm = name
        for a, b in [
            ("conv_norm_out", "norm_out"),
            ("mid_block.resnets.0", "mid.block_1"),
            ("mid_block.resnets.1", "mid.block_2"),
            ("mid_block.attentions.0.group_norm", "mid.attn_1.norm"),
            ("mid_block.attentions.0.to_q", "mid.attn_1.q"),
            ("mid_block.attentions.0.to_k", "mid.attn_1.k"),
            ("mid_block.attentions.0.to_v", "mid.attn_1.v"),
            ("mid_block.attentions.0.to_out.0", "mid.attn_1.proj_out"),
            ("conv_shortcut", "nin_shortcut"),
            ("downsamplers.0", "downsample"),
            ("upsamplers.0", "upsample"),
            ("resnets", "block"),
        ]:
            ldm = ldm.replace(a, b)
        ldm = re.sub(r"down_blocks\.(\d+)", r"down.\1", ldm)
        ldm = re.sub(r"up_blocks\.(\d+)", lambda m: f"up.{levels - 1 - int(m[1])}", ldm)
        if ".attn_1." in ldm and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # LDM's 1x1 Conv2d
        out[ldm] = tensor.clone()
    return out


class LightningHyperparameters:
    """Stands for what a Lightning checkpoint pickles by reference (left inert by the reader)."""

    def __init__(self) -> None:
        self.scale_factor = 0.18215


def release_t2v_checkpoint(
    path: Path, sources: dict, *, ema: bool = False, drop: str = "", add: str = ""
) -> Path:
    """The release's LatentDiffusion state dict: raw UNet (+ its EMA copy), first stage, CLIP, buffers."""
    unet = release_unet_state(sources["unet"].state_dict())
    vae = ldm_vae_state(sources["vae"].state_dict(), len(sources["vae"].config.block_out_channels))
    state = {f"model.diffusion_model.{k}": v for k, v in unet.items()}
    if ema:  # the raw weights differ, so the test sees which copy was taken
        state = {k: v + 1.0 for k, v in state.items()}
        state |= {"model_ema.diffusion_model" + k.replace(".", ""): v for k, v in unet.items()}
        state |= {"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(3)}
    state |= {f"first_stage_model.{k}": v for k, v in vae.items()}
    # transformers 4.x's CLIPTextModel (the release's) names its layers under `text_model.` and
    # stores position_ids.
    clip = sources["clip"].state_dict()
    state |= {f"cond_stage_model.transformer.text_model.{k}": v.clone() for k, v in clip.items()}
    state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    state |= {"betas": torch.linspace(0.00085, 0.012, 10), "alphas_cumprod": torch.rand(10)}
    if drop:
        del state[drop]
    if add:
        state[add] = torch.zeros(3)
    torch.save(
        {"epoch": 1, "global_step": 77, "state_dict": state, "hyper_parameters": LightningHyperparameters()},
        path,
    )
    return path


@pytest.fixture(scope="module")
def sources() -> dict[str, torch.nn.Module]:
    unet = _randomise(UNet3D(**UNET), seed=0, std=0.1)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=32,
        layers_per_block=1,
    )
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=CLIP_WIDTH,
            intermediate_size=2 * CLIP_WIDTH,
            num_hidden_layers=2,
            num_attention_heads=1,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
        )
    )
    return {
        "unet": unet,
        "vae": _randomise(vae, seed=1, std=0.05),
        "clip": _randomise(clip, seed=2, std=0.05),
    }


@pytest.fixture(scope="module")
def imported(sources, tmp_path_factory) -> Path:
    """`lvdm weights import t2v.ckpt --kind t2v --out models` on a checkpoint in the release's layout."""
    folder = tmp_path_factory.mktemp("t2v")
    ckpt = release_t2v_checkpoint(folder / "t2v.ckpt", sources)
    assert main(["weights", "import", str(ckpt), "--kind", "t2v", "--out", str(folder / "models")]) == 0
    return folder / "models"


def test_release_names_and_structure_of_the_paper_network() -> None:
    """At the release's width: our 974 tensors map one-to-one onto its names, its structure is read back."""
    settings = t2v_settings_from_release_config(TEXT2VIDEO_YAML)
    with torch.device("meta"):
        ours = UNet3D(**settings.unet).state_dict()
    assert sum(t.numel() for t in ours.values()) == 958_924_964
    release = {release_t2v_unet_name(k)[0]: ours[k] for k in ours}
    assert len(release) == len(ours) == 974
    block = {
        k.removeprefix("input_blocks.1.1."): tuple(release[k].shape)
        for k in release
        if k.startswith("input_blocks.1.1.")
    }
    assert block.keys() == RELEASE_TRANSFORMER_NAMES.keys()
    assert all(
        [d for d in RELEASE_TRANSFORMER_NAMES[k] if d != 1] == [d for d in shape if d != 1]
        for k, shape in block.items()
    )
    assert infer_t2v_unet_kwargs(release) == settings.unet
    assert len(release_name_map(ours, release_t2v_unet_name, ema=True)) == 974  # EMA keys do not collide
    assert (settings.scale, settings.frames, settings.latent_size) == (0.18215, 16, 32)


def test_imported_unet_computes_the_source_unet(sources, imported) -> None:
    model, meta = load_unet(str(imported / "t2v" / "unet.pt"))
    assert meta["step"] == 77 and meta["config"]["temporal_transformer"] is True
    torch.manual_seed(3)
    x, t, context = torch.randn(2, 4, 5, 8, 8), torch.tensor([10, 900]), torch.randn(2, 7, CLIP_WIDTH)
    with torch.no_grad():
        expected = sources["unet"](x, t, context=context)
        assert (model(x, t, context=context) - expected).abs().max() <= 1e-6
    about = json.loads((imported / "t2v" / "model.json").read_text())
    assert about["scale"] == 0.18215 and about["schedule"]["linear_end"] == 0.012
    assert about["latent_shape"] == [4, 4, 32, 32] and about["ema"] is False


def test_ema_copy_is_taken_when_the_file_has_one(sources, tmp_path) -> None:
    ckpt = release_t2v_checkpoint(tmp_path / "ema.ckpt", sources, ema=True)
    ours = sources["unet"].state_dict()
    ema = import_release_t2v(str(ckpt))
    assert ema.ema and torch.equal(ema.unet.state_dict()["out.2.weight"], ours["out.2.weight"])
    raw = import_release_t2v(str(ckpt), ema=False)
    assert not raw.ema and torch.equal(raw.unet.state_dict()["out.2.weight"], ours["out.2.weight"] + 1.0)


def test_imported_vae_encodes_and_decodes_as_diffusers(sources, imported, tmp_path) -> None:
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    vae = sources["vae"]
    # The LDM names written here are the ones diffusers' own converter reads.
    ldm = ldm_vae_state(vae.state_dict(), 2)
    back = convert_ldm_vae_checkpoint({f"first_stage_model.{k}": v for k, v in ldm.items()}, dict(vae.config))
    assert back.keys() == vae.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in vae.state_dict().items())

    save_file({k: v.contiguous() for k, v in ldm.items()}, tmp_path / "vae.safetensors")
    ckpt = imported.parent / "t2v.ckpt"
    x = torch.rand(1, 3, 2, 16, 16) * 2 - 1
    with torch.no_grad():
        reference = vae.encode(x[:, :, 0]).latent_dist
        z = torch.randn(1, 4, 2, 8, 8)
        decoded = vae.decode(z[:, :, 1]).sample
        # The imported folder, and single files: a VAE alone, and the whole T2V checkpoint.
        for source in (imported / "t2v" / "vae", tmp_path / "vae.safetensors", ckpt):
            frames = FrameAutoencoder.from_folder(source)
            posterior = frames.encode(x)
            assert (posterior.mean[:, :, 0] - reference.mean).abs().max() <= 1e-6, source
            assert (posterior.logvar[:, :, 0] - reference.logvar).abs().max() <= 1e-6, source
            assert (frames.decode(z)[:, :, 1] - decoded).abs().max() <= 1e-6, source
    assert frames.vae.config.scaling_factor == 0.18215


def test_imported_text_encoder_is_the_source_clip_with_clips_tokenizer(sources, imported) -> None:
    text = TextEncoder.from_folder(imported / "t2v" / "text_encoder")
    # CLIP's real BPE vocabulary: the ids openai/clip-vit-large-patch14's tokenizer gives.
    assert text.tokenize(["a photo of a cat"])[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    tokens = text.tokenize(["a dog running", ""])
    assert tokens.shape == (2, 77) and tokens[1, 1:].eq(49407).all()
    with torch.no_grad():
        expected = sources["clip"](input_ids=tokens).last_hidden_state
    assert (text.encode_tokens(tokens) - expected).abs().max() <= 1e-6


@pytest.mark.parametrize(
    ("drop", "add", "named"),
    [
        (
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1_tmp.to_k.weight",
            "",
            "attn1_tmp.to_k",
        ),
        ("first_stage_model.decoder.up.0.block.0.conv2.weight", "", "decoder.up.0.block.0.conv2.weight"),
        ("cond_stage_model.transformer.text_model.final_layer_norm.bias", "", "final_layer_norm.bias"),
        ("", "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn3.to_q.weight", "attn3.to_q"),
    ],
)
def test_a_missing_or_extra_tensor_is_named(sources, tmp_path, drop, add, named) -> None:
    ckpt = release_t2v_checkpoint(tmp_path / "broken.ckpt", sources, drop=drop, add=add)
    kind = "missing 1" if drop else "not part of this network 1"
    with pytest.raises(ReleaseImportError, match=rf"{kind}: .*{re.escape(named)}"):
        import_release_t2v(str(ckpt))


def test_sampling_the_imported_folder_writes_an_mp4(imported, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit, match="text-to-video model.*--prompt"):
        main(["sample", "--models", str(imported), "--resolution", "16"])
    with pytest.raises(SystemExit, match="--frames 5: .* one window of 4 frames and cannot continue"):
        main(["sample", "--models", str(imported), "--prompt", "dog", "--frames", "5", "--resolution", "16"])
    out = tmp_path / "dog.mp4"
    prompt = ["--prompt", "a dog running", "--frames", "3", "--steps", "2", "--guidance-scale", "3"]
    assert main(["sample", "--models", str(imported), *prompt, "--resolution", "16", "--out", str(out)]) == 0
    with av.open(str(out)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (16, 16, 3)
    about = json.loads(out.with_suffix(".json").read_text())
    assert about["prompt"] == "a dog running" and about["latent_frames"] == 3 and about["guidance_scale"] == 3
    assert "a dog running" in capsys.readouterr().out
