"""Per-crop waveform augmentation for DINO and fine-tuning: speed, reverberation, noise, gain.

An :class:`Augmenter` takes one mono 16 kHz crop and returns a crop of the same length, in
this order, each step with its own probability (the order of Kaldi/Hyperion recipes: the
room acts on the speech, the noise is added at the microphone):

1. speed: resampled by a factor drawn from ``speeds`` (pitch and tempo change together).
   A faster crop is shorter and is zero-padded at the end; a slower one is longer and a
   random window of the original length is kept.
2. reverberation: a synthetic RIR (decaying noise with a drawn RT60 and direct-to-reverberant
   ratio) or a random RIR of ``rir_manifest``; no delay, input level kept (:mod:`.reverb`).
3. noise at a drawn SNR (:mod:`.noise` defines SNR and what silence does), of one kind drawn
   uniformly from those available: ``coloured`` (1/f^beta), ``babble`` (3-7 other
   utterances of the training pool, each at the same active power) and ``recorded`` (a
   random crop of a random recording of ``noise_manifest``, e.g. MUSAN).
4. gain in dB. Samples are float and are not clipped; a gain can take them past +-1.

All randomness comes from the ``torch.Generator`` passed to each call, so a crop is
reproducible from its seed. Noise and RIR files are read lazily and kept in memory up to
``cache_mb`` per process; the cache is not pickled, so DataLoader workers start empty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet
from lhotse.cut import Cut

from speechssl.audio.augment_config import NOISE_KINDS, AugmentConfig
from speechssl.audio.io import SAMPLE_RATE, anchor_paths, load_cut
from speechssl.audio.noise import SILENCE_POWER, active_power, coloured_noise, mix_at_snr
from speechssl.audio.reverb import prepare_rir, reverberate, synthetic_rir
from speechssl.errors import UserError

__all__ = ["Augmenter", "change_speed"]


class Augmenter:
    """Augments one crop at a time (module docstring); picklable for DataLoader workers.

    Args:
        cfg: what to apply and how often; checked here (:class:`UserError` when wrong).
        babble_pool: utterances to make babble from (typically the training cuts); without
            one, babble is not drawn. A crop may meet its own utterance in the babble.
    """

    def __init__(self, cfg: AugmentConfig, babble_pool: Sequence[Cut] | None = None):
        _validate(cfg)
        self.cfg = cfg
        self.babble_pool = list(babble_pool) if babble_pool is not None else []
        _check_rate(self.babble_pool, "babble pool")
        self.noise_cuts = _manifest(cfg.noise_manifest, "noise-manifest")
        self.rir_cuts = _manifest(cfg.rir_manifest, "rir-manifest")
        available = {
            "coloured": True,
            "babble": bool(self.babble_pool),
            "recorded": bool(self.noise_cuts),
        }
        self.kinds = [k for k in dict.fromkeys(cfg.noise_kinds) if available[k]]
        if cfg.noise_prob > 0 and not self.kinds:
            raise UserError(
                f"augmentation: none of the noise kinds {', '.join(cfg.noise_kinds)} is "
                "available (babble needs a pool of utterances, recorded needs noise-manifest)"
            )
        self._cache: dict[str, np.ndarray | torch.Tensor] = {}
        self._cache_bytes = 0

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"], state["_cache_bytes"] = {}, 0
        return state

    def __call__(self, wave: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """An augmented copy of ``wave`` (``[N]`` float32 at 16 kHz), also ``[N]``.

        Works on the CPU (where DataLoader workers run) with a CPU ``generator``; the result
        goes back to ``wave``'s device. Finite input gives finite output.
        """
        if wave.dim() != 1:
            raise ValueError(f"expected a 1-D wave, got shape {tuple(wave.shape)}")
        cfg, g = self.cfg, generator
        x = wave.detach().to("cpu", torch.float32, copy=True)
        n = x.numel()
        if n == 0:
            return x.to(wave.device)
        if _happens(cfg.speed_prob, g):
            factor = cfg.speeds[_randint(0, len(cfg.speeds) - 1, g)]
            x = _fit(change_speed(x, factor), n, g)
        if _happens(cfg.reverb_prob, g):
            x = reverberate(x, self._rir(g))
        if _happens(cfg.noise_prob, g):
            x = self._add_noise(x, g)
        if _happens(cfg.gain_prob, g):
            x = x * 10 ** (_uniform(cfg.gain_db, g) / 20)
        return x.to(wave.device)

    def describe(self) -> str:
        """One line saying what this augmenter does, for logs and run reports."""
        cfg = self.cfg
        parts = []
        if cfg.speed_prob > 0:
            parts.append(f"speed p={cfg.speed_prob:g} ({', '.join(f'{s:g}' for s in cfg.speeds)})")
        if cfg.reverb_prob > 0:
            if self.rir_cuts:
                room = f"{len(self.rir_cuts)} recorded RIRs"
            else:
                room = f"synthetic RIRs, RT60 {_rng(cfg.rt60)} s, DRR {_rng(cfg.drr_db)} dB"
            parts.append(f"reverb p={cfg.reverb_prob:g} ({room})")
        if cfg.noise_prob > 0:
            kinds = {
                "coloured": f"coloured beta {_rng(cfg.coloured_beta)} at {_rng(cfg.noise_snr)} dB",
                "babble": f"babble of {_rng(cfg.babble_speakers)} from {len(self.babble_pool)} "
                f"utterances at {_rng(cfg.babble_snr)} dB",
                "recorded": f"{len(self.noise_cuts)} noise recordings at {_rng(cfg.noise_snr)} dB",
            }
            parts.append(f"noise p={cfg.noise_prob:g} ({'; '.join(kinds[k] for k in self.kinds)})")
        if cfg.gain_prob > 0:
            parts.append(f"gain p={cfg.gain_prob:g} ({_rng(cfg.gain_db)} dB)")
        return ", ".join(parts) if parts else "no augmentation"

    # -- sources -------------------------------------------------------------------------

    def _rir(self, g: torch.Generator) -> torch.Tensor:
        if not self.rir_cuts:
            return synthetic_rir(_uniform(self.cfg.rt60, g), _uniform(self.cfg.drr_db, g), g)
        cut = self.rir_cuts[_randint(0, len(self.rir_cuts) - 1, g)]
        key = "rir:" + cut.id
        rir = self._cache.get(key)
        if rir is None:
            rir = prepare_rir(load_cut(cut))
            self._store(key, rir, rir.numel() * 4)
        return rir

    def _add_noise(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        cfg, n = self.cfg, x.numel()
        kind = self.kinds[_randint(0, len(self.kinds) - 1, g)]
        if kind == "coloured":
            noise = coloured_noise(n, _uniform(cfg.coloured_beta, g), g)
            return mix_at_snr(x, noise, _uniform(cfg.noise_snr, g))
        if kind == "recorded":
            cut = self.noise_cuts[_randint(0, len(self.noise_cuts) - 1, g)]
            noise = self._segment(cut, n, g, cache=True)
            return mix_at_snr(x, noise, _uniform(cfg.noise_snr, g))
        noise = torch.zeros(n)
        for _ in range(_randint(*cfg.babble_speakers, g)):
            cut = self.babble_pool[_randint(0, len(self.babble_pool) - 1, g)]
            voice = self._segment(cut, n, g, cache=False)
            power = active_power(voice)
            if power >= SILENCE_POWER:  # a silent utterance adds nothing
                noise = noise + voice / math.sqrt(power)
        return mix_at_snr(x, noise, _uniform(cfg.babble_snr, g))

    def _segment(self, cut: Cut, n: int, g: torch.Generator, cache: bool) -> torch.Tensor:
        """``n`` samples of ``cut`` from a random offset, looped when the cut is shorter."""
        key = "noise:" + cut.id
        audio = self._cache.get(key) if cache else None
        if audio is None and cache and self._fits(cut.num_samples * 4):
            audio = load_cut(cut)
            self._store(key, audio, audio.nbytes)
        elif audio is None and cut.num_samples <= n:
            audio = load_cut(cut)
        if audio is not None:
            return _window(torch.from_numpy(np.asarray(audio)), n, g)
        # Long and not cached: read only the window.
        start = _randint(0, cut.num_samples - n, g)
        part = cut.truncate(offset=start / SAMPLE_RATE, duration=n / SAMPLE_RATE, preserve_id=True)
        return _fit_end(torch.from_numpy(load_cut(part)), n)

    def _fits(self, nbytes: int) -> bool:
        return self._cache_bytes + nbytes <= self.cfg.cache_mb * 2**20

    def _store(self, key: str, value: np.ndarray | torch.Tensor, nbytes: int) -> None:
        if self._fits(nbytes):
            self._cache[key] = value
            self._cache_bytes += nbytes


def change_speed(wave: torch.Tensor, factor: float, zeros: int = 16) -> torch.Tensor:
    """``wave`` played ``factor`` times faster: ``round(N / factor)`` samples.

    Band-limited (Hann-windowed sinc, ``zeros`` zero crossings a side) interpolation at
    input positions ``m * factor``; when speeding up, the cutoff drops to ``1 / factor`` of
    Nyquist so nothing aliases. ``factor`` is taken as the nearest fraction ``num / den``
    with ``den <= 100`` (0.9 and 1.1 exactly), so the output sample ``m = r + den * k``
    has one of ``den`` fractional phases ``r`` and all of them come out of one strided
    convolution (polyphase resampling).
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    step = Fraction(factor).limit_denominator(100)
    num, den = step.numerator, step.denominator
    n = wave.numel()
    if num == den or n == 0:
        return wave.clone()
    m = max(1, round(n * den / num))
    cutoff = min(1.0, den / num)
    half = math.ceil(zeros / cutoff)
    phase = torch.arange(den, dtype=torch.int64)
    base = phase * num // den  # integer part of phase r's position
    frac = (phase * num % den).to(torch.float64) / den
    taps = torch.arange(-half + 1, half + 1, dtype=torch.int64)
    dist = frac[:, None] - taps[None, :]
    hann = 0.5 * (1 + torch.cos(math.pi * dist / half)) * (dist.abs() < half)
    kernel = (cutoff * torch.sinc(cutoff * dist) * hann).float()
    # Phase r's kernel placed at offset base[r] of a window that the stride num slides on.
    width = 2 * half + num
    weight = torch.zeros(den, width)
    weight.scatter_(1, base[:, None] + torch.arange(2 * half)[None, :], kernel)
    blocks = -(-m // den)
    right = max(0, num * (blocks - 1) + width - (n + half - 1))
    padded = torch.nn.functional.pad(wave.float()[None, None], (half - 1, right))
    out = torch.nn.functional.conv1d(padded, weight[:, None], stride=num)[0, :, :blocks]
    return out.T.reshape(-1)[:m].to(wave.dtype)


# -- helpers ---------------------------------------------------------------------------------


def _happens(prob: float, g: torch.Generator) -> bool:
    if prob <= 0:
        return False
    return prob >= 1 or float(torch.rand(1, generator=g)) < prob


def _uniform(bounds: Sequence[float], g: torch.Generator) -> float:
    lo, hi = bounds
    return lo + (hi - lo) * float(torch.rand(1, generator=g))


def _randint(lo: int, hi: int, g: torch.Generator) -> int:
    """Uniform integer in ``[lo, hi]`` (both included)."""
    return int(torch.randint(int(lo), int(hi) + 1, (1,), generator=g))


def _window(audio: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """A random ``n``-sample window of ``audio``; a shorter ``audio`` is looped from a random start."""
    total = audio.numel()
    if total == 0:
        return torch.zeros(n)
    if total >= n:
        start = _randint(0, total - n, g)
        return audio[start : start + n]
    start = _randint(0, total - 1, g)
    return audio.repeat(-(-(n + start) // total))[start : start + n]


def _fit(wave: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """Back to ``n`` samples after a speed change: random window if longer, zeros at the end if shorter."""
    if wave.numel() > n:
        return _window(wave, n, g)
    return _fit_end(wave, n)


def _fit_end(wave: torch.Tensor, n: int) -> torch.Tensor:
    if wave.numel() >= n:
        return wave[:n]
    return torch.cat([wave, wave.new_zeros(n - wave.numel())])


def _rng(bounds: Sequence[float]) -> str:
    lo, hi = bounds
    return f"{lo:g}" if lo == hi else f"{lo:g} to {hi:g}"


def _manifest(path: str | Path | None, option: str) -> list[Cut]:
    if path is None:
        return []
    path = Path(path)
    if path.is_dir():
        raise UserError(
            f"augmentation {option} must be a CutSet manifest (.jsonl.gz from "
            f"`speechssl data prepare folder`), not a folder: {path}"
        )
    if not path.is_file():
        raise UserError(f"augmentation {option}: cut manifest not found: {path}")
    try:
        cuts = [anchor_paths(c, path.parent) for c in CutSet.from_file(path)]
    except Exception as exc:
        raise UserError(
            f"augmentation {option}: {path} is not a lhotse CutSet manifest ({exc})"
        ) from None
    if not cuts:
        raise UserError(f"augmentation {option}: cut manifest is empty: {path}")
    _check_rate(cuts, option)
    return cuts


def _check_rate(cuts: Sequence[Cut], what: str) -> None:
    bad = next((c for c in cuts if c.sampling_rate != SAMPLE_RATE), None)
    if bad is not None:
        raise UserError(
            f"augmentation {what}: cut {bad.id} is at {bad.sampling_rate} Hz, not "
            f"{SAMPLE_RATE} (prepare it with `speechssl data prepare`)"
        )


def _validate(cfg: AugmentConfig) -> None:
    def fail(option: str, why: str) -> None:
        raise UserError(f"augmentation option {option.replace('_', '-')}: {why}")

    for name in ("noise_prob", "reverb_prob", "speed_prob", "gain_prob"):
        p = getattr(cfg, name)
        if not 0.0 <= p <= 1.0:
            fail(name, f"a probability must lie in [0, 1], got {p}")
    ranges = {
        "noise_snr": None,
        "babble_snr": None,
        "coloured_beta": None,
        "gain_db": None,
        "drr_db": None,
        "rt60": 0.0,
        "babble_speakers": 1,
    }
    for name, floor in ranges.items():
        bounds = tuple(getattr(cfg, name))
        if len(bounds) != 2:
            fail(name, f"expected two values LOW,HIGH, got {len(bounds)}")
        lo, hi = bounds
        if not (math.isfinite(lo) and math.isfinite(hi)):
            fail(name, f"bounds must be finite, got {lo}, {hi}")
        if lo > hi:
            fail(name, f"range is reversed ({lo} > {hi})")
        if floor is not None and (lo < floor or (floor == 0.0 and lo <= 0)):
            fail(name, f"must be {'positive' if floor == 0.0 else f'at least {floor}'}, got {lo}")
    unknown = [k for k in cfg.noise_kinds if k not in NOISE_KINDS]
    if unknown:
        fail("noise_kinds", f"unknown kind {unknown[0]!r} (known: {', '.join(NOISE_KINDS)})")
    if cfg.speed_prob > 0 and not cfg.speeds:
        fail("speeds", "no speed factors given")
    if any(not (0.25 <= s <= 4.0) for s in cfg.speeds):
        fail("speeds", f"factors must lie in [0.25, 4], got {', '.join(map(str, cfg.speeds))}")
    if cfg.cache_mb < 0:
        fail("cache_mb", f"must not be negative, got {cfg.cache_mb}")
