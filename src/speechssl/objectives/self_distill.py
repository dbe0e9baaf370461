"""Deep self-distillation on pseudo-labels: UnFuSeD's "unsupervised fine-tuning" (method E).

Seth et al., ICASSP 2023 SASB (arXiv 2303.05668), in the "Be Your Own Teacher" style (Zhang et
al., 2019). A head on each intermediate block of the student gives logits ``p_i``, a linear
classifier on the final embedding gives ``q``; with the pseudo-labels ``y``::

    loss = alpha * sum_i CE(p_i, y) + CE(q, y)
         + beta  * sum_i T^2 KL(softmax(q / T) || softmax(p_i / T))
         + gamma * sum_i mean(2 - 2 cos(p_i, q))

with alpha 0.7, beta 0.3, gamma 0.003 (the cosine term between logits), means over the batch
(the KL is ``KLDivLoss(reduction="batchmean")``: summed over classes). The released code uses
``T = 1`` and does *not* detach ``q`` (so the distillation terms also train the final
classifier towards the heads); Be Your Own Teacher uses ``T = 3`` and detaches. Both are
options (``temperature``, ``detach``: stop the gradients through ``q`` in the KL and cosine
terms), the defaults being the released behaviour.

A head is the released ``Project``: three bias-free linear layers, the first two followed by
batch norm and ReLU, of width ``hidden`` (the number of clusters in the released code).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.data.batching import Batch
from speechssl.models.student import block_dims, student_blocks
from speechssl.objectives.base import Objective, Step

__all__ = [
    "BlockHead",
    "SelfDistillLoss",
    "SelfDistillModel",
    "SelfDistillObjective",
    "SelfDistillOutput",
    "self_distill_loss",
]


class BlockHead(nn.Module):
    """Linear-BN-ReLU, Linear-BN-ReLU, Linear (no biases): a block feature to class logits."""

    def __init__(self, in_dim: int, hidden: int, num_classes: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes, bias=False),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class SelfDistillOutput:
    head_logits: list[torch.Tensor]  # one [B, K] per intermediate block
    logits: torch.Tensor  # [B, K] of the classifier on the embedding
    embedding: torch.Tensor  # [B, E]


class SelfDistillModel(nn.Module):
    """A student encoder, one :class:`BlockHead` per intermediate block and a linear
    classifier on its embedding (``encoder.`` prefixed in checkpoints, so ``load_upstream``
    of the run gives the student)."""

    def __init__(self, encoder: nn.Module, num_classes: int, hidden: int | None = None):
        super().__init__()
        self.encoder = encoder
        width = hidden or num_classes
        self.heads = nn.ModuleList(BlockHead(d, width, num_classes) for d in block_dims(encoder))
        self.classifier = nn.Linear(encoder.emb_dim, num_classes)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> SelfDistillOutput:
        feats, emb = student_blocks(self.encoder, wave, lengths)
        return SelfDistillOutput(
            [h(f) for h, f in zip(self.heads, feats, strict=True)], self.classifier(emb), emb
        )


def self_distill_loss(
    head_logits: list[torch.Tensor],
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.7,
    beta: float = 0.3,
    gamma: float = 0.003,
    temperature: float = 1.0,
    detach: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of the module docstring and its parts (unweighted sums over heads)."""
    t = temperature
    teacher = logits.detach() if detach else logits
    log_q = F.log_softmax(teacher / t, dim=1)
    ce_heads = sum(F.cross_entropy(p, target) for p in head_logits)
    ce_final = F.cross_entropy(logits, target)
    kl = sum(
        (log_q.exp() * (log_q - F.log_softmax(p / t, dim=1))).sum(1).mean() * t * t
        for p in head_logits
    )
    cos = sum((2 - 2 * F.cosine_similarity(p, teacher, dim=1)).mean() for p in head_logits)
    loss = alpha * ce_heads + ce_final + beta * kl + gamma * cos
    return loss, {"ce_heads": ce_heads, "ce_final": ce_final, "kl": kl, "cos": cos}


@dataclass
class SelfDistillLoss:
    """The weights and options of :func:`self_distill_loss` (defaults: released code)."""

    alpha: float = 0.7
    beta: float = 0.3
    gamma: float = 0.003
    temperature: float = 1.0
    detach: bool = False

    def __call__(self, head_logits, logits, target):
        return self_distill_loss(
            head_logits, logits, target, self.alpha, self.beta, self.gamma,
            self.temperature, self.detach,
        )  # fmt: skip


class SelfDistillObjective(Objective):
    """``model`` is a :class:`SelfDistillModel`; the targets are label ``field`` (the
    pseudo-labels) of the batch. Metrics: the loss parts and the accuracies on the
    pseudo-labels of the final classifier and of the deepest head."""

    def __init__(self, field: str, loss: SelfDistillLoss | None = None):
        self.field = field
        self.loss = loss or SelfDistillLoss()

    def __call__(self, model, batch: Batch, step: Step) -> tuple[torch.Tensor, dict]:
        out = model(batch.audio, batch.lengths)
        y = batch.labels[self.field]
        loss, parts = self.loss(out.head_logits, out.logits, y)
        metrics = {k: v.detach() for k, v in parts.items()}
        metrics["acc"] = (out.logits.argmax(1) == y).float().mean()
        if out.head_logits:
            metrics["acc_last_head"] = (out.head_logits[-1].argmax(1) == y).float().mean()
        return loss, metrics
