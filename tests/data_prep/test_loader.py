"""Loader tests over real shards of real H.264 videos.

Every test video is flat colour: frame i has red = 8·i and video v has green = 20·v + 10, so
a decoded clip says which video it came from and which frames it holds.
"""

import numpy as np
import pytest
import torch

from data_prep.encode import encode_mp4
from data_prep.loader import latent_window_loader, video_clip_loader
from data_prep.shard_writer import write_shard

SIZE = 32  # decord's fast path; widths like 16/24/48 fall back to PyAV (see data_prep/decode.py)


def _video_sample(video_id: int, num_frames: int) -> dict:
    frames = np.empty((num_frames, SIZE, SIZE, 3), np.uint8)
    frames[..., 0] = (8 * np.arange(num_frames, dtype=np.uint8))[:, None, None]
    frames[..., 1] = 20 * video_id + 10
    frames[..., 2] = 128
    key = f"vid_{video_id:03d}"
    meta = {"key": key, "split": "train", "source_path": f"{key}.avi", "fps": 8.0}
    meta |= {"num_frames": num_frames, "height": SIZE, "width": SIZE}
    return {"__key__": key, "mp4": encode_mp4(frames), "json": meta}


def _write_video_shards(folder, lengths_per_shard: list[list[int]]) -> list:
    """One shard per inner list; video ids count up across shards."""
    paths, video_id = [], 0
    for index, lengths in enumerate(lengths_per_shard):
        samples = []
        for length in lengths:
            samples.append(_video_sample(video_id, length))
            video_id += 1
        paths.append(folder / f"train-{index:06d}.tar")
        write_shard(paths[-1], samples)
    return paths


def _decode_colours(batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """-> (frame index per clip frame `(b t)`, video id per clip `(b)`) from the colours."""
    pixels = (batch.mean(dim=(3, 4)) + 1) * 127.5  # b c t
    frame_index = np.rint(pixels[:, 0].numpy() / 8).astype(int)
    video_id = np.rint((pixels[:, 1].mean(dim=1).numpy() - 10) / 20).astype(int)
    return frame_index, video_id


def _video_ids(loader) -> set[int]:
    return {int(v) for batch in loader for v in _decode_colours(batch)[1]}


@pytest.fixture(scope="module")
def five_shards(tmp_path_factory):
    # 5 shards x 2 videos of 20 frames: uneven over 2 and 3 ranks.
    return _write_video_shards(tmp_path_factory.mktemp("shards"), [[20, 20]] * 5)


def test_batches_are_float_clips_in_model_range(five_shards):
    loader = video_clip_loader(five_shards, frames=6, stride=2, batch_size=3, batches_per_epoch=2)
    batches = list(loader)

    assert len(batches) == len(loader) == 2
    for batch in batches:
        assert batch.shape == (3, 3, 6, SIZE, SIZE)
        assert batch.dtype == torch.float32
        assert batch.min() >= -1 and batch.max() <= 1
        assert batch.max() - batch.min() > 0.5  # real content, not a constant


@pytest.mark.parametrize("stride", [1, 3])
def test_stride_really_applies_between_decoded_frames(five_shards, stride):
    loader = video_clip_loader(five_shards, frames=5, stride=stride, batch_size=4, batches_per_epoch=2)
    for batch in loader:
        frame_index, _ = _decode_colours(batch)
        # The official loaders read consecutive frames whatever the stride: diffs would be 1.
        assert (np.diff(frame_index, axis=1) == stride).all(), frame_index


def test_clip_starts_cover_the_whole_allowed_range(five_shards):
    loader = video_clip_loader(five_shards, frames=4, stride=3, batch_size=8, batches_per_epoch=8)
    starts = {int(i) for batch in loader for i in _decode_colours(batch)[0][:, 0]}
    # 20 frames, span 10: start in [0, 10]; the last possible clip ends on frame 19.
    assert min(starts) == 0 and max(starts) == 10


def test_videos_shorter_than_one_clip_are_skipped_and_counted(tmp_path):
    shards = _write_video_shards(tmp_path, [[5, 20, 9], [20, 3]])  # ids 0,2,4 short for span 10
    loader = video_clip_loader(shards, frames=4, stride=3, batch_size=4, batches_per_epoch=3)

    assert _video_ids(loader) == {1, 3}
    skipped_keys = sorted(name.rsplit(":", 1)[1] for name in loader.dataset.skipped)
    assert skipped_keys == ["vid_000", "vid_002", "vid_004"]
    assert "needs 10" in next(iter(loader.dataset.skipped.values()))


def test_shards_with_no_usable_video_fail_with_a_clear_error(tmp_path):
    shards = _write_video_shards(tmp_path, [[4, 5]])
    loader = video_clip_loader(shards, frames=8, stride=1, batch_size=1, batches_per_epoch=1)
    with pytest.raises(RuntimeError, match="no usable sample.*shorter clips"):
        list(loader)


@pytest.mark.parametrize("num_shards", [5, 2])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_every_rank_gets_the_same_number_of_batches(tmp_path, num_shards, world_size):
    shards = _write_video_shards(tmp_path, [[12]] * num_shards)
    counts = [
        sum(1 for _ in video_clip_loader(shards, frames=2, stride=1, batch_size=2, batches_per_epoch=3,
                                         rank=rank, world_size=world_size))
        for rank in range(world_size)
    ]  # fmt: skip
    assert counts == [3] * world_size


def test_ranks_read_disjoint_shards(five_shards):
    seen = [
        _video_ids(video_clip_loader(five_shards, frames=2, stride=1, batch_size=4, batches_per_epoch=4,
                                     rank=rank, world_size=2))
        for rank in range(2)
    ]  # fmt: skip
    # rank 0 has shards 0, 2, 4 (videos 0,1,4,5,8,9); rank 1 has shards 1, 3 (videos 2,3,6,7).
    assert seen[0] <= {0, 1, 4, 5, 8, 9} and seen[1] <= {2, 3, 6, 7}
    assert len(seen[0]) >= 3 and len(seen[1]) >= 2


def test_ranks_sharing_one_shard_still_see_different_clips(tmp_path):
    shards = _write_video_shards(tmp_path, [[20, 20, 20, 20]])
    rank0, rank1 = (
        torch.cat(list(video_clip_loader(shards, frames=3, stride=2, batch_size=4, batches_per_epoch=2,
                                         rank=rank, world_size=2)))
        for rank in range(2)
    )  # fmt: skip
    assert not torch.equal(rank0, rank1)


def test_same_seed_same_batches_other_seed_or_epoch_other_batches(five_shards):
    def epoch(seed: int, epoch: int) -> torch.Tensor:
        loader = video_clip_loader(five_shards, frames=3, stride=2, batch_size=3, batches_per_epoch=2,
                                   seed=seed, epoch=epoch)  # fmt: skip
        return torch.cat(list(loader))

    assert torch.equal(epoch(0, 0), epoch(0, 0))
    assert not torch.equal(epoch(0, 0), epoch(1, 0))
    assert not torch.equal(epoch(0, 0), epoch(0, 1))


def test_two_workers_split_the_shards_and_keep_the_epoch_length(five_shards):
    def run() -> list[torch.Tensor]:
        return list(video_clip_loader(five_shards, frames=3, stride=2, batch_size=2, batches_per_epoch=5,
                                      num_workers=2))  # fmt: skip

    first = run()
    assert len(first) == 5
    assert all(batch.shape == (2, 3, 3, SIZE, SIZE) for batch in first)
    assert all(torch.equal(a, b) for a, b in zip(first, run(), strict=True))
    # DataLoader takes batches from the workers in turn; worker 0 owns shards 0, 2, 4, worker 1 shards 1, 3.
    for index, batch in enumerate(first):
        ids = set(_decode_colours(batch)[1].tolist())
        assert ids <= ({0, 1, 4, 5, 8, 9} if index % 2 == 0 else {2, 3, 6, 7}), (index, ids)


def _latent_sample(index: int, length: int) -> tuple[dict, np.ndarray]:
    # Values unique across samples and positions, exact in float16 (< 2048).
    sequence = (index * 400 + np.arange(4 * length * 2 * 3)).reshape(4, length, 2, 3).astype(np.float16)
    meta = {"key": f"lat_{index}", "num_frames": 4 * length, "latent_frames": length}
    return {"__key__": f"lat_{index}", "npy": sequence, "json": meta}, sequence


def test_latent_windows_are_slices_of_the_stored_sequences(tmp_path):
    stored, shards = {}, []
    for shard_index, lengths in enumerate([[5, 7], [2, 6]]):  # the 2-frame sequence is too short
        samples = []
        for length in lengths:
            sample, sequence = _latent_sample(len(stored), length)
            samples.append(sample)
            stored[sample["__key__"]] = sequence.astype(np.float32)
        shards.append(tmp_path / f"train-{shard_index:06d}.tar")
        write_shard(shards[-1], samples)

    loader = latent_window_loader(shards, frames=3, batch_size=4, batches_per_epoch=3)
    batches = list(loader)

    assert len(batches) == 3
    used = set()
    for window in torch.cat(batches).numpy():
        assert window.shape == (4, 3, 2, 3) and window.dtype == np.float32
        matches = [
            (key, start)
            for key, sequence in stored.items()
            for start in range(sequence.shape[1] - 2)
            if np.array_equal(sequence[:, start : start + 3], window)
        ]
        assert len(matches) == 1
        used.add(matches[0][0])
    assert "lat_2" not in used
    assert list(loader.dataset.skipped) == [f"{shards[1]}:lat_2"]


def test_strided_latent_windows_take_every_stride_th_latent_and_skip_short_sequences(tmp_path):
    samples, stored = [], {}
    for index, length in enumerate([9, 4]):  # 3 frames at stride 3 span 7: the 4-latent sequence is too short
        sample, sequence = _latent_sample(index, length)
        samples.append(sample)
        stored[sample["__key__"]] = sequence.astype(np.float32)
    write_shard(tmp_path / "train-000000.tar", samples)

    loader = latent_window_loader(
        [tmp_path / "train-000000.tar"], frames=3, stride=3, batch_size=2, batches_per_epoch=2
    )
    windows = torch.cat(list(loader)).numpy()

    starts = set()
    for window in windows:
        matches = [s for s in range(3) if np.array_equal(stored["lat_0"][:, s : s + 7 : 3], window)]
        assert len(matches) == 1
        starts.add(matches[0])
    assert list(loader.dataset.skipped) == [f"{tmp_path / 'train-000000.tar'}:lat_1"]
