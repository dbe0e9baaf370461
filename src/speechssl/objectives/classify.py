"""Cross-entropy of a classifier's logits on one label field (supervised transfer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from speechssl.data.batching import Batch
from speechssl.objectives.base import Objective, Step

__all__ = ["ClassifyObjective"]


class ClassifyObjective(Objective):
    """``model(audio, lengths)`` gives logits; the loss is their cross-entropy against the
    class indices of label ``field``, with the batch accuracy as a metric."""

    def __init__(self, field: str):
        self.field = field

    def __call__(self, model, batch: Batch, step: Step) -> tuple[torch.Tensor, dict]:
        logits = model(batch.audio, batch.lengths)
        y = batch.labels[self.field]
        loss = F.cross_entropy(logits, y)
        return loss, {"acc": (logits.argmax(1) == y).float().mean()}
