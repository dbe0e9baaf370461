"""Additive noise: coloured noise, signal power, and mixing at a target SNR.

SNR here is ``10 log10(P_speech / P_noise)`` where ``P_speech`` is the *active* power of the
speech (mean square over its 20 ms frames that lie within :data:`ACTIVE_RANGE_DB` of the
loudest frame, so pauses do not lower it) and ``P_noise`` is the mean square of the added
noise over the whole segment (it is added everywhere). Speech or noise whose power is below
:data:`SILENCE_POWER` (-100 dBFS) is treated as silent: nothing is added, because no noise
level would reach the requested SNR and an arbitrary absolute level would turn a silent crop
into a pure-noise crop.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "ACTIVE_RANGE_DB",
    "FRAME",
    "SILENCE_POWER",
    "active_frames",
    "active_power",
    "coloured_noise",
    "frame_energies",
    "mean_power",
    "mix_at_snr",
]

FRAME = 320  # 20 ms at 16 kHz
ACTIVE_RANGE_DB = 40.0
SILENCE_POWER = 1e-10


def mean_power(x: torch.Tensor) -> float:
    """Mean square of all samples (0 for an empty signal)."""
    if x.numel() == 0:
        return 0.0
    return float(x.double().square().mean())


def frame_energies(x: torch.Tensor, frame: int = FRAME) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of squares, sample count) of each ``frame``-sample frame, in float64.

    A signal shorter than one frame is one frame; the last partial frame counts as a frame
    of its own length. Empty for an empty signal.
    """
    n = x.numel()
    sq = x.double().flatten().square()
    full = n // frame * frame
    energy = sq[:full].reshape(-1, frame).sum(1)
    count = torch.full((full // frame,), float(frame), dtype=torch.float64)
    if full < n:
        energy = torch.cat([energy, sq[full:].sum().reshape(1)])
        count = torch.cat([count, torch.tensor([float(n - full)], dtype=torch.float64)])
    return energy, count


def active_frames(power: torch.Tensor, range_db: float = ACTIVE_RANGE_DB) -> torch.Tensor:
    """Mask of the frames whose ``power`` lies within ``range_db`` of the loudest one."""
    if power.numel() == 0:
        return torch.zeros(0, dtype=torch.bool)
    return power >= power.max() * 10 ** (-range_db / 10)


def active_power(x: torch.Tensor, frame: int = FRAME) -> float:
    """Mean square over the frames within ``ACTIVE_RANGE_DB`` of the loudest one
    (frames as :func:`frame_energies`)."""
    if x.numel() == 0:
        return 0.0
    energy, count = frame_energies(x, frame)
    active = active_frames(energy / count)
    return float(energy[active].sum() / count[active].sum())


def coloured_noise(n: int, beta: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples of unit-power noise with power spectrum ``1 / f**beta``, no DC.

    beta 0 is white, 1 pink, 2 brown; made by shaping white Gaussian noise in the frequency
    domain (amplitude ``f**(-beta/2)``). Returns zeros when ``n < 2`` (no non-DC bin).
    """
    white = torch.randn(n, generator=generator)
    if n < 2:
        return torch.zeros(n)
    spec = torch.fft.rfft(white)
    freqs = torch.arange(spec.numel(), dtype=torch.float32)
    shape = torch.zeros_like(freqs)
    shape[1:] = freqs[1:].pow(-beta / 2)
    noise = torch.fft.irfft(spec * shape, n=n)
    power = mean_power(noise)
    return noise / math.sqrt(power) if power > 0 else noise


def mix_at_snr(speech: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """``speech`` plus ``noise`` (same length) scaled to ``snr_db`` (module docstring).

    Returns a copy of ``speech`` when either signal is silent.
    """
    if speech.shape != noise.shape:
        raise ValueError(f"speech {tuple(speech.shape)} and noise {tuple(noise.shape)} differ")
    p_speech, p_noise = active_power(speech), mean_power(noise)
    if p_speech < SILENCE_POWER or p_noise < SILENCE_POWER:
        return speech.clone()
    scale = math.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    return speech + (scale * noise).to(speech.dtype)
