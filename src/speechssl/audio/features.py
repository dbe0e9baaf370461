"""Log-mel filterbank and MFCC features, batched and padding-aware.

Conventions (shared by every model that consumes these features):

* Frames are taken without centering (``center=False``): frame ``i`` covers samples
  ``[i * hop, i * hop + win)``. An utterance of ``T`` samples therefore has
  ``F = 1 + (T - win) // hop`` frames when ``T >= win`` and ``F = 0`` otherwise; the
  trailing ``(T - win) % hop`` samples are dropped. With the defaults (400 / 160) one second
  of audio gives 98 frames. Inputs shorter than one window give zero frames, never an error.
* Each 400-sample frame is multiplied by a periodic Hann window and zero-padded at the end to
  ``n_fft = 512`` before the real FFT; the power spectrum ``|X|^2`` goes through an HTK mel
  filterbank (triangles of peak 1, no area normalisation) and then ``log(mel + floor)`` with
  ``floor = 1e-6``, so digital silence maps to ``log(1e-6) ~= -13.8`` instead of ``-inf``.
* The padding mask is ``True`` on valid frames and ``False`` on padding (the opposite of
  ``torch.nn.MultiheadAttention``'s ``key_padding_mask``, which wants ``~mask``).
  Features of padded frames are set to exactly ``0``.

Because frames never read past an utterance's own length, the features of a batch equal the
per-utterance features on valid frames, whatever the padding holds. :class:`Mfcc` (the DCT of
a log-mel, with deltas) keeps that property: its deltas repeat each row's last valid frame.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from speechssl.audio.io import SAMPLE_RATE

__all__ = [
    "LogMel",
    "LogMelOutput",
    "Mfcc",
    "dct_matrix",
    "deltas",
    "hz_to_mel",
    "mel_filterbank",
    "mel_to_hz",
    "num_frames",
]


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray | float:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray | float:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int = 80,
    n_fft: int = 512,
    sample_rate: int = SAMPLE_RATE,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> torch.Tensor:
    """HTK triangular mel filterbank as a float32 tensor of shape ``[n_fft // 2 + 1, n_mels]``.

    ``n_mels + 2`` edges are spaced evenly on the HTK mel scale from ``f_min`` to ``f_max``
    (default: Nyquist); filter ``m`` rises linearly from edge ``m`` to a peak of 1 at edge
    ``m + 1`` and falls to 0 at edge ``m + 2``, evaluated at the FFT bin frequencies
    ``k * sample_rate / n_fft``. The layout (frequency first) lets ``power @ fb`` map a
    ``[..., n_freqs]`` power spectrum to ``[..., n_mels]`` in a single matmul.

    Raises ``ValueError`` when some filter would cover no FFT bin (too many mels for this
    ``n_fft``): an all-zero channel would be constant ``log(floor)`` and silently useless.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= {sample_rate / 2}, got {f_min}, {f_max}")
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    bins_hz = np.arange(n_fft // 2 + 1, dtype=np.float64) * sample_rate / n_fft
    lower, center, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
    f = bins_hz[:, None]
    rising = (f - lower) / (center - lower)
    falling = (upper - f) / (upper - center)
    fb = np.clip(np.minimum(rising, falling), 0.0, None)
    empty = np.flatnonzero(fb.sum(axis=0) == 0)
    if empty.size:
        raise ValueError(
            f"{empty.size} of {n_mels} mel filters cover no FFT bin (first: {empty[0]}); "
            "use fewer mels, a larger n_fft or a higher f_min"
        )
    return torch.from_numpy(fb.astype(np.float32))


def num_frames(lengths: torch.Tensor, win_length: int = 400, hop_length: int = 160) -> torch.Tensor:
    """Frames per utterance: ``1 + (T - win) // hop`` if ``T >= win`` else ``0`` (int64)."""
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    return torch.where(
        lengths >= win_length,
        1 + torch.div(lengths - win_length, hop_length, rounding_mode="floor"),
        torch.zeros_like(lengths),
    )


class LogMelOutput(NamedTuple):
    """What :class:`LogMel` returns; unpacks as ``features, mask, num_frames``."""

    features: torch.Tensor  # [B, F, n_mels] float32, exactly 0 on padded frames
    mask: torch.Tensor  # [B, F] bool, True = valid frame
    num_frames: torch.Tensor  # [B] int64, == mask.sum(1)


class LogMel(torch.nn.Module):
    """Batched log-mel front-end (see the module docstring for the exact conventions).

    Framing is an ``unfold`` of the padded batch (a view, no copy) followed by batched ``rfft``
    and a matmul with the filterbank. On CPU the batch is processed in tiles of about
    ``chunk_frames`` frames so the working set stays in cache; this is a speed knob only and
    does not change the result. On other devices the whole batch is one tile. The window and
    filterbank are non-persistent buffers: they follow ``.to(device)`` but are not written
    into checkpoints (they are a pure function of the constructor arguments).
    """

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        n_mels: int = 80,
        n_fft: int = 512,
        win_length: int = 400,
        hop_length: int = 160,
        f_min: float = 0.0,
        f_max: float | None = None,
        floor: float = 1e-6,
        chunk_frames: int = 1024,
    ) -> None:
        super().__init__()
        if win_length > n_fft:
            raise ValueError(f"win_length {win_length} > n_fft {n_fft}")
        if hop_length <= 0 or floor <= 0:
            raise ValueError("hop_length and floor must be positive")
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.floor = floor
        self.chunk_frames = max(1, chunk_frames)
        self.register_buffer(
            "window", torch.hann_window(win_length, periodic=True), persistent=False
        )
        self.register_buffer(
            "fb", mel_filterbank(n_mels, n_fft, sample_rate, f_min, f_max), persistent=False
        )

    @property
    def frame_rate(self) -> float:
        """Frames per second (100 with the defaults)."""
        return self.sample_rate / self.hop_length

    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frame counts for sample counts ``lengths``, with this module's window and hop."""
        return num_frames(lengths, self.win_length, self.hop_length)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> LogMelOutput:
        """Features of a padded batch.

        ``wave``: ``[B, T]`` float waveforms at ``sample_rate``; ``lengths``: ``[B]`` valid
        samples per row (``None`` = all ``T``). The output has ``F = max(num_frames)`` frames,
        which may be 0 when every input is shorter than one window.
        """
        if wave.dim() != 2:
            raise ValueError(f"expected waveforms [B, T], got shape {tuple(wave.shape)}")
        batch, total = wave.shape
        if lengths is None:
            lengths = torch.full((batch,), total, dtype=torch.int64)
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must have shape [{batch}], got {tuple(lengths.shape)}")
        lengths_list = lengths.tolist()  # one host sync; the tiling below needs the counts
        if batch and (min(lengths_list) < 0 or max(lengths_list) > total):
            raise ValueError(f"lengths must lie in [0, {total}]")
        counts = self.num_frames(lengths).to(wave.device)
        counts_list = [max(0, 1 + (n - self.win_length) // self.hop_length) for n in lengths_list]
        n_out = max(counts_list, default=0)
        mask = torch.arange(n_out, device=wave.device)[None, :] < counts[:, None]
        feats = wave.new_zeros((batch, n_out, self.n_mels), dtype=self.fb.dtype)
        if n_out == 0:
            return LogMelOutput(feats, mask, counts)

        # Frames are views into the wave; each only reads samples inside its own row's length.
        frames = wave.to(self.fb.dtype).unfold(1, self.win_length, self.hop_length)
        # On CPU, tiles of ~chunk_frames frames keep the FFT/matmul working set in cache
        # (faster than one huge tensor for batches of long files: benchmarks/results/
        # logmel.md); GPUs prefer one tile.
        tile = self.chunk_frames if wave.device.type == "cpu" else batch * n_out
        rows = max(1, tile // n_out)
        step = min(n_out, tile)
        for b0 in range(0, batch, rows):
            needed = max(counts_list[b0 : b0 + rows])  # skip frames that are all padding
            for f0 in range(0, needed, step):
                block = frames[b0 : b0 + rows, f0 : min(needed, f0 + step)] * self.window
                spec = torch.fft.rfft(block, n=self.n_fft)
                power = spec.real.square() + spec.imag.square()
                mel = torch.matmul(power, self.fb)
                feats[b0 : b0 + rows, f0 : f0 + mel.shape[1]] = torch.log(mel + self.floor)
        if min(counts_list) < n_out:
            feats.masked_fill_(~mask[..., None], 0.0)
        return LogMelOutput(feats, mask, counts)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_mels={self.n_mels}, n_fft={self.n_fft}, "
            f"win_length={self.win_length}, hop_length={self.hop_length}, floor={self.floor}"
        )


def dct_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Orthonormal DCT-II basis ``[n_in, n_out]`` (the MFCC transform of log-mel energies)."""
    n = torch.arange(n_in, dtype=torch.float64)
    k = torch.arange(n_out, dtype=torch.float64)
    basis = torch.cos(math.pi / n_in * (n[:, None] + 0.5) * k[None, :]) * math.sqrt(2.0 / n_in)
    basis[:, 0] /= math.sqrt(2.0)
    return basis.float()


def deltas(x: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Regression deltas over time of ``[B, F, D]`` (edge frames repeated), HTK formula."""
    if x.shape[1] == 0:
        return x.clone()
    padded = torch.cat([x[:, :1].expand(-1, width, -1), x, x[:, -1:].expand(-1, width, -1)], 1)
    frames = x.shape[1]
    num = sum(
        k * (padded[:, width + k : width + k + frames] - padded[:, width - k : width - k + frames])
        for k in range(1, width + 1)
    )
    return num / (2 * sum(k * k for k in range(1, width + 1)))


class Mfcc(torch.nn.Module):
    """13 MFCCs (orthonormal DCT of 40 log-mel bins, no lifter) with deltas and delta-deltas:
    39 dims at the log-mel's frames. Returns a :class:`LogMelOutput` (features ``[B, F, D]``,
    0 on padded frames)."""

    def __init__(self, n_mfcc: int = 13, n_mels: int = 40, with_deltas: bool = True):
        super().__init__()
        self.logmel = LogMel(n_mels=n_mels)
        self.register_buffer("dct", dct_matrix(n_mels, n_mfcc), persistent=False)
        self.with_deltas = with_deltas
        self.dim = n_mfcc * (3 if with_deltas else 1)

    @property
    def frame_rate(self) -> float:
        return self.logmel.frame_rate

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> LogMelOutput:
        feats, mask, counts = self.logmel(wave, lengths)
        c = feats @ self.dct
        if self.with_deltas:
            # Repeat each row's last valid frame into its padding before each delta, so that
            # deltas near the end of a row are the same as for that utterance alone.
            t = torch.arange(c.shape[1], device=c.device)[None, :]
            idx = torch.minimum(t, (counts - 1).clamp(min=0)[:, None])[..., None]

            def extend(x: torch.Tensor) -> torch.Tensor:
                return x.gather(1, idx.expand(-1, -1, x.shape[-1]))

            d = deltas(extend(c))
            c = torch.cat([c, d, deltas(extend(d))], dim=-1)
        return LogMelOutput(c * mask[..., None], mask, counts)
