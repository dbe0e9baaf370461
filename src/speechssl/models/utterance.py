"""The utterance-level encoders (ECAPA-TDNN, thin ResNet) from one config section.

``speechssl dino`` and ``speechssl supervised`` train the same encoders; both read their
``model`` section as an :class:`~speechssl.models.encoder_config.EncoderSection` and build
it with :func:`build_encoder`.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from speechssl.errors import UserError
from speechssl.models.encoder_config import EncoderSection
from speechssl.models.registry import build_model

__all__ = ["build_encoder"]


def build_encoder(section: EncoderSection) -> nn.Module:
    """A fresh ECAPA-TDNN or ResNet from the section's config of that kind."""
    if section.kind not in ("ecapa", "resnet"):
        raise UserError(f"model.kind must be ecapa or resnet, got {section.kind!r}")
    sub = section.ecapa if section.kind == "ecapa" else section.resnet
    return build_model(section.kind, dataclasses.asdict(sub))
