"""Log-mel front-end and crops, checked against an independent numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechssl.audio.crops import crop_batch, fixed_crop, random_crop
from speechssl.audio.features import LogMel, mel_filterbank, num_frames

SR = 16000


# --- independent reference (numpy only, written from the textbook definitions) -------------


def ref_mel_fb(n_mels: int = 80, n_fft: int = 512, sr: int = SR) -> np.ndarray:
    """HTK triangles, [n_mels, n_bins], built with an explicit loop."""

    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    pts = [hz(mel(0.0) + i * (mel(sr / 2) - mel(0.0)) / (n_mels + 1)) for i in range(n_mels + 2)]
    fb = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if lo < f <= c:
                fb[m, k] = (f - lo) / (c - lo)
            elif c < f < hi:
                fb[m, k] = (hi - f) / (hi - c)
    return fb


def ref_logmel(x: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """[F, 80] log-mel of a 1-D signal, frames without centering."""
    win, hop, n_fft = 400, 160, 512
    n = np.arange(win)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)  # periodic Hann
    fb = ref_mel_fb()
    out = []
    start = 0
    while start + win <= len(x):
        frame = x[start : start + win].astype(np.float64) * hann
        spec = np.fft.rfft(frame, n=n_fft)
        out.append(np.log(fb @ (np.abs(spec) ** 2) + floor))
        start += hop
    return np.array(out).reshape(-1, 80)


def signal(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 2500 * t)
    return (x + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


# --- filterbank -----------------------------------------------------------------------------


def test_filterbank_matches_reference_and_is_well_formed():
    fb = mel_filterbank().numpy()
    assert fb.shape == (257, 80)
    np.testing.assert_allclose(fb.T, ref_mel_fb(), atol=1e-6)
    assert (fb.sum(axis=0) > 0).all()
    assert fb.max() <= 1.0 + 1e-6 and fb.min() >= 0.0
    peaks = fb.argmax(axis=0)
    assert (np.diff(peaks) >= 0).all() and peaks[-1] > peaks[0]
    # centre of mass strictly increases, even where low filters share a peak bin
    com = (fb * np.arange(257)[:, None]).sum(0) / fb.sum(0)
    assert (np.diff(com) > 0).all()


def test_filterbank_rejects_empty_filters():
    with pytest.raises(ValueError, match="cover no FFT bin"):
        mel_filterbank(n_mels=128, n_fft=256)


# --- log-mel --------------------------------------------------------------------------------


def test_logmel_matches_numpy_reference():
    x = signal(1.0)
    feats, mask, n = LogMel()(torch.from_numpy(x)[None])
    ref = ref_logmel(x)
    assert n.tolist() == [98] == [ref.shape[0]]
    assert feats.shape == (1, 98, 80) and mask.all()
    err = np.abs(feats[0].numpy() - ref).max()
    assert err < 1e-3, err


@pytest.mark.parametrize(
    "t, expected", [(0, 0), (399, 0), (400, 1), (559, 1), (560, 2), (16000, 98)]
)
def test_frame_count_formula(t, expected):
    assert num_frames(torch.tensor([t])).item() == expected
    feats, mask, n = LogMel()(torch.zeros(1, t), torch.tensor([t]))
    assert n.item() == expected and feats.shape == (1, expected, 80)
    assert mask.sum().item() == expected


def test_short_inputs_give_zero_frames_without_crashing():
    m = LogMel()
    feats, mask, n = m(torch.randn(3, 250), torch.tensor([250, 10, 0]))
    assert feats.shape == (3, 0, 80) and mask.shape == (3, 0) and n.tolist() == [0, 0, 0]
    feats, mask, n = m(torch.randn(2, 1000), torch.tensor([1000, 100]))
    assert n.tolist() == [4, 0] and mask[1].sum() == 0 and (feats[1] == 0).all()


@pytest.mark.parametrize("chunk_frames", [7, 200, 100_000])
def test_batch_equals_single_utterances_and_ignores_padding(chunk_frames):
    m = LogMel(chunk_frames=chunk_frames)  # CPU tiling must not change results
    lens = [16000, 9123, 400, 3000]
    waves = [torch.from_numpy(signal(n / SR, seed=i)) for i, n in enumerate(lens)]
    batch = torch.full((len(lens), max(lens)), 7.0)  # garbage padding must not leak in
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    feats, mask, n = m(batch, torch.tensor(lens))
    assert n.tolist() == [num_frames(torch.tensor(t)).item() for t in lens]
    expected_mask = torch.arange(feats.shape[1])[None] < n[:, None]
    assert torch.equal(mask, expected_mask)
    for i, w in enumerate(waves):
        single, _, ni = LogMel()(w[None])
        assert ni.item() == n[i].item()
        torch.testing.assert_close(feats[i, : n[i]], single[0], atol=1e-4, rtol=1e-5)
        assert (feats[i, n[i] :] == 0).all()


def test_pure_tone_peaks_in_its_mel_bin():
    m = LogMel()
    fb = mel_filterbank()
    t = torch.arange(SR) / SR
    for freq in (300.0, 1000.0, 3000.0, 6000.0):
        feats, _, _ = m(torch.sin(2 * torch.pi * freq * t)[None])
        peak = feats[0].mean(0).argmax().item()
        k = round(freq * 512 / SR)  # the FFT bin of the tone
        filters_with_bin = torch.nonzero(fb[k] > 0).flatten().tolist()
        assert peak in filters_with_bin, (freq, peak, filters_with_bin)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x = torch.from_numpy(np.stack([signal(0.5, 0), signal(0.5, 1)]))
    lens = torch.tensor([8000, 5000])
    cpu = LogMel()(x, lens)
    gpu = LogMel().cuda()(x.cuda(), lens.cuda())
    assert torch.equal(gpu.mask.cpu(), cpu.mask)
    torch.testing.assert_close(gpu.features.cpu(), cpu.features, atol=1e-3, rtol=1e-4)


def test_silence_is_floored_and_float64_input_is_accepted():
    feats, _, _ = LogMel()(torch.zeros(1, 800, dtype=torch.float64))
    assert feats.dtype == torch.float32
    torch.testing.assert_close(feats, torch.full_like(feats, float(np.log(1e-6))))


def test_bad_shapes_and_lengths_are_rejected():
    m = LogMel()
    with pytest.raises(ValueError):
        m(torch.zeros(800))
    with pytest.raises(ValueError):
        m(torch.zeros(2, 800), torch.tensor([800, 801]))


# --- crops ----------------------------------------------------------------------------------


def test_random_crop_bounds_and_determinism():
    wave = torch.arange(1000, dtype=torch.float32)
    starts = set()
    for seed in range(50):
        c, n = random_crop(wave, 100, torch.Generator().manual_seed(seed))
        assert c.shape == (100,) and n == 100
        assert torch.equal(c, torch.arange(c[0].item(), c[0].item() + 100))
        assert 0 <= c[0].item() <= 900
        starts.add(int(c[0].item()))
    assert len(starts) > 10
    a, _ = random_crop(wave, 100, torch.Generator().manual_seed(3))
    b, _ = random_crop(wave, 100, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    full, n = random_crop(wave, 1000, torch.Generator().manual_seed(0))
    assert torch.equal(full, wave) and n == 1000


def test_fixed_crop_offsets():
    wave = torch.arange(10, dtype=torch.float32)
    assert fixed_crop(wave, 4)[0].tolist() == [0, 1, 2, 3]
    assert fixed_crop(wave, 4, "center")[0].tolist() == [3, 4, 5, 6]
    assert fixed_crop(wave, 4, 100)[0].tolist() == [6, 7, 8, 9]
    with pytest.raises(ValueError):
        fixed_crop(wave, 4, "middle")


def test_short_inputs_are_padded_by_mode():
    wave = torch.tensor([1.0, 2.0, 3.0])
    c, n = random_crop(wave, 7, torch.Generator().manual_seed(0), mode="zero")
    assert c.tolist() == [1, 2, 3, 0, 0, 0, 0] and n == 3
    c, n = fixed_crop(wave, 7, "center", mode="repeat")
    assert c.tolist() == [1, 2, 3, 1, 2, 3, 1] and n == 7
    c, n = fixed_crop(wave, 7, mode="none")
    assert c.tolist() == [1, 2, 3] and n == 3
    c, n = fixed_crop(torch.zeros(0), 5, mode="repeat")
    assert c.tolist() == [0] * 5 and n == 0
    with pytest.raises(ValueError):
        fixed_crop(wave, 7, mode="reflect")


def test_random_repeat_reads_the_loop_from_a_random_start():
    short = torch.arange(7, dtype=torch.float32) + 1
    gen = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(60):
        c, n = random_crop(short, 20, gen, mode="repeat")
        s = int(c[0]) - 1
        assert n == 20 and torch.equal(c, short[(s + torch.arange(20)) % 7])
        starts.add(s)
    assert starts == set(range(7))  # every start is reachable
    # Channels share the start; an empty wave is zeros with valid length 0.
    two = torch.stack([short, -short])
    c, n = random_crop(two, 10, torch.Generator().manual_seed(1), mode="repeat")
    assert c.shape == (2, 10) and torch.equal(c[1], -c[0]) and n == 10
    c, n = random_crop(torch.zeros(0), 5, gen, mode="repeat")
    assert c.tolist() == [0] * 5 and n == 0


def test_crop_batch():
    waves = [torch.ones(50), torch.ones(10), torch.ones(200)]
    audio, lens = crop_batch(waves, 40, "random", torch.Generator().manual_seed(1))
    assert audio.shape == (3, 40) and lens.tolist() == [40, 10, 40]
    assert (audio[1, 10:] == 0).all()
    a2, _ = crop_batch(
        [torch.randn(500, generator=torch.Generator().manual_seed(0))],
        40,
        generator=torch.Generator().manual_seed(9),
    )
    a3, _ = crop_batch(
        [torch.randn(500, generator=torch.Generator().manual_seed(0))],
        40,
        generator=torch.Generator().manual_seed(9),
    )
    assert torch.equal(a2, a3)


# --- MFCC -----------------------------------------------------------------------------------


def _ref_deltas(c: np.ndarray, width: int = 2) -> np.ndarray:
    """HTK regression deltas of [F, D], edge frames repeated, written as a loop."""
    out = np.zeros_like(c)
    last = len(c) - 1
    for t in range(len(c)):
        for k in range(1, width + 1):
            out[t] += k * (c[min(t + k, last)] - c[max(t - k, 0)])
    return out / (2 * sum(k * k for k in range(1, width + 1)))


def test_mfcc_is_the_orthonormal_dct_of_logmel_with_deltas_per_utterance():
    from scipy.fft import dct

    from speechssl.audio.features import Mfcc
    from speechssl.models.upstream import MfccUpstream

    long, short = signal(0.8, seed=1), signal(0.5, seed=2)
    wave = torch.zeros(2, len(long))
    wave[0], wave[1, : len(short)] = torch.from_numpy(long), torch.from_numpy(short)
    wave[1, len(short) :] = 5.0  # padding must not leak into the deltas
    feats, mask, counts = Mfcc()(wave, torch.tensor([len(long), len(short)]))
    assert feats.shape == (2, 78, 39) and counts.tolist() == [78, 48]
    for row, x in enumerate((long, short)):
        logmel = LogMel(n_mels=40)(torch.from_numpy(x)[None]).features[0].double().numpy()
        c = dct(logmel, type=2, norm="ortho", axis=-1)[:, :13]
        d = _ref_deltas(c)
        ref = np.concatenate([c, d, _ref_deltas(d)], axis=-1)
        n = counts[row]
        np.testing.assert_allclose(feats[row, :n].numpy(), ref, atol=2e-4)
        assert (feats[row, n:] == 0).all() and not mask[row, n:].any()
    up = MfccUpstream()(wave, torch.tensor([len(long), len(short)]))
    torch.testing.assert_close(up.hidden_states[0], feats)
