"""Augmentation: every property is measured in the test with numpy/scipy, not read back."""

from __future__ import annotations

import argparse
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import write_audio
from scipy.signal import welch

from speechssl.audio.augment import Augmenter, change_speed
from speechssl.audio.augment_config import AugmentConfig
from speechssl.audio.noise import active_frames, active_power, coloured_noise, frame_energies
from speechssl.audio.reverb import synthetic_rir
from speechssl.config import add_arguments, build
from speechssl.data.corpora import folder_rows
from speechssl.data.manifest import build_cutset, save_cuts
from speechssl.errors import UserError

SR = 16000
OFF = dict(noise_prob=0.0, reverb_prob=0.0, speed_prob=0.0, gain_prob=0.0)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sine(freq: float, seconds: float, amp: float = 0.3, sr: int = SR) -> torch.Tensor:
    t = np.arange(int(seconds * sr)) / sr
    return torch.from_numpy((amp * np.sin(2 * np.pi * freq * t)).astype(np.float32))


def half_silent() -> torch.Tensor:
    """0.5 s of a 300 Hz tone, then 0.5 s of digital silence: active power != mean power."""
    return torch.cat([sine(300.0, 0.5), torch.zeros(SR // 2)])


def manifest(tmp_path: Path, name: str, files: dict[str, tuple[float, int, float]]) -> Path:
    """A CutSet manifest of sine files {name: (freq, sample rate, seconds)} via the folder recipe."""
    folder = tmp_path / name
    for fname, (freq, sr, seconds) in files.items():
        write_audio(folder / fname, seconds=seconds, sr=sr, freq=freq)
    csv = tmp_path / f"{name}.csv"
    csv.write_text("path\n" + "".join(f"{f}\n" for f in files))
    cuts, _ = build_cutset(folder_rows(folder, csv), progress=False, workers=1)
    return save_cuts(cuts, tmp_path / f"{name}.jsonl.gz")


def pool(tmp_path: Path, freqs=(500.0, 700.0, 900.0, 1100.0)) -> list:
    files = {f"u{i}.wav": (f, SR, 0.4 + 0.3 * i) for i, f in enumerate(freqs)}
    from speechssl.data.manifest import load_cuts

    return list(load_cuts(manifest(tmp_path, "pool", files)))


def peak_freq(x: np.ndarray, sr: int = SR) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), 1 << 19))
    return float(np.argmax(spec) * sr / (1 << 19))


def measured_snr(clean: torch.Tensor, mix: torch.Tensor) -> float:
    """SNR of the known half-silent clean signal: its tone half's power over the added noise's."""
    c, m = clean.double().numpy(), mix.double().numpy()
    noise = m - c
    return 10 * np.log10(np.mean(c[: SR // 2] ** 2) / np.mean(noise**2))


def schroeder_rt60(h: np.ndarray, sr: int = SR) -> float:
    """RT60 from the T20 fit (-5 to -25 dB) of the backward-integrated energy decay curve."""
    edc = np.cumsum((h.astype(np.float64) ** 2)[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    sel = (edc_db <= -5) & (edc_db >= -25)
    t = np.arange(len(h))[sel] / sr
    slope, _ = np.polyfit(t, edc_db[sel], 1)
    return -60.0 / slope


# -- noise ----------------------------------------------------------------------------------


def test_frame_energies_and_active_power_by_hand():
    """Two 4-sample frames and a 2-sample tail: sums of squares 4, 0.04 and 8; the quiet
    middle frame (power 0.01 vs 4, 26 dB down) is active at 40 dB, not at 20 dB."""
    x = torch.tensor([1.0, -1, 1, -1, 0.1, 0.1, -0.1, 0.1, 2, 2])
    energy, count = frame_energies(x, frame=4)
    assert energy.tolist() == pytest.approx([4.0, 0.04, 8.0])
    assert count.tolist() == [4.0, 4.0, 2.0]
    power = energy / count
    assert active_frames(power, 40.0).tolist() == [True, True, True]
    assert active_frames(power, 20.0).tolist() == [True, False, True]
    # default range (40 dB): all frames count, so the active power is the plain mean square
    assert active_power(x, frame=4) == pytest.approx(float((x**2).mean()))
    assert active_power(torch.zeros(0)) == 0.0


@pytest.mark.parametrize("snr", [0.0, 7.5, 18.0])
def test_coloured_noise_mixed_at_requested_snr(snr):
    clean = half_silent()
    aug = Augmenter(
        AugmentConfig(**{**OFF, "noise_prob": 1.0}, noise_kinds=["coloured"], noise_snr=(snr, snr))
    )
    for seed in range(3):
        mix = aug(clean, gen(seed))
        assert mix.shape == clean.shape and mix.dtype == torch.float32
        assert abs(measured_snr(clean, mix) - snr) < 0.5
        # SNR is on active power: over the whole (half-silent) signal it is 3 dB lower.
        whole = 10 * np.log10(np.mean(clean.numpy() ** 2) / np.mean((mix - clean).numpy() ** 2))
        assert abs(whole - (snr - 3.01)) < 0.5


def test_snr_drawn_within_range():
    clean = half_silent()
    aug = Augmenter(
        AugmentConfig(**{**OFF, "noise_prob": 1.0}, noise_kinds=["coloured"], noise_snr=(2.0, 12.0))
    )
    snrs = [measured_snr(clean, aug(clean, gen(s))) for s in range(12)]
    assert min(snrs) > 2.0 - 0.5 and max(snrs) < 12.0 + 0.5
    assert max(snrs) - min(snrs) > 3.0  # actually drawn, not fixed


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_coloured_noise_spectral_slope(beta):
    x = coloured_noise(1 << 16, beta, gen(1)).numpy()
    assert abs(np.mean(x**2) - 1.0) < 1e-3
    f, p = welch(x, fs=SR, nperseg=2048)
    band = (f >= 100) & (f <= 4000)
    slope = np.polyfit(np.log10(f[band]), np.log10(p[band]), 1)[0]
    assert abs(slope + beta) < 0.25


def test_babble_is_other_utterances_at_requested_snr(tmp_path):
    cuts = pool(tmp_path)
    clean = half_silent()
    cfg = AugmentConfig(
        **{**OFF, "noise_prob": 1.0},
        noise_kinds=["babble"],
        babble_snr=(6.0, 6.0),
        babble_speakers=(3, 3),
    )
    aug = Augmenter(cfg, babble_pool=cuts)
    mix = aug(clean, gen(4))
    assert abs(measured_snr(clean, mix) - 6.0) < 0.5
    spec = np.abs(np.fft.rfft((mix - clean).numpy()))
    freqs = np.fft.rfftfreq(len(clean), 1 / SR)
    strong = {round(float(f)) for f in freqs[spec > 0.2 * spec.max()]}
    assert strong and strong <= {500, 700, 900, 1100}  # only pool voices, none of the tone
    assert "babble of 3 from 4 utterances" in aug.describe()


def test_recorded_noise_is_used_and_resampled(tmp_path):
    # One short file (looped), one long, one at 22.05 kHz (resampled on load).
    path = manifest(
        tmp_path,
        "noise",
        {"a.wav": (1000.0, SR, 0.3), "b.wav": (2500.0, SR, 2.0), "c.wav": (4000.0, 22050, 1.5)},
    )
    clean = half_silent()
    cfg = AugmentConfig(
        **{**OFF, "noise_prob": 1.0},
        noise_kinds=["recorded", "babble"],
        noise_manifest=path,
        noise_snr=(3.0, 3.0),
    )
    aug = Augmenter(cfg)  # no babble pool: recorded is the only kind available
    used = set()
    for seed in range(12):
        mix = aug(clean, gen(seed))
        assert abs(measured_snr(clean, mix) - 3.0) < 0.5
        used.add(round(peak_freq((mix - clean).numpy())))
    nearest = {min((1000, 2500, 4000), key=lambda f: abs(f - u)) for u in used}
    assert all(min(abs(u - f) for f in (1000, 2500, 4000)) <= 2 for u in used)
    assert nearest == {1000, 2500, 4000}
    assert aug._cache


def test_uncached_noise_reads_the_same_windows(tmp_path):
    # Without a cache a long file is read window by window: the same draws, the same audio.
    # (16 kHz files only: lhotse resamples a window with its own edge effects.)
    path = manifest(tmp_path, "noise", {"a.wav": (1000.0, SR, 0.3), "b.wav": (2500.0, SR, 2.0)})
    cfg = AugmentConfig(**{**OFF, "noise_prob": 1.0}, noise_kinds=["recorded"], noise_manifest=path)
    cached, uncached = Augmenter(cfg), Augmenter(AugmentConfig(**{**cfg.__dict__, "cache_mb": 0}))
    clean = half_silent()
    for seed in range(6):
        torch.testing.assert_close(uncached(clean, gen(seed)), cached(clean, gen(seed)))
    assert not uncached._cache and len(cached._cache) == 2


def test_silent_speech_gets_no_noise():
    silence = torch.zeros(SR)
    cfg = AugmentConfig(noise_prob=1.0, reverb_prob=1.0, speed_prob=1.0, gain_prob=1.0)
    assert torch.equal(Augmenter(cfg)(silence, gen()), silence)


# -- reverberation --------------------------------------------------------------------------


@pytest.mark.parametrize("rt60", [0.3, 0.6, 0.9])
def test_synthetic_rir_rt60_by_schroeder(rt60):
    for seed in range(3):
        h = synthetic_rir(rt60, drr_db=0.0, generator=gen(seed)).numpy()
        assert h[0] == 1.0 and np.abs(h[1:]).max() < 1.0  # direct path first and strongest
        tail = np.sum(h[1:] ** 2)
        assert abs(10 * np.log10(1 / tail)) < 0.01  # DRR as asked
        assert abs(schroeder_rt60(h) - rt60) < 0.2 * rt60


def test_reverb_of_an_impulse_has_the_drawn_rt60():
    impulse = torch.zeros(SR)
    impulse[0] = 1.0
    cfg = AugmentConfig(**{**OFF, "reverb_prob": 1.0}, rt60=(0.5, 0.5), drr_db=(3.0, 3.0))
    wet = Augmenter(cfg)(impulse, gen(2)).numpy()
    assert wet.shape == (SR,)
    assert abs(schroeder_rt60(wet) - 0.5) < 0.1
    assert abs(np.mean(wet**2) - np.mean(impulse.numpy() ** 2)) < 1e-7  # level kept


def xcorr_peak_lag(dry: np.ndarray, wet: np.ndarray, max_lag: int = 400) -> int:
    lags = range(-max_lag, max_lag + 1)
    n = len(dry)
    vals = [np.dot(dry[max(0, -k) : n - max(0, k)], wet[max(0, k) : n - max(0, -k)]) for k in lags]
    return list(lags)[int(np.argmax(vals))]


def test_reverb_keeps_length_and_adds_no_delay():
    dry = torch.randn(SR // 2, generator=gen(5)) * 0.1
    cfg = AugmentConfig(**{**OFF, "reverb_prob": 1.0}, rt60=(0.15, 0.15))
    for seed in range(3):
        wet = Augmenter(cfg)(dry, gen(seed))
        assert wet.shape == dry.shape
        assert not torch.equal(wet, dry)
        assert xcorr_peak_lag(dry.numpy(), wet.numpy()) == 0


def test_recorded_rir_convolution_matches_numpy(tmp_path):
    # A recorded-style RIR: 120 samples of pre-delay, a negative direct path, a decaying tail.
    rng = np.random.default_rng(0)
    tail = rng.standard_normal(1500) * np.exp(-np.arange(1500) / 300) * 0.1
    rir = np.concatenate([np.zeros(120), [-0.5], tail]).astype(np.float32)
    (tmp_path / "rirs").mkdir()
    sf.write(tmp_path / "rirs" / "room.wav", rir, SR)
    (tmp_path / "rirs.csv").write_text("path\nroom.wav\n")
    cuts, _ = build_cutset(folder_rows(tmp_path / "rirs", tmp_path / "rirs.csv"), progress=False)
    path = save_cuts(cuts, tmp_path / "rirs.jsonl.gz")

    dry = torch.randn(4000, generator=gen(6)) * 0.1
    aug = Augmenter(AugmentConfig(**{**OFF, "reverb_prob": 1.0}, rir_manifest=path))
    wet = aug(dry, gen(0)).numpy()
    h = sf.read(tmp_path / "rirs" / "room.wav", dtype="float32")[0][120:] / -0.5
    ref = np.convolve(dry.numpy().astype(np.float64), h)[: len(dry)]
    ref *= np.sqrt(np.mean(dry.numpy() ** 2) / np.mean(ref**2))
    np.testing.assert_allclose(wet, ref, atol=1e-5)
    assert xcorr_peak_lag(dry.numpy(), wet) == 0
    assert "1 recorded RIRs" in aug.describe()


# -- speed and gain -------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1.1, 0.9])
def test_speed_scales_frequency(factor):
    x = sine(440.0, 1.0)
    cfg = AugmentConfig(**{**OFF, "speed_prob": 1.0}, speeds=(factor,))
    y = Augmenter(cfg)(x, gen()).numpy()
    assert y.shape == x.shape
    valid = round(len(x) / factor) if factor > 1 else len(x)
    assert abs(peak_freq(y[:valid]) - 440.0 * factor) < 1.0
    if factor > 1:  # a faster crop is zero-padded at the end
        assert np.all(y[valid:] == 0) and np.abs(y[valid - 100 : valid]).max() > 0.1


def test_change_speed_matches_analytic_resampling():
    t = np.arange(8000) / SR
    x = torch.from_numpy(np.sin(2 * np.pi * 440 * t).astype(np.float32))
    for factor in (1.1, 0.9, 1.5):
        y = change_speed(x, factor).numpy()
        assert len(y) == round(8000 / factor)
        ref = np.sin(2 * np.pi * 440 * np.arange(len(y)) * factor / SR)
        assert np.abs(y[100:-100] - ref[100:-100]).max() < 1e-3


def test_gain_in_db_without_clipping():
    x = sine(200.0, 0.2, amp=0.9)
    cfg = AugmentConfig(**{**OFF, "gain_prob": 1.0}, gain_db=(6.0, 6.0))
    y = Augmenter(cfg)(x, gen())
    ratio_db = 20 * np.log10(np.abs(y.numpy()).max() / np.abs(x.numpy()).max())
    assert abs(ratio_db - 6.0) < 1e-3 and np.abs(y.numpy()).max() > 1.0


# -- the whole augmenter --------------------------------------------------------------------


def test_all_off_is_identity():
    x = torch.randn(5000, generator=gen(3))
    out = Augmenter(AugmentConfig(**OFF))(x, gen())
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
    assert Augmenter(AugmentConfig(**OFF)).describe() == "no augmentation"


def test_deterministic_given_the_generator(tmp_path):
    cfg = AugmentConfig(noise_prob=0.9, reverb_prob=0.9, speed_prob=0.5, gain_prob=0.5)
    aug = Augmenter(cfg, babble_pool=pool(tmp_path))
    x = torch.randn(SR, generator=gen(9)) * 0.1
    outs = [aug(x, gen(s)) for s in (1, 1, 2)]
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])
    copy = pickle.loads(pickle.dumps(aug))  # what a DataLoader worker gets
    assert torch.equal(copy(x, gen(1)), outs[0])


@pytest.mark.parametrize("n", [1, 7, 300, 2000])
def test_short_and_silent_inputs_stay_finite(tmp_path, n):
    cfg = AugmentConfig(
        noise_prob=1.0,
        reverb_prob=1.0,
        speed_prob=1.0,
        gain_prob=1.0,
        rt60=(1.0, 1.0),
        speeds=(0.9, 1.1),
    )
    aug = Augmenter(cfg, babble_pool=pool(tmp_path))
    for x in (torch.zeros(n), torch.randn(n, generator=gen(n)) * 0.1):
        for seed in range(6):
            y = aug(x, gen(seed))
            assert y.shape == (n,) and torch.isfinite(y).all()


def test_pickle_drops_the_cache(tmp_path):
    path = manifest(tmp_path, "noise", {"a.wav": (1000.0, SR, 0.5)})
    aug = Augmenter(
        AugmentConfig(**{**OFF, "noise_prob": 1.0}, noise_manifest=path, noise_kinds=["recorded"])
    )
    aug(torch.randn(SR), gen())
    assert aug._cache
    assert pickle.loads(pickle.dumps(aug))._cache == {}


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, words",
    [
        ({"noise_prob": 1.5}, "noise-prob"),
        ({"reverb_prob": -0.1}, "reverb-prob"),
        ({"noise_snr": (18.0, 0.0)}, "reversed"),
        ({"rt60": (0.0, 1.0)}, "positive"),
        ({"babble_speakers": (0, 3)}, "at least 1"),
        ({"gain_db": (1.0, 2.0, 3.0)}, "two values"),
        ({"noise_kinds": ["music"]}, "unknown kind"),
        ({"noise_kinds": ["recorded"]}, "none of the noise kinds"),
        ({"speeds": (0.0,)}, "speeds"),
        ({"noise_manifest": Path("/nonexistent/noise.jsonl.gz")}, "noise-manifest: .*not found"),
    ],
)
def test_bad_config_is_a_user_error(change, words):
    with pytest.raises(UserError, match=words):
        Augmenter(AugmentConfig(**change))


def test_bad_manifests_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        Augmenter(AugmentConfig(noise_manifest=tmp_path))
    empty = tmp_path / "empty.jsonl.gz"
    from lhotse import CutSet

    CutSet.from_cuts([]).to_file(empty)
    with pytest.raises(UserError, match="augmentation rir-manifest: "):
        Augmenter(AugmentConfig(rir_manifest=empty))
    garbage = tmp_path / "noise.jsonl"
    garbage.write_text("not json\n")
    with pytest.raises(UserError, match="noise-manifest: .* is not a lhotse CutSet manifest"):
        Augmenter(AugmentConfig(noise_manifest=garbage))


def test_nests_into_a_recipe_config():
    @dataclass
    class Recipe:
        augment: AugmentConfig = field(default_factory=AugmentConfig)

    parser = argparse.ArgumentParser()
    add_arguments(parser, Recipe)
    args = parser.parse_args(
        [
            "--augment.noise-prob",
            "0.3",
            "--augment.noise-snr",
            "5,10",
            "--augment.speeds",
            "0.95,1.05",
            "--augment.noise-manifest",
            "musan.jsonl.gz",
            "--augment.rir-manifest",
            "rirs.jsonl.gz",
        ]
    )
    cfg = build(Recipe, vars(args)).augment
    assert cfg.noise_prob == 0.3 and cfg.noise_snr == (5.0, 10.0) and cfg.speeds == (0.95, 1.05)
    assert cfg.noise_manifest == Path("musan.jsonl.gz") and cfg.rir_manifest == Path(
        "rirs.jsonl.gz"
    )
    assert cfg.reverb_prob == 0.45 and cfg.noise_kinds == ["coloured", "babble", "recorded"]
