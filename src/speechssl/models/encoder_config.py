"""The utterance encoders' options (ECAPA-TDNN, thin ResNet) and the ``model`` section that
chooses between them, apart from the networks so that a command lists them without torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from speechssl.config import opt

__all__ = ["EcapaConfig", "EncoderSection", "ResNetConfig"]


@dataclass
class EcapaConfig:
    channels: int = opt(512, "channels of the TDNN layers (512 or 1024)", ge=1)
    emb_dim: int = opt(192, "speaker embedding size", ge=1)
    n_mels: int = opt(80, "mel bins of the log-mel input", ge=1)
    mfa_dim: int = opt(1536, "channels after multi-layer feature aggregation", ge=1)
    scale: int = opt(8, "Res2Net scale", ge=2)
    attention_dim: int = opt(128, "bottleneck of the attentive pooling and SE", ge=1)


@dataclass
class ResNetConfig:
    base_width: int = opt(32, "channels of the first stage (doubling per stage)", ge=1)
    blocks: list[int] = opt(factory=lambda: [3, 4, 6, 3], help="BasicBlocks per stage", ge=1)
    emb_dim: int = opt(256, "speaker embedding size", ge=1)
    n_mels: int = opt(80, "mel bins of the log-mel input", ge=1)
    attention_dim: int = opt(128, "bottleneck of the attentive pooling", ge=1)

    def __post_init__(self) -> None:
        if self.n_mels % 2 ** (len(self.blocks) - 1):
            raise ValueError(f"n_mels {self.n_mels} must divide by 2^(stages-1)")


@dataclass
class EncoderSection:
    kind: Literal["ecapa", "resnet"] = opt("ecapa", "encoder: ecapa (ECAPA-TDNN) or resnet")
    ecapa: EcapaConfig = field(default_factory=EcapaConfig)
    resnet: ResNetConfig = field(default_factory=ResNetConfig)
