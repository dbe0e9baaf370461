"""The per-batch state every extractor reads: cleaned audio, frames and shared intermediates.

A :class:`FrameContext` is built once per :func:`~speechssl.pseudolabels.extract` call. Its
intermediates (frames, power spectrum, the 26-band auditory mel spectrum, the pitch track) are
computed lazily on first use and then reused, so asking for fifteen pseudo-labels costs little
more than the most expensive one.

Frame convention: exactly that of :mod:`speechssl.audio.features` (window 400 samples, hop 160,
no centering; frame ``k`` covers samples ``[160 k, 160 k + 400)``, centre ``160 k + 200``), so
pseudo-labels align one-to-one with :class:`~speechssl.audio.features.LogMel` frames. The pitch
analysis uses a longer window centred on the same frame centres (see :mod:`.periodicity`).

Bad input never raises: non-finite samples become 0, samples past each row's length are set to
0 (so padding cannot leak into any frame), and counts of what was found go to ``warnings``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TypeVar

import torch

from speechssl.audio.features import LogMel, Mfcc, mel_filterbank, num_frames
from speechssl.audio.io import SAMPLE_RATE
from speechssl.errors import UserError
from speechssl.pseudolabels.periodicity import PitchTrack, tiles, track_pitch

__all__ = ["FrameContext", "WIN", "HOP", "N_FFT", "CLIP_LEVEL", "SILENT_PEAK"]

WIN, HOP, N_FFT = 400, 160, 512
CLIP_LEVEL = 0.999  # a sample at or above this magnitude counts as clipped (full scale is 1.0)
SILENT_PEAK = 1e-5  # an item whose peak magnitude stays below this (-100 dBFS) counts as silent

SPECTRUM_TILE = 1024  # CPU tile (frames per FFT call) that keeps the working set in cache

T = TypeVar("T")

_MODULES: dict[tuple[str, str], torch.nn.Module] = {}


def _module(kind: str, device: torch.device) -> torch.nn.Module:
    """One LogMel / Mfcc per device, built on first use (they hold only buffers)."""
    key = (kind, str(device))
    if key not in _MODULES:
        module = LogMel() if kind == "logmel" else Mfcc()
        _MODULES[key] = module.to(device).eval()
    return _MODULES[key]


class FrameContext:
    """Cleaned batch plus lazily computed, shared intermediates.

    Attributes set at construction: ``wave`` ``[B, N]`` float32 (finite, zero past
    ``lengths``), ``lengths`` ``[B]``, ``counts`` ``[B]`` frames per item, ``n_frames`` (T, the
    batch maximum), ``mask`` ``[B, T]`` (True = valid frame), ``peak`` ``[B]`` (largest
    magnitude per item) and ``warnings`` (counts).
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> None:
        if not isinstance(wave, torch.Tensor):
            raise UserError(f"wave must be a torch.Tensor [B, N], got {type(wave).__name__}")
        if wave.dim() == 1:
            wave = wave[None]
        if wave.dim() != 2:
            raise UserError(f"wave must have shape [B, N], got {tuple(wave.shape)}")
        batch, total = wave.shape
        if lengths is None:
            lengths = torch.full((batch,), total, dtype=torch.int64)
        lengths = torch.as_tensor(lengths).to(device=wave.device, dtype=torch.int64)
        if lengths.shape != (batch,):
            raise UserError(f"lengths must have shape [{batch}], got {tuple(lengths.shape)}")
        if batch and (int(lengths.min()) < 0 or int(lengths.max()) > total):
            raise UserError(f"lengths must lie in [0, {total}]")

        valid = torch.arange(total, device=wave.device)[None, :] < lengths[:, None]
        wave = wave.to(torch.float32)
        bad = ~torch.isfinite(wave) & valid
        wave = torch.where(valid & ~bad, wave, torch.zeros((), device=wave.device))
        peak = wave.abs().amax(dim=1) if total else wave.new_zeros(batch)
        self.wave = wave
        self.lengths = lengths
        self.counts = num_frames(lengths, WIN, HOP).to(wave.device)
        self.n_frames = int(self.counts.max()) if batch else 0
        self.mask = torch.arange(self.n_frames, device=wave.device)[None, :] < self.counts[:, None]
        self.peak = peak
        clipped = peak >= CLIP_LEVEL  # counting only rows that can have clipped samples is cheap
        self.warnings = {
            "nan_samples": int(bad.sum()) if bool(bad.any()) else 0,
            "clipped": int((wave[clipped].abs() >= CLIP_LEVEL).sum()) if bool(clipped.any()) else 0,
            "too_short": int((lengths < WIN).sum()),
            "silent": int((peak < SILENT_PEAK).sum()),
        }
        self._cache: dict[str, object] = {}

    @property
    def batch_size(self) -> int:
        return self.wave.shape[0]

    @property
    def device(self) -> torch.device:
        return self.wave.device

    def memo(self, key: str, fn: Callable[[], T]) -> T:
        """``fn()`` computed once per context under ``key``: for intermediates of new extractors."""
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]  # type: ignore[return-value]

    def zeros(self, *dims: int) -> torch.Tensor:
        """A float32 zero tensor ``[B, T, *dims]`` on the batch's device."""
        return self.wave.new_zeros((self.batch_size, self.n_frames, *dims))

    # --- spectral intermediates (frames of 400 samples, periodic Hann, n_fft 512) ---------

    @cached_property
    def frames(self) -> torch.Tensor:
        """``[B, T, 400]`` raw frames (a view of ``wave``), the same frames as LogMel's."""
        if self.n_frames == 0:
            return self.zeros(WIN)
        return self.wave.unfold(1, WIN, HOP)[:, : self.n_frames]

    @cached_property
    def power(self) -> torch.Tensor:
        """``[B, T, 257]`` power spectrum ``|rfft(frame * hann, 512)|^2``, LogMel's conventions.

        LogMel keeps its spectrum internal, so it is formed here once for all spectral
        extractors, with LogMel's own window buffer and FFT size. Exactly 0 on padding.
        """
        out = self.zeros(N_FFT // 2 + 1)
        window = _module("logmel", self.device).window
        tile = SPECTRUM_TILE if self.device.type == "cpu" else 0
        for rows, cols in tiles(self.counts.tolist(), self.n_frames, tile):
            spec = torch.fft.rfft(self.frames[rows, cols] * window, n=N_FFT)
            out[rows, cols] = spec.real.square() + spec.imag.square()
        return out

    @cached_property
    def magnitude(self) -> torch.Tensor:
        """``[B, T, 257]`` magnitude spectrum."""
        return self.power.sqrt()

    @cached_property
    def freqs(self) -> torch.Tensor:
        """``[257]`` bin frequencies in Hz."""
        return torch.arange(N_FFT // 2 + 1, device=self.device) * (self.sample_rate / N_FFT)

    @cached_property
    def auditory_mel(self) -> torch.Tensor:
        """``[B, T, 26]`` mel-band power, 20-8000 Hz: openSMILE's input to its auditory spectrum."""
        fb = _mel26(self.device)
        return self.power @ fb

    @cached_property
    def logmel(self) -> torch.Tensor:
        """``[B, T, 80]`` log-mel from :class:`~speechssl.audio.features.LogMel` itself."""
        return _module("logmel", self.device)(self.wave, self.lengths).features

    @cached_property
    def mfcc(self) -> torch.Tensor:
        """``[B, T, 39]`` MFCC + deltas from :class:`~speechssl.audio.features.Mfcc` itself."""
        return _module("mfcc", self.device)(self.wave, self.lengths).features

    # --- periodicity ----------------------------------------------------------------------

    @cached_property
    def pitch(self) -> PitchTrack:
        """F0, periodicity strength, voicing, periods and amplitudes (see :mod:`.periodicity`)."""
        return track_pitch(self.wave, self.lengths, self.counts, self.n_frames, self.peak)

    @property
    def voiced(self) -> torch.Tensor:
        """``[B, T]`` bool voicing decision (False on padding)."""
        return self.pitch.voiced & self.mask


_MEL26: dict[str, torch.Tensor] = {}


def _mel26(device: torch.device) -> torch.Tensor:
    key = str(device)
    if key not in _MEL26:
        _MEL26[key] = mel_filterbank(26, N_FFT, SAMPLE_RATE, 20.0, 8000.0).to(device)
    return _MEL26[key]
