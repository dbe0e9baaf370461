"""The UnFuSeD students (method E): a fresh encoder, and what its self-distillation heads read.

:func:`build_student` makes a randomly initialised BYOL-A CNN (:mod:`.byola_cnn`),
ECAPA-TDNN or thin ResNet from a :class:`~speechssl.models.student_config.StudentSection`.
:func:`student_blocks` runs one forward pass and returns every intermediate block's
time-averaged output (one self-distillation head each) and the utterance embedding (the
final classifier's input):

* BYOL-A CNN: the conv blocks (flattened channels x mel bins);
* ECAPA-TDNN: the three SE-Res2Blocks (``channels`` each);
* ResNet: the stages (flattened channels x mel bins).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from speechssl.errors import UserError
from speechssl.models.byola_cnn import ByolaCnn, masked_time_mean
from speechssl.models.ecapa import EcapaTdnn
from speechssl.models.registry import build_model
from speechssl.models.resnet import ResNet
from speechssl.models.student_config import StudentSection

__all__ = ["block_dims", "build_student", "count_parameters", "student_blocks"]


def build_student(section: StudentSection) -> nn.Module:
    """A fresh student of ``section.kind`` with that kind's config."""
    if section.kind not in ("byola", "ecapa", "resnet"):
        raise UserError(f"student.kind must be byola, ecapa or resnet, got {section.kind!r}")
    sub = getattr(section, section.kind)
    return build_model(section.kind, dataclasses.asdict(sub))


def block_dims(encoder: nn.Module) -> list[int]:
    """Widths of the block features :func:`student_blocks` returns."""
    if isinstance(encoder, ByolaCnn):
        return list(encoder.block_dims)
    if isinstance(encoder, EcapaTdnn):
        return [encoder.config.channels] * len(encoder.blocks)
    if isinstance(encoder, ResNet):
        return [encoder.hidden_dim] * len(encoder.stages)
    raise UserError(f"{type(encoder).__name__} cannot be an UnFuSeD student (byola, ecapa, resnet)")


def student_blocks(
    encoder: nn.Module, wave: torch.Tensor, lengths: torch.Tensor | None = None
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(time-averaged block outputs ``[B, D_i]``, embedding ``[B, E]``) from one pass; the
    embedding equals ``encoder.embed(wave, lengths)``."""
    if isinstance(encoder, ByolaCnn):
        return encoder.blocks(wave, lengths)
    if isinstance(encoder, EcapaTdnn):
        layers, mask = encoder._frames(wave, lengths)
        counts = mask.sum(1)
        pooled = [masked_time_mean(h.transpose(1, 2), counts) for h in layers[1:]]
        x = torch.relu(encoder.mfa(torch.cat(layers[1:], 1)))
        emb = encoder.emb_bn(encoder.fc(encoder.pool_bn(encoder.pool(x, mask))))
        return pooled, emb
    if isinstance(encoder, ResNet):
        outs, counts, _ = encoder._stages(wave, lengths)
        pooled = []
        for x, n in zip(outs, counts, strict=True):
            b, c, f, t = x.shape
            pooled.append(masked_time_mean(x.reshape(b, c * f, t).transpose(1, 2), n))
        b, c, f, t = outs[-1].shape
        mask = torch.arange(t, device=outs[-1].device) < counts[-1][:, None]
        emb = encoder.fc(encoder.pool_bn(encoder.pool(outs[-1].reshape(b, c * f, t), mask)))
        return pooled, emb
    raise UserError(f"{type(encoder).__name__} cannot be an UnFuSeD student (byola, ecapa, resnet)")


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers not counted)."""
    return sum(p.numel() for p in model.parameters())
