"""The one interface every encoder offers: all hidden states plus a padding mask.

Indicators, probes and teachers read any layer of any upstream through it, whether the
upstream is one of ours, a transformers checkpoint or a plain feature (``fbank``, ``mfcc``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from speechssl.audio.features import LogMel


class UpstreamOutput(NamedTuple):
    hidden_states: list[torch.Tensor]  # one [B, F, D] tensor per layer, input layer first
    mask: torch.Tensor  # [B, F] bool, True = valid frame


class Upstream(nn.Module):
    """Base class: takes 16 kHz waveforms ``[B, T]`` with ``lengths [B]``.

    Subclasses set ``num_layers`` (len of ``hidden_states``), ``hidden_dim`` and
    ``frame_rate`` (frames per second of the hidden states).
    """

    num_layers: int
    hidden_dim: int
    frame_rate: float

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> UpstreamOutput:
        raise NotImplementedError


class FbankUpstream(Upstream):
    """80-dim log-mel filterbank at 100 frames/s: the no-learning baseline."""

    def __init__(self, n_mels: int = 80):
        super().__init__()
        self.logmel = LogMel(n_mels=n_mels)
        self.num_layers, self.hidden_dim, self.frame_rate = 1, n_mels, self.logmel.frame_rate

    def forward(self, wave, lengths=None) -> UpstreamOutput:
        feats, mask, _ = self.logmel(wave, lengths)
        return UpstreamOutput([feats], mask)


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


class MfccUpstream(Upstream):
    """13 MFCCs (DCT of 40 log-mel bins) with deltas and delta-deltas: 39 dims, 100 frames/s."""

    def __init__(self, n_mfcc: int = 13, n_mels: int = 40, with_deltas: bool = True):
        super().__init__()
        self.logmel = LogMel(n_mels=n_mels)
        self.register_buffer("dct", dct_matrix(n_mels, n_mfcc), persistent=False)
        self.with_deltas = with_deltas
        self.num_layers, self.frame_rate = 1, self.logmel.frame_rate
        self.hidden_dim = n_mfcc * (3 if with_deltas else 1)

    def forward(self, wave, lengths=None) -> UpstreamOutput:
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
        return UpstreamOutput([c * mask[..., None]], mask)
