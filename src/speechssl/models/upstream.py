"""The one interface every encoder offers: all hidden states plus a padding mask.

Indicators, probes and teachers read any layer of any upstream through it, whether the
upstream is one of ours, a transformers checkpoint or a plain feature (``fbank``, ``mfcc``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from speechssl.audio.features import LogMel, Mfcc


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


class MfccUpstream(Upstream):
    """13 MFCCs (DCT of 40 log-mel bins) with deltas and delta-deltas: 39 dims, 100 frames/s
    (:class:`~speechssl.audio.features.Mfcc`)."""

    def __init__(self, n_mfcc: int = 13, n_mels: int = 40, with_deltas: bool = True):
        super().__init__()
        self.mfcc = Mfcc(n_mfcc, n_mels, with_deltas)
        self.num_layers, self.frame_rate = 1, self.mfcc.frame_rate
        self.hidden_dim = self.mfcc.dim

    def forward(self, wave, lengths=None) -> UpstreamOutput:
        feats, mask, _ = self.mfcc(wave, lengths)
        return UpstreamOutput([feats], mask)
