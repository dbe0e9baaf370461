"""Multi-crop views of utterances (DINO, AAM): offsets, short-utterance policies, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet

from speechssl.audio.augment_config import AugmentConfig
from speechssl.audio.io import recording
from speechssl.data.multicrop import MultiCropDataset, babble_pool
from speechssl.errors import UserError

SECONDS = {"long": 2.0, "between": 0.8, "tiny": 0.3}


@pytest.fixture(scope="module")
def ramp_cuts(tmp_path_factory) -> CutSet:
    """Float WAVs whose samples encode (utterance, sample index): 0.1 * (u + 1) + n * 1e-6."""
    root = tmp_path_factory.mktemp("ramps")
    cuts = []
    for u, (name, sec) in enumerate(SECONDS.items()):
        n = np.arange(int(sec * 16000))
        path = root / f"{name}.wav"
        sf.write(path, (0.1 * (u + 1) + n * 1e-6).astype(np.float32), 16000, subtype="FLOAT")
        cuts.append(recording(path, recording_id=name).to_cut())
    return CutSet.from_cuts(cuts)


def _decode(row: torch.Tensor) -> tuple[int, int]:
    """(utterance, start sample) of a ramp crop's first sample."""
    first = float(row[0])
    u = round(first * 10) - 1 if first > 0.05 else -1
    return u, round((first - 0.1 * (u + 1)) * 1e6)


@pytest.mark.parametrize("policy", ["repeat", "zero"])
def test_multicrop_dataset_views_lengths_and_policies(ramp_cuts, policy):
    ds = MultiCropDataset(2, 1.0, 3, 0.5, policy, augment=None, seed=3)
    batch = ds[ramp_cuts]
    b = len(ramp_cuts)
    assert batch.global_audio.shape == (2 * b, 16000)
    assert batch.local_audio.shape == (3 * b, 8000)
    assert batch.short_global == 2 and batch.short_local == 1
    totals = [int(sec * 16000) for sec in SECONDS.values()]
    for audio, lengths, views, length in (
        (batch.global_audio, batch.global_lengths, 2, 16000),
        (batch.local_audio, batch.local_lengths, 3, 8000),
    ):
        for row in range(views * b):
            u = row % b  # view-major rows
            total, n = totals[u], int(lengths[row])
            expect = length if policy == "repeat" or total >= length else total
            assert n == expect
            got_u, start = _decode(audio[row])
            assert got_u == u
            idx = torch.arange(n) + start
            if total >= length:
                assert 0 <= start <= total - length  # inside the utterance
            else:
                assert policy == "zero" and start == 0 or policy == "repeat"
                idx = idx % total
            ref = (0.1 * (u + 1) + idx.double() * 1e-6).float()
            torch.testing.assert_close(audio[row, :n], ref, atol=1e-7, rtol=0)
            assert not audio[row, n:].any()


def test_unknown_short_policy_is_refused():
    with pytest.raises(UserError, match="repeat or zero"):
        MultiCropDataset(short_policy="pad")


def test_same_seed_same_crops_and_augmentation_per_crop(ramp_cuts):
    aug = AugmentConfig(noise_prob=1.0, noise_kinds=["coloured"], reverb_prob=0.0)

    def make(seed):
        return MultiCropDataset(2, 1.0, 2, 0.5, "zero", augment=aug, seed=seed)[ramp_cuts]

    a, b, c = make(5), make(5), make(6)
    assert torch.equal(a.global_audio, b.global_audio)
    assert torch.equal(a.local_audio, b.local_audio)
    assert not torch.equal(a.global_audio, c.global_audio)
    plain = MultiCropDataset(2, 1.0, 2, 0.5, "zero", augment=None, seed=5)[ramp_cuts]
    assert torch.equal(plain.global_lengths, a.global_lengths)
    # Noise changed every crop, and padding stayed silent.
    for row, n in enumerate(a.global_lengths.tolist()):
        assert not torch.allclose(a.global_audio[row, :n], plain.global_audio[row, :n])
        assert not a.global_audio[row, n:].any()


def test_babble_pool_is_a_uniform_sample():
    items = list(range(20))
    counts = np.zeros(20)
    for seed in range(400):
        pool = babble_pool(items, 5, seed)
        assert len(pool) == 5 == len(set(pool))
        counts[pool] += 1
    # Each item is drawn with probability 5/20: 100 of 400 times, binomial sd ~8.7.
    assert np.all(np.abs(counts - 100) < 40), counts
    assert babble_pool(items, 30, 0) == items  # a pool larger than the cuts keeps them all
