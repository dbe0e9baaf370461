"""Additive angular margin softmax (ArcFace; Deng et al., 2019) for the supervised baseline.

The speaker classifier of the "x-vector" that DINO is compared against (method D, Cho et al., 2022):
logits are ``s * cos(theta_j)`` between the L2-normalised embedding and each class's
L2-normalised weight, except the target class, whose angle is widened by ``m``:
``s * cos(theta_y + m)``. The margin forces each class into a tighter cone than plain softmax
does, which is what cosine scoring of embeddings later relies on.

Past ``theta_y + m > pi`` the cosine is no longer decreasing in the angle, so the margin would
reward a *larger* angle. Two published fixes, both here:

* default (ArcFace's ``easy_margin=False``): where ``theta_y > pi - m``, use the linear
  stand-in ``cos(theta_y) - m * sin(m)`` instead (continuous at ``theta_y = pi - m``);
* ``easy_margin=True``: apply the margin only where ``cos(theta_y) > 0`` (theta below 90 degrees).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.objectives.base import Objective, Step

__all__ = ["AamHead", "AamObjective", "AamOutput", "SupervisedModel"]


class AamHead(nn.Module):
    """Class weights on the unit sphere and the margin-widened, scaled cosine logits.

    Args:
        in_dim: embedding size.
        classes: number of speakers (or whatever the label is).
        scale: ``s``, the inverse temperature of the cosines (30).
        margin: ``m`` in radians (0.2).
        easy_margin: see the module docstring.
    """

    def __init__(
        self,
        in_dim: int,
        classes: int,
        scale: float = 30.0,
        margin: float = 0.2,
        easy_margin: bool = False,
    ) -> None:
        super().__init__()
        if classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {classes}")
        self.scale, self.margin, self.easy_margin = float(scale), float(margin), easy_margin
        self.weight = nn.Parameter(torch.empty(classes, in_dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, classes]`` cosines between embeddings ``x [B, in_dim]`` and class weights."""
        return F.normalize(x.float(), dim=-1) @ F.normalize(self.weight.float(), dim=-1).T

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled logits; with ``labels`` the target logits carry the angular margin."""
        cos = self.cosine(x)
        if labels is None or self.margin == 0.0:
            return self.scale * cos
        m = self.margin
        target = cos.gather(1, labels[:, None]).clamp(-1.0, 1.0)
        sin = (1.0 - target.square()).clamp(min=0.0).sqrt()
        widened = target * math.cos(m) - sin * math.sin(m)  # cos(theta + m)
        if self.easy_margin:
            widened = torch.where(target > 0, widened, target)
        else:
            widened = torch.where(target > math.cos(math.pi - m), widened, target - m * math.sin(m))
        return self.scale * cos.scatter(1, labels[:, None], widened)


@dataclass
class AamOutput:
    logits: torch.Tensor  # [B, classes] with the margin on the targets
    cosine: torch.Tensor  # [B, classes] plain cosines (for accuracy)


class SupervisedModel(nn.Module):
    """Encoder + :class:`AamHead`: one module for the trainer, DDP and checkpoints.

    The forward takes a batch with ``global_audio``/``global_lengths`` (one crop per utterance)
    and ``labels[field]``, as made by :class:`speechssl.data.multicrop.MultiCropDataset`.
    """

    def __init__(self, encoder: nn.Module, head: AamHead, label_field: str = "speaker") -> None:
        super().__init__()
        self.encoder, self.head, self.label_field = encoder, head, label_field

    def forward(self, batch: Any) -> AamOutput:
        emb = self.encoder.embed(batch.global_audio, batch.global_lengths)
        labels = batch.labels[self.label_field]
        return AamOutput(self.head(emb, labels), self.head.cosine(emb))


class AamObjective(Objective):
    """Cross-entropy over the margin logits; metrics: accuracy of the plain cosines."""

    def __init__(self, label_field: str = "speaker") -> None:
        self.label_field = label_field

    def __call__(
        self, model: nn.Module, batch: Any, step: Step
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        out = model(batch)
        labels = batch.labels[self.label_field]
        loss = F.cross_entropy(out.logits.float(), labels)
        with torch.no_grad():
            acc = (out.cosine.argmax(-1) == labels).float().mean()
        metrics: dict[str, Any] = {"aam_ce": loss.detach(), "accuracy": acc}
        metrics["short_crops"] = float(getattr(batch, "short_global", 0))
        return loss, metrics
