"""Thin ResNet34 speaker encoder on 80-dim log-mel (the r-vector / WeSpeaker recipe).

    log-mel [B, 1, 80, F] -> conv3x3(32) -> stages of BasicBlocks (3, 4, 6, 3) with widths
    32-64-128-256, stride 2 in frequency and time from the second stage on
    -> flatten (channels x frequency) -> attentive statistics pooling -> Linear(256)

``hidden_states`` are the outputs of the four stages, each flattened to ``channels x mel-bins``
(32x80 = 64x40 = 128x20 = 256x10 = 2560 with the defaults) and repeated in time back to the
input's 100 frames/s, so that all layers share one frame rate and one mask (stage ``s`` frame
``j`` covers log-mel frames ``j * 2^s ... j * 2^s + 2^s - 1``). Padded time steps are zeroed
before every 3x3 conv and excluded from pooling: in eval mode a batch embeds each utterance as
if it were alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.audio.features import LogMel
from speechssl.models.ecapa import AttentiveStatsPool
from speechssl.models.encoder_config import ResNetConfig
from speechssl.models.upstream import Upstream, UpstreamOutput

__all__ = ["ResNet"]


def _halve(counts: torch.Tensor) -> torch.Tensor:
    return torch.div(counts + 1, 2, rounding_mode="floor")  # k=3, stride 2, padding 1


def _time_mask(counts: torch.Tensor, frames: int, dtype: torch.dtype) -> torch.Tensor:
    return (torch.arange(frames, device=counts.device) < counts[:, None])[:, None, None, :].to(
        dtype
    )


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor, m_in: torch.Tensor, m_out: torch.Tensor) -> torch.Tensor:
        """``m_in``/``m_out``: time masks ``[B, 1, 1, F]`` at the input/output resolution."""
        y = F.relu(self.bn1(self.conv1(x * m_in)))
        y = self.bn2(self.conv2(y * m_out))
        return F.relu(y + self.shortcut(x))


class ResNet(Upstream):
    """Thin ResNet34: ``forward`` gives the four stages, ``embed`` the speaker embedding."""

    def __init__(self, config: ResNetConfig | None = None):
        super().__init__()
        cfg = self.config = config or ResNetConfig()
        self.logmel = LogMel(n_mels=cfg.n_mels)
        w = cfg.base_width
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w))
        self.stages = nn.ModuleList()
        c_in = w
        for i, n in enumerate(cfg.blocks):
            c_out = w * 2**i
            stride = 1 if i == 0 else 2
            self.stages.append(
                nn.ModuleList(
                    BasicBlock(c_in if j == 0 else c_out, c_out, stride if j == 0 else 1)
                    for j in range(n)
                )
            )
            c_in = c_out
        flat = w * cfg.n_mels  # channels double while frequency halves: constant width
        self.pool = AttentiveStatsPool(flat, cfg.attention_dim, global_context=False)
        self.pool_bn = nn.BatchNorm1d(2 * flat)
        self.fc = nn.Linear(2 * flat, cfg.emb_dim)
        self.num_layers, self.hidden_dim = len(cfg.blocks), flat
        self.frame_rate = self.logmel.frame_rate
        self.emb_dim = cfg.emb_dim

    def _stages(self, wave, lengths) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Stage outputs ``[B, C, mels, F_s]``, valid counts per stage, and the input mask."""
        feats, mask, counts = self.logmel(wave, lengths)
        mean = feats.sum(1, keepdim=True) / counts.clamp(min=1)[:, None, None].to(feats.dtype)
        x = ((feats - mean) * mask[..., None]).transpose(1, 2)[:, None]  # [B, 1, mels, F]
        m = _time_mask(counts, x.shape[-1], x.dtype)
        x = F.relu(self.stem(x * m))
        outs, all_counts = [], []
        for stage in self.stages:
            for block in stage:
                c_out = counts if block.conv1.stride[0] == 1 else _halve(counts)
                m_out = m if c_out is counts else _time_mask(c_out, (x.shape[-1] + 1) // 2, x.dtype)
                x = block(x, m, m_out)
                counts, m = c_out, m_out
            outs.append(x * m)
            all_counts.append(counts)
        return outs, all_counts, mask

    def forward(self, wave, lengths=None) -> UpstreamOutput:
        outs, _, mask = self._stages(wave, lengths)
        frames = mask.shape[1]
        hidden = []
        for s, x in enumerate(outs):
            b, c, f, t = x.shape
            h = x.reshape(b, c * f, t).transpose(1, 2)  # [B, F_s, C * mels]
            rate = 2**s
            h = h.repeat_interleave(rate, dim=1)[:, :frames] if rate > 1 else h
            hidden.append(h * mask[..., None].to(h.dtype))
        return UpstreamOutput(hidden, mask)

    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Speaker embeddings ``[B, emb_dim]`` (before any classifier or normalisation)."""
        outs, counts, _ = self._stages(wave, lengths)
        x = outs[-1]
        b, c, f, t = x.shape
        mask = torch.arange(t, device=x.device) < counts[-1][:, None]
        return self.fc(self.pool_bn(self.pool(x.reshape(b, c * f, t), mask)))
