"""Options of the UnFuSeD student encoders (method E), apart from the networks so that a
command lists them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from speechssl.config import opt
from speechssl.models.encoder_config import EcapaConfig, ResNetConfig

__all__ = ["ByolaCnnConfig", "StudentSection"]


@dataclass
class ByolaCnnConfig:
    """The BYOL-A / AudioNTT encoder of the released UnFuSeD code (defaults as released)."""

    n_mels: int = opt(64, "mel bins of the log-mel input", ge=1)
    n_fft: int = opt(1024, "FFT size (and window length) of the log-mel", ge=16)
    f_min: float = opt(60.0, "lowest mel frequency (Hz)", ge=0)
    f_max: float = opt(7800.0, "highest mel frequency (Hz)", gt=0)
    channels: int = opt(64, "channels of every conv block", ge=1)
    blocks: int = opt(3, "conv blocks (conv 3x3, batch norm, ReLU, max-pool 2)", ge=1)
    dim: int = opt(2048, "width of the per-frame MLP, the embedding size", ge=1)
    dropout: float = opt(0.3, "dropout between the two MLP layers", ge=0, lt=1)

    def __post_init__(self) -> None:
        if self.n_mels < 2**self.blocks:
            raise ValueError(f"n_mels {self.n_mels} must be at least 2^blocks = {2**self.blocks}")
        if self.f_max <= self.f_min:
            raise ValueError(f"f_max {self.f_max} must be above f_min {self.f_min}")


@dataclass
class StudentSection:
    kind: Literal["byola", "ecapa", "resnet"] = opt(
        "byola", "student: byola (BYOL-A CNN, as released), ecapa (ECAPA-TDNN) or resnet"
    )
    byola: ByolaCnnConfig = field(default_factory=ByolaCnnConfig)
    ecapa: EcapaConfig = field(default_factory=EcapaConfig)
    resnet: ResNetConfig = field(default_factory=ResNetConfig)
