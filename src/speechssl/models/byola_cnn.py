"""The BYOL-A CNN (AudioNTT2020), the student of the released UnFuSeD code (method E).

    log-mel [B, 1, 64, F] (utterance mean removed) -> blocks x [Conv 3x3 (64 ch), BN, ReLU,
    MaxPool 2] -> flatten channels x mel bins per frame -> Linear(d), ReLU, Dropout 0.3,
    Linear(d), ReLU -> max + mean over time = the embedding [B, d]

The log-mel is 64 bins, n_fft 1024, hop 160, 60-7800 Hz, as released (here the HTK mel
scale of :class:`~speechssl.audio.features.LogMel`, and per-utterance mean removal instead of
BYOL-A's dataset statistics). Padding-aware: padded frames are zeroed before every
convolution and excluded from the time max and mean, and a max-pool keeps ``floor(n / 2)``
valid frames of ``n``, so in eval mode a batch embeds each utterance as if it were alone.

``hidden_states`` (the Upstream interface) are each block's output flattened to
``channels x mel bins`` per frame (2048, 1024, 512 with the defaults), then the MLP output
(``d``), each repeated in time back to the input's 100 frames/s (as :mod:`.resnet` does); the
layers do not share one width. :meth:`ByolaCnn.blocks` gives what the self-distillation heads
read: every block's time-averaged output and the embedding, from one pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.audio.features import LogMel
from speechssl.models.student_config import ByolaCnnConfig
from speechssl.models.upstream import Upstream, UpstreamOutput

__all__ = ["ByolaCnn", "masked_time_mean"]


def masked_time_mean(x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [B, T, D]`` over each row's first ``counts`` frames (0 frames: zeros)."""
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < counts[:, None]
    w = valid.to(x.dtype)[..., None]
    return (x * w).sum(1) / counts.clamp(min=1)[:, None].to(x.dtype)


class ByolaCnn(Upstream):
    """BYOL-A / AudioNTT CNN: ``embed`` the max + mean pooled MLP output, ``blocks`` what the
    self-distillation heads read (module docstring)."""

    def __init__(self, config: ByolaCnnConfig | None = None):
        super().__init__()
        cfg = self.config = config or ByolaCnnConfig()
        self.logmel = LogMel(n_mels=cfg.n_mels, n_fft=cfg.n_fft, win_length=cfg.n_fft,
                             f_min=cfg.f_min, f_max=cfg.f_max)  # fmt: skip
        self.convs = nn.ModuleList()
        c_in = 1
        for _ in range(cfg.blocks):
            self.convs.append(
                nn.Sequential(nn.Conv2d(c_in, cfg.channels, 3, 1, 1), nn.BatchNorm2d(cfg.channels))
            )
            c_in = cfg.channels
        flat = cfg.channels * (cfg.n_mels // 2**cfg.blocks)
        self.fc = nn.Sequential(
            nn.Linear(flat, cfg.dim), nn.ReLU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.dim, cfg.dim), nn.ReLU(),
        )  # fmt: skip
        self.block_dims = [cfg.channels * (cfg.n_mels // 2 ** (i + 1)) for i in range(cfg.blocks)]
        self.num_layers, self.hidden_dim = cfg.blocks + 1, cfg.dim
        self.frame_rate = self.logmel.frame_rate
        self.emb_dim = cfg.dim

    def _run(self, wave, lengths):
        """Block outputs as ``[B, T_i, C * M_i]`` with valid counts, the MLP output
        ``[B, T, d]`` with its counts, and the input mask."""
        feats, mask, counts = self.logmel(wave, lengths)
        mean = feats.sum(1, keepdim=True) / counts.clamp(min=1)[:, None, None].to(feats.dtype)
        x = ((feats - mean) * mask[..., None]).transpose(1, 2)[:, None]  # [B, 1, mels, F]
        outs = []
        for conv in self.convs:
            valid = torch.arange(x.shape[-1], device=x.device) < counts[:, None]
            x = conv(x * valid[:, None, None, :].to(x.dtype))
            x = F.max_pool2d(F.relu(x), 2)
            counts = torch.div(counts, 2, rounding_mode="floor")
            b, c, m, t = x.shape
            outs.append((x.permute(0, 3, 1, 2).reshape(b, t, c * m), counts))
        h = self.fc(outs[-1][0])
        return outs, h, counts, mask

    @staticmethod
    def _pool(h: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Max + mean over each row's valid frames (a row without frames: zeros)."""
        valid = torch.arange(h.shape[1], device=h.device)[None, :] < counts[:, None]
        top = h.masked_fill(~valid[..., None], float("-inf")).amax(1)
        top = torch.where(counts[:, None] > 0, top, torch.zeros_like(top))
        return top + masked_time_mean(h, counts)

    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Utterance embeddings ``[B, dim]``."""
        _, h, counts, _ = self._run(wave, lengths)
        return self._pool(h, counts)

    def blocks(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(every block's time-averaged output ``[B, C * M_i]``, the embedding ``[B, dim]``)."""
        outs, h, counts, _ = self._run(wave, lengths)
        return [masked_time_mean(x, n) for x, n in outs], self._pool(h, counts)

    def forward(self, wave, lengths=None) -> UpstreamOutput:
        outs, h, _, mask = self._run(wave, lengths)
        frames = mask.shape[1]
        hidden = []
        for s, x in enumerate([o for o, _ in outs] + [h]):
            rate = 2 ** min(s + 1, len(outs))
            x = x.repeat_interleave(rate, dim=1)[:, :frames]
            if x.shape[1] < frames:  # the frames a max-pool dropped at the end
                x = F.pad(x, (0, 0, 0, frames - x.shape[1]))
            hidden.append(x * mask[..., None].to(x.dtype))
        return UpstreamOutput(hidden, mask)
