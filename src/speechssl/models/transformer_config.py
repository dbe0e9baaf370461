"""The frame-level Transformer's options and its size presets, apart from the network so that
a command lists them without torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from speechssl.config import opt

__all__ = ["PRESETS", "TransformerConfig", "preset"]


@dataclass
class TransformerConfig:
    dim: int = opt(768, "model width", ge=1)
    layers: int = opt(12, "number of Transformer blocks", ge=1)
    heads: int = opt(12, "attention heads (dim must be divisible by heads)", ge=1)
    ffn_dim: int = opt(3072, "hidden size of the feed-forward layers", ge=1)
    dropout: float = opt(0.1, "dropout on residual branches and after the front-end", ge=0, lt=1)
    attn_dropout: float = opt(0.1, "dropout on attention weights", ge=0, lt=1)
    frontend: Literal["logmel", "waveform"] = opt("logmel", "log-mel + conv, or waveform CNN")
    conv_dim: int = opt(512, "channels of the front-end convolutions", ge=1)
    n_mels: int = opt(80, "mel bins of the log-mel front-end", ge=1)
    conv_pos_kernel: int = opt(128, "kernel of the convolutional positional encoding", ge=1)
    conv_pos_groups: int = opt(16, "groups of the convolutional positional encoding", ge=1)

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.dim % self.conv_pos_groups:
            raise ValueError(f"dim {self.dim} is not divisible by {self.conv_pos_groups} groups")


PRESETS: dict[str, TransformerConfig] = {
    # ~1.4M parameters: CPU experiments and tests.
    "tiny": TransformerConfig(dim=128, layers=6, heads=4, ffn_dim=512, conv_dim=128),
    # ~22M parameters.
    "small": TransformerConfig(dim=384, layers=12, heads=6, ffn_dim=1536, conv_dim=512),
    # ~90M (log-mel) / ~94M (waveform) parameters, the size of HuBERT / data2vec Base.
    "base": TransformerConfig(dim=768, layers=12, heads=12, ffn_dim=3072, conv_dim=512),
}


def preset(name: str, **overrides) -> TransformerConfig:
    """A copy of preset ``name`` with some fields changed (``preset("tiny", frontend=...)``)."""
    return dataclasses.replace(PRESETS[name], **overrides)
