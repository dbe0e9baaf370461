"""Masked-prediction losses: k-means CE, EMA-teacher regression, pretext regression, and their
weighted sum (HuBERT, data2vec, MT4SSL: method C,
Ma et al., Interspeech 2023, arXiv:2211.07321; docs/methods.md).

Data flows :class:`speechssl.data.pretrain.PretrainDataset` (a
:class:`~speechssl.data.pretrain.PretrainBatch`) -> :class:`MaskedObjective` draws the span
mask and calls :class:`speechssl.models.pretrain.PretrainModel` once -> each loss reads the
:class:`~speechssl.models.pretrain.PretrainOutput` -> ``(loss, metrics)``.

The mask is drawn in the objective, in the training process, from torch's global RNG, which
the trainer seeds per rank and restores on resume: masks are identical after a resume
whatever ``num_workers`` is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.data.pretrain import PretrainBatch
from speechssl.errors import UserError
from speechssl.models.pretrain import PretrainOutput
from speechssl.objectives.base import Objective, Step
from speechssl.objectives.masking import span_mask

__all__ = [
    "KmeansCE",
    "MaskedObjective",
    "MultiTarget",
    "PretextRegression",
    "TeacherRegression",
]


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DDP keeps the model in .module


class MaskedObjective(Objective):
    """Draw the span mask, run the model once on the masked input, compute :meth:`loss`.

    Subclasses implement ``loss(out, batch, frame_mask) -> (loss, metrics)``.
    """

    def __init__(self, mask_prob: float = 0.65, mask_length: int = 10) -> None:
        self.mask_prob = mask_prob
        self.mask_length = mask_length

    def draw_mask(self, batch: PretrainBatch) -> torch.Tensor:
        # Global torch RNG on purpose: the trainer seeds it per rank and restores it on resume.
        return span_mask(batch.valid_frames, self.mask_prob, self.mask_length)

    def __call__(self, model: nn.Module, batch: PretrainBatch, step: Step):
        frame_mask = self.draw_mask(batch)
        out = model(batch, frame_mask)
        if out.valid.shape != frame_mask.shape:
            raise UserError(
                f"the dataset counted {tuple(frame_mask.shape)} frames, the encoder made "
                f"{tuple(out.valid.shape)}: the dataset's frame counter does not match the "
                "encoder's front-end"
            )
        loss, metrics = self.loss(out, batch, frame_mask)
        metrics["mask_fraction"] = frame_mask.sum() / out.valid.sum().clamp(min=1)
        return loss, metrics

    def loss(self, out: PretrainOutput, batch: PretrainBatch, frame_mask: torch.Tensor):
        raise NotImplementedError


class KmeansCE(MaskedObjective):
    """HuBERT: cross-entropy with k-means ids on masked frames (+ ``unmasked_weight`` times the
    CE on the other valid frames, 0 by default). Frames whose target is -100 are ignored."""

    def __init__(
        self, mask_prob: float = 0.65, mask_length: int = 10, unmasked_weight: float = 0.0
    ) -> None:
        super().__init__(mask_prob, mask_length)
        self.unmasked_weight = unmasked_weight

    def loss(self, out: PretrainOutput, batch: PretrainBatch, frame_mask: torch.Tensor):
        if out.kmeans_logits is None or batch.targets is None:
            raise UserError("the k-means target needs a k-means head and a label set")
        logits, targets = out.kmeans_logits.float(), batch.targets
        if targets.shape != frame_mask.shape:
            raise UserError(
                f"k-means targets {tuple(targets.shape)} do not match frames "
                f"{tuple(frame_mask.shape)}"
            )
        has = targets >= 0
        m = frame_mask & has & out.valid
        ce_m = _ce(logits[m], targets[m])
        metrics: dict[str, Any] = {"kmeans_ce": ce_m.detach()}
        loss = ce_m
        with torch.no_grad():
            hit = (logits[m].argmax(-1) == targets[m]).float()
            metrics["kmeans_acc"] = hit.mean() if hit.numel() else hit.new_zeros(())
        if self.unmasked_weight:
            u = ~frame_mask & has & out.valid
            ce_u = _ce(logits[u], targets[u])
            loss = loss + self.unmasked_weight * ce_u
            metrics["kmeans_ce_unmasked"] = ce_u.detach()
        metrics["labels_adjusted"] = float(batch.adjusted)
        return loss, metrics


def _ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # An empty selection gives 0 with a graph (not NaN), so every rank can still backward.
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, targets)


class TeacherRegression(MaskedObjective):
    """data2vec: regress the EMA teacher's targets on masked frames (by default the mean of
    the top-K blocks' instance-normalised FFN outputs, see
    :class:`~speechssl.models.pretrain.EmaTeacher`).

    Loss per masked frame: squared error summed over the dimension, divided by sqrt(dim); the
    mean over masked frames. ``after_step`` moves the teacher with the trainer's momentum
    (``TrainConfig.ema_start/ema_end``).
    """

    def loss(self, out: PretrainOutput, batch: PretrainBatch, frame_mask: torch.Tensor):
        if out.teacher is None or out.regression is None:
            raise UserError("the teacher target needs a model built with teacher_top_k > 0")
        m = frame_mask & out.valid
        pred, target = out.regression[m].float(), out.teacher[m].float()
        if pred.shape[0] == 0:
            loss = out.regression.sum() * 0.0
        else:
            loss = (pred - target).square().sum(-1).mean() / math.sqrt(pred.shape[-1])
        metrics = {"teacher_mse": loss.detach()}
        with torch.no_grad():  # a collapse shows as a falling target/prediction spread
            if pred.shape[0] > 1:
                metrics["teacher_target_std"] = target.std(0).mean()
                metrics["teacher_pred_std"] = pred.std(0).mean()
        return loss, metrics

    def after_step(self, model: nn.Module, step: Step) -> None:
        if step.momentum is None:
            raise UserError("the teacher target needs an EMA schedule: set train.ema_start")
        _unwrap(model).update_teacher(step.momentum)


class PretextRegression(MaskedObjective):
    """Regress frame-level signal features with the model's pretext heads, on masked frames.

    ``batch.pretext[name]`` holds ``[B, F, d]`` targets at 50 frames/s (``PretrainDataset``
    makes them with :class:`speechssl.pseudolabels.targets.PretextTargets`).
    ``losses[name]`` is ``"l1"`` or ``"mse"``; ``weights[name]`` scales it.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        losses: Mapping[str, Literal["l1", "mse"]] | None = None,
        mask_prob: float = 0.65,
        mask_length: int = 10,
    ) -> None:
        super().__init__(mask_prob, mask_length)
        self.weights = dict(weights)
        self.losses = {n: (losses or {}).get(n, "l1") for n in self.weights}

    def loss(self, out: PretrainOutput, batch: PretrainBatch, frame_mask: torch.Tensor):
        targets = getattr(batch, "pretext", None) or {}
        total = out.hidden.sum() * 0.0
        metrics: dict[str, Any] = {}
        m = frame_mask & out.valid
        for name, w in self.weights.items():
            if name not in out.pretext or name not in targets:
                raise UserError(f"pretext target {name!r} needs a head and batch.pretext[{name!r}]")
            pred, tgt = out.pretext[name][m].float(), targets[name][m].float()
            fn = F.l1_loss if self.losses[name] == "l1" else F.mse_loss
            part = fn(pred, tgt) if pred.numel() else pred.sum() * 0.0
            metrics[f"pretext_{name}"] = part.detach()
            total = total + w * part
        return total, metrics


class MultiTarget(MaskedObjective):
    """MT4SSL: a weighted sum of any subset of the targets above, one forward, one mask.

    Args:
        parts: name -> (objective, weight); each objective's ``loss`` is used (their own
            masking settings are ignored: this object's mask is shared). Metrics report every
            part under its own names plus ``loss_<name>`` (the unweighted part).
    """

    def __init__(
        self,
        parts: Mapping[str, tuple[MaskedObjective, float]],
        mask_prob: float = 0.65,
        mask_length: int = 10,
    ) -> None:
        super().__init__(mask_prob, mask_length)
        self.parts = {n: (o, float(w)) for n, (o, w) in parts.items() if w}
        if not self.parts:
            raise UserError("no target has a non-zero weight: nothing to train")

    def loss(self, out: PretrainOutput, batch: PretrainBatch, frame_mask: torch.Tensor):
        total, metrics = None, {}
        for name, (objective, weight) in self.parts.items():
            part, m = objective.loss(out, batch, frame_mask)
            metrics.update(m)
            metrics[f"loss_{name}"] = part.detach()
            total = weight * part if total is None else total + weight * part
        return total, metrics

    def after_step(self, model: nn.Module, step: Step) -> None:
        for objective, _ in self.parts.values():
            objective.after_step(model, step)
