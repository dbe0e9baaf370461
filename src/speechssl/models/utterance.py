"""The utterance-level encoders (ECAPA-TDNN, thin ResNet) as one config section.

``speechssl dino`` and ``speechssl supervised`` train the same encoders; both read their
``model`` section as an :class:`EncoderSection` and build it with :func:`build_encoder`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from speechssl.config import opt
from speechssl.errors import UserError
from speechssl.models.ecapa import EcapaConfig
from speechssl.models.registry import build_model
from speechssl.models.resnet import ResNetConfig

__all__ = ["EncoderSection", "build_encoder"]


@dataclass
class EncoderSection:
    kind: Literal["ecapa", "resnet"] = opt("ecapa", "encoder: ecapa (ECAPA-TDNN) or resnet")
    ecapa: EcapaConfig = field(default_factory=EcapaConfig)
    resnet: ResNetConfig = field(default_factory=ResNetConfig)


def build_encoder(section: EncoderSection) -> nn.Module:
    """A fresh ECAPA-TDNN or ResNet from the section's config of that kind."""
    if section.kind not in ("ecapa", "resnet"):
        raise UserError(f"model.kind must be ecapa or resnet, got {section.kind!r}")
    sub = section.ecapa if section.kind == "ecapa" else section.resnet
    return build_model(section.kind, dataclasses.asdict(sub))
