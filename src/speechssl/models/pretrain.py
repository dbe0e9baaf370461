"""The masked-prediction model: student encoder, its heads and the EMA teacher, one module.

:class:`PretrainModel` is the one module the trainer, DDP and checkpoints see: the student
``encoder``, its heads, and the EMA ``teacher``. Its forward takes the batch and the frame
mask and returns a :class:`PretrainOutput` with everything the losses of
:mod:`speechssl.objectives.masked_prediction` need (HuBERT, data2vec, MT4SSL; method C).

Design choices:

* The teacher (:class:`EmaTeacher`) is data2vec's: an EMA copy of the student's Transformer
  blocks only. The front-end, its projection and the positional convolution are the
  student's own, read as they are now: the teacher runs its blocks on the student's unmasked
  front-end output of the same forward (computed once, before dropout). That is fairseq's
  ``ema_transformer_only`` + ``ema_layers_only`` (both default): the EMA there excludes the
  feature extractor and copies the student's positional convolution at every update.
* It is a frozen submodule (``requires_grad=False``): the trainer's optimizer only takes
  parameters that require gradients, so it never trains it; it is saved in
  ``model.safetensors`` with the student, so a resume restores it exactly and needs no
  objective state; DDP ignores it for gradient sync. It stays in eval mode (no dropout, as
  data2vec) whatever ``model.train()`` says. ``load_upstream`` still reads only the student
  (the checkpoint's spec has ``"prefix": "encoder."``).
* The targets are data2vec's (Baevski et al. 2022, section 3.3; fairseq's ``layer_results``):
  each of the top-K blocks' feed-forward branch output before it is added to the residual
  stream, instance-normalised over the valid frames (:func:`teacher_targets`), averaged.
  ``teacher_target="residual"`` reads the block outputs (the residual stream) instead, the
  reading of earlier versions, with the same shared front-end. The choice is in
  :meth:`PretrainModel.heads_spec`, so a checkpoint of earlier versions (a whole-encoder
  teacher, no such key) or of the other reading is refused on resume, never mixed.
* The k-means head is HuBERT's: a linear projection to a small dimension, then cosine
  similarity with one learned embedding per class, divided by a temperature of 0.1.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.data.batching import Batch
from speechssl.errors import UserError
from speechssl.models.ema import ema_update
from speechssl.models.transformer import FrameTransformer

__all__ = [
    "TEACHER_TARGETS",
    "EmaTeacher",
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


TEACHER_TARGETS = ("ffn", "residual")
TeacherTarget = Literal["ffn", "residual"]


class EmaTeacher(nn.Module):
    """data2vec's teacher: an EMA copy of the student's blocks, run on the student's features.

    Args:
        blocks: the student's Transformer blocks (deep-copied; the copy is frozen).
        top_k: average the targets of this many top blocks.
        target: ``"ffn"`` (data2vec): each block's feed-forward branch before the residual
            add; ``"residual"``: each block's output (the residual stream, before the
            student's final LayerNorm).
    """

    def __init__(self, blocks: nn.ModuleList, top_k: int, target: TeacherTarget = "ffn"):
        super().__init__()
        if target not in TEACHER_TARGETS:
            raise UserError(f"teacher target must be one of {TEACHER_TARGETS}, got {target!r}")
        if not 1 <= top_k <= len(blocks):
            raise UserError(f"teacher top-K {top_k} is not in 1..{len(blocks)} (the blocks)")
        self.blocks = copy.deepcopy(blocks)
        self.blocks.requires_grad_(False)
        self.top_k = top_k
        self.target = target
        self.eval()

    @torch.no_grad()
    def forward(
        self, student: FrameTransformer, features: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Targets ``[B, F, D]`` (float32, 0 on padding) from the student's unmasked
        ``features`` (:meth:`FrameTransformer.features`), positioned by the student."""
        if features.shape[1] == 0:
            return features.new_zeros(features.shape, dtype=torch.float32)
        x, _, attn_mask = student.positions(features, mask)
        first = len(self.blocks) - self.top_k
        layers: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            ffn = [] if i >= first and self.target == "ffn" else None
            x = block(x, attn_mask, ffn)
            if i >= first:
                layers.append(ffn[0] if ffn is not None else x)
        return teacher_targets(layers, mask)


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
        teacher_top_k: average the targets of this many top blocks of the EMA teacher
            (``None`` or 0: no teacher).
        teacher_target: what each of those blocks gives (:class:`EmaTeacher`): ``"ffn"``
            (data2vec) or ``"residual"``.
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
        teacher_target: TeacherTarget = "ffn",
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
        self.teacher: EmaTeacher | None = None
        if self.top_k:
            self.teacher = EmaTeacher(encoder.blocks, self.top_k, teacher_target)
        self.pretext_heads = nn.ModuleDict(
            {name: PretextHead(dim, d) for name, d in (pretext_dims or {}).items()}
        )
        self._spec = {
            "kmeans_classes": kmeans_classes,
            "kmeans_proj_dim": kmeans_proj_dim if kmeans_classes else None,
            "teacher_top_k": self.top_k,
            "pretext_dims": dict(pretext_dims or {}),
        }
        if self.top_k:  # absent without a teacher: hubert runs of older versions still resume
            self._spec["teacher_target"] = teacher_target

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
        """Targets ``[B, F, D]`` of the teacher on the unmasked input (the student's front-end)."""
        assert self.teacher is not None
        return self.teacher(self.encoder, *self.encoder.features(audio, lengths))

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``teacher = m * teacher + (1 - m) * student`` for the blocks' parameters (the rest
        of the teacher's forward is the student's own modules)."""
        if self.teacher is not None:
            ema_update(self.teacher.blocks, self.encoder.blocks, momentum)

    def forward(self, batch: Batch, frame_mask: torch.Tensor | None = None) -> PretrainOutput:
        # One front-end pass: the student encodes it masked, the teacher reads it unmasked.
        feats, valid = self.encoder.features(batch.audio, batch.lengths)
        out = self.encoder.encode(feats, valid, frame_mask=frame_mask)
        h = out.hidden_states[-1]
        res = PretrainOutput(hidden=h, valid=out.mask)
        if self.kmeans_head is not None:
            res.kmeans_logits = self.kmeans_head(h)
        if self.teacher is not None:
            res.regression = self.regression_head(h)
            res.teacher = self.teacher(self.encoder, feats.detach(), valid)
        res.pretext = {name: head(h) for name, head in self.pretext_heads.items()}
        return res
