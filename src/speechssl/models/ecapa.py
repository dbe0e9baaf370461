"""ECAPA-TDNN speaker encoder on 80-dim log-mel (Desplanques et al., 2020), padding-aware.

    log-mel (utterance mean removed) -> Conv1d(k=5) -> 3 SE-Res2Blocks (dilation 2, 3, 4)
    -> multi-layer feature aggregation (concat + 1x1 conv to 1536)
    -> attentive statistics pooling with global context -> BN -> Linear(emb_dim)

``hidden_states`` are the outputs of the first conv and of each SE-Res2Block, all
``[B, F, channels]`` at 100 frames/s (the 1536-dim aggregation is left out so that every layer
has the same width). Padded frames are zeroed before every convolution wider than 1 and
excluded from every time statistic (mean normalisation, squeeze-excitation, pooling), so in
eval mode a batch gives the same embeddings as each utterance alone. In training mode
BatchNorm statistics do include padded frames (harmless, and what every recipe does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.audio.features import LogMel
from speechssl.models.encoder_config import EcapaConfig
from speechssl.models.upstream import Upstream, UpstreamOutput

__all__ = ["AttentiveStatsPool", "EcapaTdnn", "masked_mean_std"]


def masked_mean_std(
    x: torch.Tensor, weights: torch.Tensor, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and std over the last axis of ``[B, C, F]``; ``weights`` sum to 1 on F."""
    mean = (x * weights).sum(-1)
    var = ((x - mean[..., None]).square() * weights).sum(-1)
    return mean, var.clamp(min=eps).sqrt()


class AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling; with ``global_context`` the attention also sees the
    utterance mean and std (ECAPA). Padded frames get zero attention weight."""

    def __init__(self, channels: int, bottleneck: int = 128, global_context: bool = True):
        super().__init__()
        self.global_context = global_context
        c_in = channels * 3 if global_context else channels
        self.attention = nn.Sequential(
            nn.Conv1d(c_in, bottleneck, 1),
            nn.ReLU(),
            nn.BatchNorm1d(bottleneck),
            nn.Tanh(),
            nn.Conv1d(bottleneck, channels, 1),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x [B, C, F]``, ``mask [B, F]`` -> ``[B, 2C]`` (weighted mean, weighted std)."""
        m = mask[:, None, :].to(x.dtype)
        uniform = m / m.sum(-1, keepdim=True).clamp(min=1)
        h = x
        if self.global_context:
            mean, std = masked_mean_std(x, uniform)
            f = x.shape[-1]
            h = torch.cat(
                [x, mean[..., None].expand(-1, -1, f), std[..., None].expand(-1, -1, f)], 1
            )
        logits = self.attention(h).masked_fill(~mask[:, None, :], float("-inf"))
        # A row without valid frames would be all -inf (NaN softmax): give it uniform logits.
        logits = logits.masked_fill(~mask.any(-1)[:, None, None], 0.0)
        mean, std = masked_mean_std(x, logits.softmax(-1))
        return torch.cat([mean, std], 1)


class SEBlock(nn.Module):
    """Squeeze-excitation with the squeeze (time mean) over valid frames only."""

    def __init__(self, channels: int, bottleneck: int = 128):
        super().__init__()
        self.fc1 = nn.Conv1d(channels, bottleneck, 1)
        self.fc2 = nn.Conv1d(bottleneck, channels, 1)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        s = (x * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class ConvReluBn(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(
            c_in, c_out, kernel, dilation=dilation, padding=dilation * (kernel // 2)
        )
        self.bn = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        if self.conv.kernel_size[0] > 1:
            x = x * m  # what the convolution reads past the end must be 0, as when alone
        return self.bn(F.relu(self.conv(x)))


class SERes2Block(nn.Module):
    """1x1 conv -> Res2 (``scale`` groups of dilated k=3 convs) -> 1x1 conv -> SE, residual."""

    def __init__(self, channels: int, dilation: int, scale: int = 8, se_bottleneck: int = 128):
        super().__init__()
        if channels % scale:
            raise ValueError(f"channels {channels} not divisible by res2 scale {scale}")
        self.scale = scale
        width = channels // scale
        self.conv_in = ConvReluBn(channels, channels)
        self.res2 = nn.ModuleList(ConvReluBn(width, width, 3, dilation) for _ in range(scale - 1))
        self.conv_out = ConvReluBn(channels, channels)
        self.se = SEBlock(channels, se_bottleneck)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        parts = self.conv_in(x, m).chunk(self.scale, dim=1)
        outs, y = [parts[0]], None
        for i, conv in enumerate(self.res2):
            y = conv(parts[i + 1] if y is None else parts[i + 1] + y, m)
            outs.append(y)
        return x + self.se(self.conv_out(torch.cat(outs, 1), m), m)


class EcapaTdnn(Upstream):
    """ECAPA-TDNN: ``forward`` gives frame-level layers, ``embed`` the speaker embedding."""

    def __init__(self, config: EcapaConfig | None = None):
        super().__init__()
        cfg = self.config = config or EcapaConfig()
        self.logmel = LogMel(n_mels=cfg.n_mels)
        self.conv0 = ConvReluBn(cfg.n_mels, cfg.channels, kernel=5)
        self.blocks = nn.ModuleList(
            SERes2Block(cfg.channels, d, cfg.scale, cfg.attention_dim) for d in (2, 3, 4)
        )
        self.mfa = nn.Conv1d(3 * cfg.channels, cfg.mfa_dim, 1)
        self.pool = AttentiveStatsPool(cfg.mfa_dim, cfg.attention_dim, global_context=True)
        self.pool_bn = nn.BatchNorm1d(2 * cfg.mfa_dim)
        self.fc = nn.Linear(2 * cfg.mfa_dim, cfg.emb_dim)
        self.emb_bn = nn.BatchNorm1d(cfg.emb_dim)
        self.num_layers, self.hidden_dim = 4, cfg.channels
        self.frame_rate = self.logmel.frame_rate
        self.emb_dim = cfg.emb_dim

    def _frames(self, wave, lengths) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats, mask, counts = self.logmel(wave, lengths)
        m = mask[:, None, :].to(feats.dtype)
        # Utterance mean normalisation over valid frames (padding stays 0).
        mean = feats.sum(1, keepdim=True) / counts.clamp(min=1)[:, None, None].to(feats.dtype)
        x = ((feats - mean) * mask[..., None]).transpose(1, 2)
        layers = [self.conv0(x, m)]
        for block in self.blocks:
            layers.append(block(layers[-1], m))
        return layers, mask

    def forward(self, wave, lengths=None) -> UpstreamOutput:
        layers, mask = self._frames(wave, lengths)
        keep = mask[..., None].to(layers[0].dtype)
        return UpstreamOutput([h.transpose(1, 2) * keep for h in layers], mask)

    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Speaker embeddings ``[B, emb_dim]`` (before any classifier or normalisation)."""
        layers, mask = self._frames(wave, lengths)
        x = F.relu(self.mfa(torch.cat(layers[1:], 1)))
        return self.emb_bn(self.fc(self.pool_bn(self.pool(x, mask))))
