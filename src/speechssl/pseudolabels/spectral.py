"""Energy and spectral-shape pseudo-labels on the shared 25 ms frames.

Definitions follow openSMILE's eGeMAPS v02 / ComParE 2016 low-level descriptors (read from its
config files and documentation) on our frames: 400-sample periodic-Hann frames, 512-point FFT,
100 frames/s. openSMILE uses 20 ms Hamming frames for these; that and its 3-frame smoothing
(``_sma``) are the remaining differences (see ``benchmarks/results/pseudolabels.md``).

Levels are for float audio in [-1, 1] with an unnormalised FFT; openSMILE scales some of them
differently, which changes no correlation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from speechssl.audio.features import hz_to_mel, mel_to_hz
from speechssl.pseudolabels.context import HOP, WIN, FrameContext
from speechssl.pseudolabels.registry import register

DB_EPS = 1e-10  # power floor before a logarithm: digital silence gives 0 dB ratios, 0 slopes
COMPRESSION = 0.33  # Stevens' power law, as in PLP and openSMILE's auditory spectrum
RASTA_TAPS = 160  # the RASTA pole's impulse response is cut where it has decayed below 3e-5
MEL_FLOOR = 1e-8  # band-power floor before the logarithm in RASTA filtering
BIN_HZ = 16000 / 512  # FFT bin spacing


def equal_loudness(freq_hz: torch.Tensor) -> torch.Tensor:
    """Hermansky's (1990) equal-loudness weight, in the variant openSMILE's PLP uses.

    ``E(w) = 1e32 (w^2 + 56.8e6) w^4 / ((w^2 + 6.3e6)^2 (w^2 + 0.38e9) (w^7 + 1.7e31))`` with
    ``w = 2 pi f``: about 1 in the 1-4 kHz range, falling off below 500 Hz and above 5 kHz.
    """
    w = 2 * math.pi * freq_hz.double()
    w2 = w * w
    num = 1e32 * (w2 + 56.8e6) * w2 * w2
    den = (w2 + 6.3e6) ** 2 * (w2 + 0.38e9) * (w2**3 * w + 1.7e31)
    return (num / den).float()


def _band_centres() -> torch.Tensor:
    """Centre frequencies (Hz) of the 26 mel bands of ``FrameContext.auditory_mel``."""
    edges = mel_to_hz(np.linspace(hz_to_mel(20.0), hz_to_mel(8000.0), 28))
    return torch.as_tensor(edges[1:-1], dtype=torch.float32)


def auditory_spectrum(ctx: FrameContext) -> torch.Tensor:
    """``[B, T, 26]`` PLP auditory spectrum: (mel power x equal-loudness weight) ** 0.33."""

    def compute() -> torch.Tensor:
        weight = equal_loudness(_band_centres()).to(ctx.device)
        return (ctx.auditory_mel * weight).pow(COMPRESSION)

    return ctx.memo("auditory_spectrum", compute)


def _rasta(logspec: torch.Tensor) -> torch.Tensor:
    """RASTA band-pass (1-29 Hz at 100 frames/s) along time of ``[B, T, D]``, causal.

    FIR part ``[2, 1, 0, -1, -2] / norm`` (derived from the 29 Hz edge), then the pole
    ``1 - sin(2 pi 1 Hz / 100)``; like openSMILE's 'newRASTA', the first four frames, whose FIR
    would read before the start, are 0 and do not enter the pole's memory. Causal filtering
    never reads padding, so batches equal single items.
    """
    batch, frames, dim = logspec.shape
    om = math.cos(2 * math.pi * 29.0 / 100.0)
    norm = math.sqrt(10.0 * (32.0 * om * om + 8.0))
    fir = torch.tensor([2.0, -4.0 * om, 0.0, 4.0 * om, -2.0], device=logspec.device) / norm
    pole = 1.0 - math.sin(2 * math.pi * 1.0 / 100.0)
    x = logspec.permute(0, 2, 1).reshape(batch * dim, 1, frames)
    # conv1d correlates: flip the causal kernels so output t sees inputs t, t-1, ...
    y = F.conv1d(F.pad(x, (4, 0)), fir.flip(0).view(1, 1, -1))
    y[..., :4] = 0.0
    # the pole as a convolution with its impulse response pole**k, done by FFT
    n_fft = frames + RASTA_TAPS
    iir = pole ** torch.arange(RASTA_TAPS, device=logspec.device, dtype=torch.float64)
    spec = torch.fft.rfft(y, n=n_fft) * torch.fft.rfft(iir.float(), n=n_fft)
    y = torch.fft.irfft(spec, n=n_fft)[..., :frames]
    return y.reshape(batch, dim, frames).permute(0, 2, 1)


def _band(lo: float, hi: float, hi_inclusive: bool = True) -> slice:
    """FFT bins with ``lo <= f <= hi`` (``< hi`` if not ``hi_inclusive``) as a slice."""
    first = math.ceil(lo / BIN_HZ)
    last = math.floor(hi / BIN_HZ) if hi_inclusive else math.ceil(hi / BIN_HZ) - 1
    return slice(first, last + 1)


@register("loudness", description="eGeMAPS Loudness: L1 norm of the auditory spectrum (sone-like)")
def loudness(ctx: FrameContext) -> torch.Tensor:
    return auditory_spectrum(ctx).sum(dim=-1)


@register(
    "audspec_l1",
    description="ComParE audspec_lengthL1norm: the same quantity as loudness, ComParE's name",
)
def audspec_l1(ctx: FrameContext) -> torch.Tensor:
    return auditory_spectrum(ctx).sum(dim=-1)


@register(
    "audspec_rasta_l1",
    description="ComParE audspecRasta_lengthL1norm: L1 norm of the RASTA-filtered audspec",
)
def audspec_rasta_l1(ctx: FrameContext) -> torch.Tensor:
    if ctx.n_frames == 0:
        return ctx.zeros()
    weight = equal_loudness(_band_centres()).to(ctx.device)
    filtered = _rasta(ctx.auditory_mel.clamp_min(MEL_FLOOR).log())
    return (COMPRESSION * (filtered + weight.log())).exp().sum(dim=-1)


@register("rms", description="root mean square of the 25 ms frame (rectangular window)")
def rms(ctx: FrameContext) -> torch.Tensor:
    if ctx.n_frames == 0:
        return ctx.zeros()
    energy = ctx.wave.square().unfold(1, WIN, HOP)[:, : ctx.n_frames].sum(dim=-1)
    return (energy / WIN).sqrt()


@register("zcr", description="zero-crossing rate: fraction of adjacent sample pairs changing sign")
def zcr(ctx: FrameContext) -> torch.Tensor:
    if ctx.n_frames == 0:
        return ctx.zeros()
    sign = ctx.wave >= 0
    changes = (sign[:, 1:] != sign[:, :-1]).float()  # changes[:, j]: between samples j, j + 1
    return changes.unfold(1, WIN - 1, HOP)[:, : ctx.n_frames].mean(dim=-1)


@register("alpha_ratio", description="alpha ratio (dB): power 1-5 kHz over power 0-1 kHz")
def alpha_ratio(ctx: FrameContext) -> torch.Tensor:
    low = ctx.power[..., _band(0, 1000, False)].sum(-1)
    high = ctx.power[..., _band(1000, 5000)].sum(-1)
    return 10 * torch.log10((high + DB_EPS) / (low + DB_EPS))


@register(
    "hammarberg", description="Hammarberg index (dB): strongest bin 0-2 kHz over strongest 2-5 kHz"
)
def hammarberg(ctx: FrameContext) -> torch.Tensor:
    low = ctx.power[..., _band(0, 2000, False)].amax(-1)
    high = ctx.power[..., _band(2000, 5000)].amax(-1)
    return 10 * torch.log10((low + DB_EPS) / (high + DB_EPS))


def _slope_weights(ctx: FrameContext, bands: list[tuple[float, float]]) -> torch.Tensor:
    """``[257, len(bands)]``: least-squares slope of y over f in each band as one matmul."""
    cols = []
    for lo, hi in bands:
        inside = torch.zeros_like(ctx.freqs)
        inside[_band(lo, hi)] = 1.0
        n = inside.sum()
        centred = (ctx.freqs - (ctx.freqs * inside).sum() / n) * inside
        cols.append(centred / centred.square().sum())
    return torch.stack(cols, dim=1)


@register(
    "spectral_slope",
    dim=2,
    description="eGeMAPS slope0-500 and slope500-1500: regression slope of the dB spectrum (dB/Hz)",
)
def spectral_slope(ctx: FrameContext) -> torch.Tensor:
    weights = _slope_weights(ctx, [(0.0, 500.0), (500.0, 1500.0)])
    top = _band(0.0, 1500.0).stop
    return 10 * torch.log10(ctx.power[..., :top] + DB_EPS) @ weights[:top]


@register(
    "spectral_flux",
    description="spectral flux 0-5 kHz: RMS change of the magnitude spectrum since the last frame",
)
def spectral_flux(ctx: FrameContext) -> torch.Tensor:
    mag = ctx.power[..., _band(0, 5000, False)].sqrt()
    flux = ctx.zeros()
    if ctx.n_frames > 1:
        flux[:, 1:] = (mag[:, 1:] - mag[:, :-1]).square().mean(dim=-1).sqrt()
    return flux


@register(
    "mfcc", dim=39, description="13 MFCCs + deltas + delta-deltas, exactly audio.features.Mfcc"
)
def mfcc(ctx: FrameContext) -> torch.Tensor:
    return ctx.mfcc


@register("logmel", dim=80, description="80-band log-mel, exactly audio.features.LogMel")
def logmel(ctx: FrameContext) -> torch.Tensor:
    return ctx.logmel
