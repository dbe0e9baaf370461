"""A frame-level Transformer encoder at 50 frames/s (the model that methods C-E pretrain).

Shape of the model (HuBERT / data2vec Base style, pre-LN):

    wave [B, T] -> front-end -> LayerNorm -> Linear(conv_dim, dim)        (features)
                -> dropout -> frame_mask -> + GELU(pos-conv)   = hidden_states[0]  (encode)
                -> block_1 ... block_L                         = hidden_states[1..L]
                   (the last one after the final LayerNorm)

``forward`` is ``encode(*features(wave, lengths))``: the split lets a data2vec teacher run its
own blocks on the student's front-end output (:mod:`speechssl.models.pretrain`). A block
hands out its feed-forward branch (before dropout and the residual add) when given a list.

Two front-ends, both at 50 frames/s:

* ``logmel`` (default): 80-dim log-mel at 100 frames/s (:class:`LogMel`, frames
  ``F100 = 1 + (T - 400) // 160`` or 0 when ``T < 400``), then ``Conv1d(k=3, stride=2,
  padding=1)`` + GELU, so ``F = (F100 + 1) // 2``. Cheap: no convolution at 16 kHz.
* ``waveform``: the wav2vec 2.0 / HuBERT CNN, 7 convs with kernels 10,3,3,3,3,2,2 and strides
  5,2,2,2,2,2,2 (320x), GELU, a group norm (one group per channel) after the first conv;
  ``F`` is ``L -> (L - k) // s + 1`` applied per layer (0 when ``L < k``). The group norm
  statistics are taken over valid samples only, so padding does not leak into them.

Padding is exact: padded frames are zeroed before every convolution that could read them, and
padded keys are never attended, so the valid frames of a batch equal the same utterance run
alone (up to float rounding). Padded frames of every hidden state are exactly 0.

Why ``hidden_states[-1]`` is after the final LayerNorm: with pre-LN blocks the residual stream
grows with depth and is never normalised; the final norm makes the last layer the one a
prediction head or teacher should read, while the others stay the raw residual stream.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.audio.features import LogMel
from speechssl.audio.features import num_frames as logmel_frames
from speechssl.models.transformer_config import TransformerConfig
from speechssl.models.upstream import Upstream, UpstreamOutput

__all__ = ["WAVEFORM_CONVS", "FrameTransformer", "frame_counts"]

# (kernel, stride) of the wav2vec 2.0 / HuBERT waveform CNN: 400-sample receptive field, 320 hop.
WAVEFORM_CONVS = ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2))


def _conv_out(lengths: torch.Tensor, kernel: int, stride: int, padding: int = 0) -> torch.Tensor:
    out = torch.div(lengths + 2 * padding - kernel, stride, rounding_mode="floor") + 1
    return torch.where(lengths + 2 * padding >= kernel, out, torch.zeros_like(out)).clamp(min=0)


def frame_counts(frontend: str, lengths: torch.Tensor) -> torch.Tensor:
    """Encoder frames at 50/s for ``lengths`` samples at 16 kHz with ``frontend`` (int64).

    The one definition (module docstring); :meth:`FrameTransformer.num_frames` and the
    pretraining dataset's frame counts both come from here.
    """
    n = torch.as_tensor(lengths, dtype=torch.int64)
    if frontend == "logmel":  # LogMelFrontend: LogMel's default window and hop, conv k3 s2 p1
        return _conv_out(logmel_frames(n), 3, 2, padding=1)
    if frontend == "waveform":
        for k, s in WAVEFORM_CONVS:
            n = _conv_out(n, k, s)
        return n
    raise ValueError(f"unknown frontend {frontend!r}")


def _length_mask(counts: torch.Tensor, frames: int) -> torch.Tensor:
    return torch.arange(frames, device=counts.device)[None, :] < counts[:, None]


class LogMelFrontend(nn.Module):
    """Log-mel at 100 frames/s, then one strided conv to 50 frames/s."""

    def __init__(self, n_mels: int, channels: int):
        super().__init__()
        self.logmel = LogMel(n_mels=n_mels)
        self.conv = nn.Conv1d(n_mels, channels, kernel_size=3, stride=2, padding=1)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        feats, _, _ = self.logmel(wave, lengths)  # padded frames are exactly 0 = conv padding
        return F.gelu(self.conv(feats.transpose(1, 2))).transpose(1, 2)


class WaveformFrontend(nn.Module):
    """The wav2vec 2.0 CNN with a padding-aware per-channel norm after the first conv."""

    def __init__(self, channels: int):
        super().__init__()
        convs, c_in = [], 1
        for k, s in WAVEFORM_CONVS:
            convs.append(nn.Conv1d(c_in, channels, kernel_size=k, stride=s, bias=False))
            c_in = channels
        self.convs = nn.ModuleList(convs)
        self.norm_weight = nn.Parameter(torch.ones(channels))
        self.norm_bias = nn.Parameter(torch.zeros(channels))

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.convs[0](wave[:, None, :])
        # GroupNorm(C, C) normalises each channel over time; take the statistics over the
        # valid steps only, or the same utterance would change with the batch it is in.
        k, s = WAVEFORM_CONVS[0]
        counts = _conv_out(lengths, k, s)
        if bool((counts == x.shape[-1]).all()):  # no padding: the fused kernel
            x = F.group_norm(x, x.shape[1], self.norm_weight, self.norm_bias, eps=1e-5)
        else:
            # Sums over valid steps as matmuls with the mask (no [B, C, T] temporaries), then
            # one fused multiply-add: this layer runs at 3.2 kHz and dominates the memory.
            valid = _length_mask(counts, x.shape[-1]).to(x.dtype)[..., None]  # [B, T, 1]
            n = counts.clamp(min=1).to(x.dtype)[:, None, None]
            mean = torch.bmm(x, valid) / n
            var = (torch.bmm(x.square(), valid) / n - mean.square()).clamp(min=0)
            scale = self.norm_weight[:, None] * torch.rsqrt(var + 1e-5)
            x = torch.addcmul(self.norm_bias[:, None] - mean * scale, x, scale)
        x = F.gelu(x)
        for conv in self.convs[1:]:  # no padding: valid outputs read only valid inputs
            x = F.gelu(conv(x))
        return x.transpose(1, 2)


class Block(nn.Module):
    """Pre-LN Transformer block; attention through ``scaled_dot_product_attention``."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.heads = cfg.heads
        self.attn_dropout = cfg.attn_dropout
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.fc1 = nn.Linear(cfg.dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        ffn_out: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The block's output; ``ffn_out``, if given, receives the feed-forward branch
        ``fc2(gelu(fc1(ln2(x))))`` before dropout and the residual add (data2vec's target)."""
        b, f, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, f, 3, self.heads, d // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=attn_mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(b, f, d)))
        h = self.fc2(F.gelu(self.fc1(self.ln2(x))))
        if ffn_out is not None:
            ffn_out.append(h)
        return x + self.drop(h)


class FrameTransformer(Upstream):
    """Front-end + convolutional positional encoding + pre-LN Transformer, 50 frames/s.

    ``hidden_states`` holds ``layers + 1`` tensors ``[B, F, dim]``: the input of the first
    block, then the output of each block (the last after the final LayerNorm).
    """

    def __init__(self, config: TransformerConfig | None = None):
        super().__init__()
        cfg = self.config = config or TransformerConfig()
        if cfg.frontend == "logmel":
            self.frontend: nn.Module = LogMelFrontend(cfg.n_mels, cfg.conv_dim)
        elif cfg.frontend == "waveform":
            self.frontend = WaveformFrontend(cfg.conv_dim)
        else:
            raise ValueError(f"unknown frontend {cfg.frontend!r}")
        self.frontend_norm = nn.LayerNorm(cfg.conv_dim)
        self.frontend_proj = nn.Linear(cfg.conv_dim, cfg.dim)
        self.frontend_drop = nn.Dropout(cfg.dropout)
        self.mask_embedding = nn.Parameter(torch.empty(cfg.dim).uniform_())
        self.pos_conv = nn.Conv1d(
            cfg.dim,
            cfg.dim,
            kernel_size=cfg.conv_pos_kernel,
            padding=cfg.conv_pos_kernel // 2,
            groups=cfg.conv_pos_groups,
        )
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.final_norm = nn.LayerNorm(cfg.dim)
        self.num_layers = cfg.layers + 1
        self.hidden_dim = cfg.dim
        self.frame_rate = 50.0
        self._init_weights()

    def _init_weights(self) -> None:
        # BERT / nanoGPT init for linears; residual output projections scaled by depth.
        for name, p in self.named_parameters():
            if name.startswith("blocks.") and p.dim() == 2:
                std = 0.02
                if name.endswith(("proj.weight", "fc2.weight")):
                    std = 0.02 / math.sqrt(2 * self.config.layers)
                nn.init.normal_(p, 0.0, std)
            elif name.startswith("blocks.") and name.endswith(".bias"):
                nn.init.zeros_(p)
        std = math.sqrt(4.0 / (self.config.conv_pos_kernel * self.config.dim))
        nn.init.normal_(self.pos_conv.weight, 0.0, std)  # wav2vec 2.0's pos-conv init
        nn.init.zeros_(self.pos_conv.bias)

    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames at 50/s for ``lengths`` samples at 16 kHz (see the module docstring)."""
        return frame_counts(self.config.frontend, lengths)

    def frame_counter(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """:meth:`num_frames` without the weights: small to pickle into DataLoader workers."""
        return functools.partial(frame_counts, self.config.frontend)

    def features(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Front-end frame features ``[B, F, dim]`` (0 on padding) and the mask ``[B, F]``.

        Before dropout: what :meth:`encode` takes, and what a data2vec teacher shares with the
        student (masked prediction replaces some of them inside :meth:`encode`).
        """
        if wave.dim() != 2:
            raise ValueError(f"expected waveforms [B, T], got shape {tuple(wave.shape)}")
        if lengths is None:
            lengths = torch.full((wave.shape[0],), wave.shape[1], dtype=torch.int64)
        lengths = torch.as_tensor(lengths, dtype=torch.int64, device=wave.device)
        counts = self.num_frames(lengths)
        frames = int(counts.max()) if len(counts) else 0
        mask = _length_mask(counts, frames)
        if frames == 0:
            return wave.new_zeros(wave.shape[0], 0, self.hidden_dim), mask
        # Trim batch padding beyond the longest utterance (it would only make padded frames).
        wave = wave[:, : int(lengths.max())]
        x = self.frontend(wave, lengths)[:, :frames]
        x = self.frontend_proj(self.frontend_norm(x))
        return x * mask[..., None], mask

    def forward(
        self,
        wave: torch.Tensor,
        lengths: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
    ) -> UpstreamOutput:
        """All hidden states and the padding mask.

        ``frame_mask`` (``[B, F]`` bool, True = masked) replaces those frames' features by the
        learned mask embedding before the positional convolution (masked prediction).
        """
        return self.encode(*self.features(wave, lengths), frame_mask=frame_mask)

    def positions(
        self, x: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Features ``[B, F, dim]`` (F > 0) -> the first block's input (+ positional conv, 0 on
        padding), the keep weights ``[B, F, 1]`` and the attention key mask (None: no padding).
        No dropout and no parameter of the blocks: a teacher reads it as the student's."""
        keep = mask[..., None].to(x.dtype)
        pos = self.pos_conv((x * keep).transpose(1, 2))
        if self.config.conv_pos_kernel % 2 == 0:
            pos = pos[..., :-1]  # an even kernel with k // 2 padding makes one frame too many
        x = (x + F.gelu(pos).transpose(1, 2)) * keep
        # Key mask [B, 1, 1, F]; a row with no valid frame attends to everything (no NaN).
        attn_mask = None
        if not bool(mask.all()):
            attn_mask = (mask | ~mask.any(1, keepdim=True))[:, None, None, :]
        return x, keep, attn_mask

    def encode(
        self, x: torch.Tensor, mask: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> UpstreamOutput:
        """:meth:`forward` from :meth:`features`' output: dropout, masking, positions, blocks."""
        x = self.frontend_drop(x)
        if frame_mask is not None:
            if frame_mask.shape != mask.shape:
                raise ValueError(f"frame_mask {tuple(frame_mask.shape)} != {tuple(mask.shape)}")
            x = torch.where((frame_mask & mask)[..., None], self.mask_embedding.to(x.dtype), x)
        if x.shape[1] == 0:
            return UpstreamOutput([x] * self.num_layers, mask)
        x, keep, attn_mask = self.positions(x, mask)
        hidden = [x]
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask)
            if i == len(self.blocks) - 1:
                x = self.final_norm(x)
            hidden.append(x * keep)
        return UpstreamOutput(hidden, mask)
