"""The masked-prediction model: student encoder, its heads and the EMA teacher, one module.

:class:`PretrainModel` is the one module the trainer, DDP and checkpoints see: the student
``encoder``, its heads, and the EMA ``teacher``. Its forward takes the batch and the frame
mask and returns a :class:`PretrainOutput` with everything the losses of
:mod:`speechssl.objectives.masked_prediction` need (HuBERT, data2vec, MT4SSL; method C).

Design choices:

* The teacher is a frozen submodule (``requires_grad=False``): the trainer's optimizer only
  takes parameters that require gradients, so it never trains it; it is saved in
  ``model.safetensors`` with the student, so a resume restores it exactly and needs no
  objective state; DDP ignores it for gradient sync. It stays in eval mode (no dropout, as
  data2vec) whatever ``model.train()`` says, and sees the unmasked input. ``load_upstream``
  still reads only the student (the checkpoint's spec has ``"prefix": "encoder."``).
* The teacher's targets are data2vec's: the top-K block outputs, each instance-normalised
  over the valid frames (:func:`teacher_targets`), averaged.
* The k-means head is HuBERT's: a linear projection to a small dimension, then cosine
  similarity with one learned embedding per class, divided by a temperature of 0.1.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.data.batching import Batch
from speechssl.errors import UserError
from speechssl.models.ema import ema_update
from speechssl.models.transformer import FrameTransformer

__all__ = [
    "KmeansHead",
    "PretextHead",
    "PretrainModel",
    "PretrainOutput",
    "masked_instance_norm",
    "teacher_targets",
]


class KmeansHead(nn.Module):
    """HuBERT's head: project to ``proj_dim``, cosine similarity with class embeddings / tau."""

    def __init__(self, dim: int, classes: int, proj_dim: int = 256, temperature: float = 0.1):
        super().__init__()
        self.classes = classes
        self.temperature = temperature
        self.proj = nn.Linear(dim, proj_dim)
        self.embeddings = nn.Parameter(torch.empty(classes, proj_dim).normal_(0.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., classes]``."""
        return (
            F.normalize(self.proj(x), dim=-1)
            @ F.normalize(self.embeddings, dim=-1).T
            / (self.temperature)
        )


class PretextHead(nn.Module):
    """A small MLP regressing a frame-level signal feature (pitch, loudness, ...)."""

    def __init__(self, dim: int, out_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def masked_instance_norm(x: torch.Tensor, valid: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``F.instance_norm`` over time of ``x`` ``[B, F, D]``, with statistics over the valid
    frames ``valid`` ``[B, F]`` only (biased variance, no affine); padded frames become 0."""
    w = valid.to(x.dtype)[..., None]
    n = w.sum(1, keepdim=True).clamp(min=1)
    mean = (x * w).sum(1, keepdim=True) / n
    var = ((x - mean).square() * w).sum(1, keepdim=True) / n
    return (x - mean) * torch.rsqrt(var + eps) * w


def teacher_targets(layers: list[torch.Tensor], valid: torch.Tensor) -> torch.Tensor:
    """data2vec's targets: each layer instance-normalised over valid frames, then averaged."""
    return torch.stack([masked_instance_norm(h.float(), valid) for h in layers]).mean(0)


@dataclass
class PretrainOutput:
    """What :class:`PretrainModel` returns; heads that the model lacks are ``None``."""

    hidden: torch.Tensor  # [B, F, D] the student's last hidden state (after the final norm)
    valid: torch.Tensor  # [B, F] bool
    kmeans_logits: torch.Tensor | None = None  # [B, F, k]
    regression: torch.Tensor | None = None  # [B, F, D] student's prediction of teacher targets
    teacher: torch.Tensor | None = None  # [B, F, D] targets, no grad
    pretext: dict[str, torch.Tensor] = field(default_factory=dict)


class PretrainModel(nn.Module):
    """Student encoder + the heads of the chosen targets + the frozen EMA teacher, one module.

    Args:
        encoder: the student :class:`FrameTransformer` (what pre-training produces).
        kmeans_classes: k of the k-means head (``None``: no k-means target).
        kmeans_proj_dim / kmeans_temperature: see :class:`KmeansHead`.
        teacher_top_k: average this many top block outputs of the EMA teacher (``None`` or 0:
            no teacher). Block outputs are taken before the final LayerNorm (a hook on each
            block), as data2vec regresses the residual stream, not the normalised output.
        pretext_dims: name -> output dim of each pretext regression head.
    """

    def __init__(
        self,
        encoder: FrameTransformer,
        kmeans_classes: int | None = None,
        kmeans_proj_dim: int = 256,
        kmeans_temperature: float = 0.1,
        teacher_top_k: int | None = None,
        pretext_dims: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        dim = encoder.hidden_dim
        self.kmeans_head = (
            KmeansHead(dim, kmeans_classes, kmeans_proj_dim, kmeans_temperature)
            if kmeans_classes
            else None
        )
        self.top_k = int(teacher_top_k or 0)
        if self.top_k > len(encoder.blocks):
            raise UserError(
                f"teacher top-K {self.top_k} exceeds the encoder's {len(encoder.blocks)} blocks"
            )
        self.regression_head = nn.Linear(dim, dim) if self.top_k else None
        self.teacher: FrameTransformer | None = None
        if self.top_k:
            self.teacher = copy.deepcopy(encoder)
            self.teacher.requires_grad_(False)
            self.teacher.eval()
        self.pretext_heads = nn.ModuleDict(
            {name: PretextHead(dim, d) for name, d in (pretext_dims or {}).items()}
        )
        self._spec = {
            "kmeans_classes": kmeans_classes,
            "kmeans_proj_dim": kmeans_proj_dim if kmeans_classes else None,
            "teacher_top_k": self.top_k,
            "pretext_dims": dict(pretext_dims or {}),
        }

    def heads_spec(self) -> dict[str, Any]:
        """JSON-able description of the heads (part of the checkpoint spec: resume checks it)."""
        return dict(self._spec)

    def train(self, mode: bool = True) -> PretrainModel:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher never uses dropout
        return self

    @torch.no_grad()
    def teacher_forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Targets ``[B, F, D]`` from the teacher's top-K block outputs on the unmasked input."""
        assert self.teacher is not None
        captured: list[torch.Tensor] = []
        hooks = [
            block.register_forward_hook(lambda _m, _i, out: captured.append(out))
            for block in self.teacher.blocks[-self.top_k :]
        ]
        try:
            out = self.teacher(audio, lengths)
        finally:
            for h in hooks:
                h.remove()
        return teacher_targets(captured, out.mask)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``teacher = m * teacher + (1 - m) * student`` for parameters; buffers are copied."""
        if self.teacher is not None:
            ema_update(self.teacher, self.encoder, momentum)

    def forward(self, batch: Batch, frame_mask: torch.Tensor | None = None) -> PretrainOutput:
        out = self.encoder(batch.audio, batch.lengths, frame_mask=frame_mask)
        h = out.hidden_states[-1]
        res = PretrainOutput(hidden=h, valid=out.mask)
        if self.kmeans_head is not None:
            res.kmeans_logits = self.kmeans_head(h)
        if self.teacher is not None:
            res.regression = self.regression_head(h)
            res.teacher = self.teacher_forward(batch.audio, batch.lengths)
        res.pretext = {name: head(h) for name, head in self.pretext_heads.items()}
        return res
