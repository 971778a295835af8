import pytest
import torch

from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from lvdm.latent_sequence import (
    decode_sequence,
    decode_sequence_overlapped,
    decode_stream,
    decoder_context,
    decoder_reach,
    with_framewise_norms,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def autoencoder() -> VideoAutoencoder:
    torch.manual_seed(0)
    return VideoAutoencoder(AutoencoderConfig(hidden=8, fs=4, ft=2, norm_groups=8)).eval()


def smooth_latents(frames: int, seed: int = 0) -> torch.Tensor:
    """`(4 l 2 2)`: slow sinusoids with a random phase per element."""
    phase = 3 * torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(seed))
    return torch.sin(0.1 * torch.arange(frames).float().view(1, -1, 1, 1) + phase)


@pytest.fixture(scope="module")
def context(autoencoder) -> int:
    return decoder_context(autoencoder)


@pytest.mark.parametrize("upsample", ["transposed", "nearest"])
def test_measured_reach_is_the_decoders_receptive_field(upsample):
    # fs=4, ft=2: two levels of (upsampling + 2 ResBlocks), then the output conv; counted by
    # hand for the transposed kernel-4 conv: 11 frames back and 12 ahead, i.e. 6 latents.
    options = {} if upsample == "transposed" else {"upsample": upsample}
    if options and "upsample" not in AutoencoderConfig.__dataclass_fields__:
        pytest.skip("this autoencoder has no `upsample` option")
    torch.manual_seed(0)
    model = VideoAutoencoder(AutoencoderConfig(hidden=8, fs=4, ft=2, norm_groups=8, **options))
    assert decoder_reach(model.eval()) == (6, 6)


def test_overlapped_windows_decode_exactly_as_one_piece(autoencoder, context):
    # GroupNorm statistics span the whole decoded clip (see the module docstring); with
    # per-frame statistics, what is left reaches across time only through the convolutions,
    # which is what the overlap has to cover: then windows must join bit-for-bit.
    local = with_framewise_norms(autoencoder)
    z = smooth_latents(30)
    with torch.no_grad():
        whole = local.decode(z[None])[0]
    windowed = decode_sequence_overlapped(local, z, window=8, context=context)
    assert windowed.shape == whole.shape == (3, 60, 8, 8)
    assert context == 6 and torch.allclose(windowed, whole, atol=1e-5, rtol=0)
    # The measured context is the least that works: one latent less leaves seams.
    short = decode_sequence_overlapped(local, z, window=8, context=context - 1)
    assert not torch.allclose(short, whole, atol=1e-3, rtol=0)


def test_stream_of_uneven_chunks_decodes_like_one_tensor_with_bounded_windows(autoencoder):
    local = with_framewise_norms(autoencoder)
    z = smooth_latents(23, seed=1)[None]
    seen: list[int] = []
    decode = local.decode

    def recording_decode(latents: torch.Tensor) -> torch.Tensor:
        seen.append(latents.shape[2])
        return decode(latents)

    local.decode = recording_decode
    chunks = [z[:, :, a:b] for a, b in [(0, 1), (1, 9), (9, 10), (10, 23)]]
    parts = list(decode_stream(local, chunks, window=4, context=3))
    reference = torch.cat(list(decode_stream(local, [z], window=4, context=3)), dim=2)
    assert torch.equal(torch.cat(parts, dim=2), reference)
    assert reference.shape[2] == 46
    assert max(p.shape[2] for p in parts) == 4 * 2
    assert max(seen) <= 4 + 2 * 3  # a window and its context on either side, whatever the length


def test_with_the_real_group_norm_overlap_removes_the_window_seams(autoencoder):
    # What remains with per-clip statistics is a slight difference everywhere, not a jump
    # at window borders: the excess frame-to-frame jump there is well below the one that
    # non-overlapping windows (decode_sequence) leave.
    z = smooth_latents(48)
    with torch.no_grad():
        whole = autoencoder.decode(z[None])[0]

    def seams(video: torch.Tensor) -> torch.Tensor:
        excess = (video[:, 1:] - video[:, :-1]) - (whole[:, 1:] - whole[:, :-1])
        return excess.abs().amax(dim=(0, 2, 3))[15:-16:16]  # the jumps across window borders

    overlapped = decode_sequence_overlapped(autoencoder, z, window=8, context=6)
    plain = decode_sequence(autoencoder, z, window=8)
    assert seams(overlapped).max() < 0.5 * seams(plain).max()
