"""The one duration-sorted batch loop: batch bounds, cut order, and the upstream frames on it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import write_audio

from speechssl.data.manifest import Row, build_cutset
from speechssl.data.sorted_batches import duration_sorted_batches, run_sorted_batches
from speechssl.evaluation.features import extract_features, layer_frames, upstream_frames
from speechssl.models.upstream import FbankUpstream


def reference_batches(durations, max_cuts, max_seconds, longest_first):
    """Greedy by hand: sort (stable), then close a batch when one more cut breaks a bound."""
    order = sorted(range(len(durations)), key=lambda i: durations[i], reverse=longest_first)
    out, cur = [], []
    for i in order:
        grown = cur + [i]
        padded = len(grown) * max(durations[j] for j in grown)
        if cur and (len(grown) > max_cuts or padded > max_seconds):
            out.append(cur)
            grown = [i]
        cur = grown
    return out + [cur] if cur else out


@pytest.mark.parametrize("longest_first", [True, False])
def test_batches_are_sorted_bounded_and_cover_every_cut_once(longest_first):
    rng = np.random.default_rng(0)
    durations = [float(d) for d in rng.choice([0.5, 1.0, 1.5, 4.0, 12.0], 200)]  # many ties
    cuts = [SimpleNamespace(duration=d) for d in durations]
    for max_cuts, max_seconds in ((8, 10.0), (3, float("inf")), (50, 30.0)):
        got = duration_sorted_batches(cuts, max_cuts, max_seconds, longest_first)
        assert got == reference_batches(durations, max_cuts, max_seconds, longest_first)
        flat = [i for b in got for i in b]
        assert sorted(flat) == list(range(200))
        for b in got:
            assert len(b) <= max_cuts
            longest = max(durations[i] for i in b)
            assert len(b) == 1 or len(b) * longest <= max_seconds  # one long cut: on its own
    with pytest.raises(ValueError):
        duration_sorted_batches(cuts, 0)


@pytest.fixture(scope="module")
def cuts(tmp_path_factory):
    root = tmp_path_factory.mktemp("sorted")
    rng = np.random.default_rng(1)
    rows = []
    for i in range(9):
        p = root / f"c{i}.wav"
        write_audio(p, seconds=float(rng.uniform(0.1, 0.9)), freq=200.0 + 50 * i)
        rows.append(Row(p, {"speaker": "x"}, cut_id=p.stem))
    return list(build_cutset(rows, progress=False, workers=1)[0])


def test_each_batch_row_is_its_cut(cuts):
    seen = []
    for idx, (audio, lengths) in run_sorted_batches(lambda a, n: (a, n), cuts, 4, 1.5):
        assert not torch.is_inference_mode_enabled()  # the caller runs outside it
        for row, i in enumerate(idx):
            n = int(lengths[row])
            assert n == cuts[i].num_samples
            np.testing.assert_array_equal(audio[row, :n].numpy(), cuts[i].load_audio()[0])
            assert not audio[row, n:].any()
        seen += idx
    assert sorted(seen) == list(range(len(cuts)))


def test_upstream_frames_equal_each_cut_alone_and_the_cache_reads_the_same(cuts, tmp_path):
    up = FbankUpstream()
    got = dict(upstream_frames(up, cuts, [0], batch_size=3, max_batch_seconds=2.0))
    assert sorted(got) == list(range(len(cuts)))
    for i, (frames,) in got.items():
        wave = torch.from_numpy(cuts[i].load_audio()[0])[None]
        alone = up(wave).hidden_states[0][0].numpy()
        np.testing.assert_allclose(frames, alone, rtol=1e-5, atol=1e-5)
    streamed = {c.id: f for c, f in layer_frames(up, "fbank", cuts, 0, 3, 2.0)}
    extract_features(up, cuts, tmp_path, "fbank", progress=False)
    cached = list(layer_frames(None, "fbank", cuts, 0, cache_dir=tmp_path))
    assert [c.id for c, _ in cached] == [c.id for c in cuts]  # from the cache: input order
    for c, f in cached:
        np.testing.assert_allclose(f, streamed[c.id], rtol=1e-2, atol=2e-2)  # float16 on disk
    with pytest.raises(ValueError, match="no upstream"):
        next(layer_frames(None, "fbank", cuts[:2], 0, cache_dir=tmp_path))
