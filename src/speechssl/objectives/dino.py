"""DINO for utterance-level embeddings (method D).

Caron et al., ICCV 2021, arXiv:2104.14294; Cho et al., JSTSP 2022, arXiv:2208.05445;
see docs/methods.md.

A student and an EMA teacher (same encoder + head) see different random crops of the same
utterance; the student's softmax over ``out_dim`` prototypes matches the teacher's centred and
sharpened softmax. No labels and no negatives: centring (subtract a running mean of the
teacher's outputs) keeps one prototype from winning everything, sharpening (a low teacher
temperature) keeps the outputs from going uniform; the two balance each other.

Pieces, in the order data flows:

* :class:`DinoModel`: the one module the trainer, DDP and checkpoints see. Its forward runs the
  student encoder + :class:`DinoHead` on every crop (global crops first, then local ones, each
  group in one call) and the teacher on the global crops only (under ``no_grad``).
* :class:`DinoLoss`: cross-entropy between teacher view ``i`` and student view ``j`` summed
  over all pairs ``i != j`` and divided by the number of pairs; owns the center.
* :class:`DinoObjective`: the trainer's objective (call, ``cancel_gradients``, ``after_step``,
  ``state_dict``), with the collapse monitors of :class:`CollapseMonitor`. The teacher
  temperature is a schedule the recipe precomputes (:func:`teacher_temperature_schedule`) and
  the trainer hands over as ``step["tau_t"]``: the objective keeps no step counter.

Design choices:

* The teacher is a frozen submodule (``requires_grad=False``, so no optimizer and no DDP
  gradient sync see it), saved in ``model.safetensors`` with the student: a resume restores it.
  Like the DINO code, the teacher is *not* put in eval mode: its BatchNorm layers use batch
  statistics and keep their own running statistics from its own forward passes; the EMA moves
  parameters only. The run's checkpoints name ``"prefix": "teacher_encoder."``, so
  ``load_upstream(run)`` returns the teacher's encoder, the one DINO evaluates.
* The last layer is weight-normalised with the gain fixed to 1 (DINO's ``norm_last_layer``):
  each prototype is a unit vector, and the logits are cosines with the L2-normalised
  bottleneck. Its gradients are dropped (``grad = None``: AdamW then skips it entirely, weight
  decay included) during the first ``freeze_last_layer_steps`` steps.
* Rows are view-major: ``[view 0 of every utterance, view 1 of every utterance, ...]``.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from speechssl.models.ema import ema_update
from speechssl.objectives.base import Objective, Step

__all__ = [
    "CollapseMonitor",
    "DinoHead",
    "DinoLoss",
    "DinoModel",
    "DinoObjective",
    "DinoOutput",
    "embedding_std",
    "entropy",
    "teacher_temperature_schedule",
]

log = logging.getLogger("speechssl")


# -- head ------------------------------------------------------------------------------------


class DinoHead(nn.Module):
    """MLP ``in -> hidden -> hidden -> bottleneck`` (GELU), L2-normalise, then a
    weight-normalised linear layer to ``out_dim`` prototypes whose gain is fixed to 1."""

    def __init__(
        self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        gain = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad_(False)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, out_dim]``: cosines between the bottleneck and each prototype."""
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


# -- model -----------------------------------------------------------------------------------


@dataclass
class DinoOutput:
    student: torch.Tensor  # [V * B, out_dim] logits of every view (global views first)
    teacher: torch.Tensor  # [G * B, out_dim] logits of the global views, no grad
    embeddings: torch.Tensor  # [G * B, emb_dim] the student encoder's global-view embeddings


def _embed(encoder: nn.Module, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return encoder.embed(audio, lengths)


class DinoModel(nn.Module):
    """Student encoder + head, and their frozen EMA copies (the teacher), one module.

    Args:
        encoder: anything with ``embed(wave [B, T], lengths [B]) -> [B, emb_dim]`` (ECAPA-TDNN,
            ResNet).
        head: the student's :class:`DinoHead`.

    The forward takes a batch with ``global_audio``/``global_lengths`` (``[G * B, T]``,
    view-major) and ``local_audio``/``local_lengths`` (``[L * B, T']``, possibly 0 rows).
    """

    def __init__(self, encoder: nn.Module, head: DinoHead) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head
        self.teacher_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.teacher_head = copy.deepcopy(head).requires_grad_(False)

    def student_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(student, teacher) module pairs that the EMA ties together."""
        return [(self.encoder, self.teacher_encoder), (self.head, self.teacher_head)]

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``teacher = m * teacher + (1 - m) * student``, parameters only (module docstring)."""
        for student, teacher in self.student_pairs():
            ema_update(teacher, student, momentum, copy_buffers=False)

    def forward(self, batch: Any) -> DinoOutput:
        g = _embed(self.encoder, batch.global_audio, batch.global_lengths)
        parts = [g]
        if batch.local_audio.shape[0]:
            parts.append(_embed(self.encoder, batch.local_audio, batch.local_lengths))
        student = self.head(torch.cat(parts))
        with torch.no_grad():
            t = _embed(self.teacher_encoder, batch.global_audio, batch.global_lengths)
            teacher = self.teacher_head(t)
        return DinoOutput(student=student, teacher=teacher, embeddings=g)


# -- loss ------------------------------------------------------------------------------------


class DinoLoss(nn.Module):
    """DINO's cross-entropy with centring and a teacher-temperature warm-up.

    Teacher view ``i`` (global) gives ``q_i = softmax((t_i - center) / tau_t)``; student view
    ``j`` (any) gives ``log p_j = log_softmax(s_j / tau_s)``. The loss is
    ``sum_{i, j != i} mean_batch(-sum_k q_i log p_j) / #pairs``. After each call the center
    moves toward the batch mean of the teacher's raw logits (all-reduced over DDP ranks):
    ``center = m * center + (1 - m) * mean``.

    Args:
        out_dim: prototypes (the logits' width).
        global_crops: teacher views; the student's first ``global_crops`` views are the same
            crops.
        tau_s: student temperature (0.1).
        center_momentum: ``m`` above (0.9).

    The teacher temperature ``tau_t`` is an argument of each call (a schedule, see
    :func:`teacher_temperature_schedule`).
    """

    def __init__(
        self,
        out_dim: int,
        global_crops: int = 2,
        tau_s: float = 0.1,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if global_crops < 1:
            raise ValueError(f"DINO needs at least one global crop, got {global_crops}")
        if tau_s <= 0:
            raise ValueError("temperatures must be positive")
        self.global_crops = global_crops
        self.tau_s = tau_s
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_probs(self, teacher: torch.Tensor, tau_t: float) -> torch.Tensor:
        """Centred, sharpened teacher distributions ``[G * B, out_dim]``."""
        if tau_t <= 0:
            raise ValueError(f"teacher temperature must be positive, got {tau_t}")
        center = self.center.to(teacher.device)
        return F.softmax((teacher.float() - center) / tau_t, dim=-1)

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor, tau_t: float, update: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, teacher probabilities)``; moves the center unless ``update`` is False."""
        g = self.global_crops
        if teacher.shape[0] % g or student.shape[0] % (teacher.shape[0] // g or 1):
            raise ValueError(
                f"{teacher.shape[0]} teacher rows do not split into {g} global views, or "
                f"{student.shape[0]} student rows into views of the same batch"
            )
        batch = teacher.shape[0] // g
        views = student.shape[0] // batch
        if views < 2 and g < 2:
            raise ValueError("DINO needs at least two views (one global + another)")
        q = self.teacher_probs(teacher.detach(), tau_t).chunk(g)
        logp = F.log_softmax(student.float() / self.tau_s, dim=-1).chunk(views)
        total, pairs = student.new_zeros((), dtype=torch.float32), 0
        for i, qi in enumerate(q):
            for j, lj in enumerate(logp):
                if i == j:
                    continue
                total = total + (-(qi * lj).sum(-1)).mean()
                pairs += 1
        if update:
            self.update_center(teacher)
        return total / pairs, torch.cat(q)

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """EMA of the batch mean of the teacher's logits, averaged over DDP ranks."""
        t = teacher.detach().float()
        stats = torch.cat([t.sum(0), t.new_tensor([t.shape[0]])])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        mean = stats[:-1] / stats[-1].clamp(min=1)
        m = self.center_momentum
        if self.center.device != mean.device:
            self.center = self.center.to(mean.device)
        self.center.mul_(m).add_(mean[None], alpha=1.0 - m)


# -- monitors --------------------------------------------------------------------------------


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the entropy (nats) of the distributions ``[N, K]``."""
    return -(probs * probs.clamp(min=1e-30).log()).sum(-1).mean()


def embedding_std(embeddings: torch.Tensor) -> torch.Tensor:
    """Std over rows of the L2-normalised embeddings, averaged over dimensions.

    Random directions in ``d`` dimensions give about ``1 / sqrt(d)``; a collapse to one
    embedding gives 0.
    """
    if embeddings.shape[0] < 2:
        return embeddings.new_zeros(())
    return F.normalize(embeddings.detach().float(), dim=-1).std(0).mean()


class CollapseMonitor:
    """Warns once (``logging.getLogger("speechssl")``) when DINO collapses.

    The rule: a step is *collapsed* when any of these holds --

    * one-hot: the teacher's mean entropy is below ``min_entropy`` (0.1 nats);
    * uniform: teacher *and* student mean entropies are within ``uniform_margin`` (0.01 nats)
      of ``log(out_dim)``;
    * constant embeddings: :func:`embedding_std` is below ``std_ratio / sqrt(d)`` (0.1 / sqrt(d)).

    The warning fires when ``patience`` consecutive steps (objective calls) are collapsed, once
    per process; a healthy step resets the count.
    """

    def __init__(
        self,
        patience: int = 50,
        min_entropy: float = 0.1,
        uniform_margin: float = 0.01,
        std_ratio: float = 0.1,
    ) -> None:
        self.patience = max(1, int(patience))
        self.min_entropy, self.uniform_margin, self.std_ratio = (
            min_entropy,
            uniform_margin,
            std_ratio,
        )
        self.run = 0
        self.warned = False

    def reasons(
        self, teacher_entropy: float, student_entropy: float, std: float, out_dim: int, dim: int
    ) -> list[str]:
        """Which collapse conditions this step meets (empty when healthy)."""
        out = []
        if teacher_entropy < self.min_entropy:
            out.append(f"teacher entropy {teacher_entropy:.3g} < {self.min_entropy} nats")
        top = math.log(out_dim) - self.uniform_margin
        if teacher_entropy > top and student_entropy > top:
            out.append(f"teacher and student entropies within {self.uniform_margin} of log(K)")
        bound = self.std_ratio / math.sqrt(dim)
        if std < bound:
            out.append(f"embedding std {std:.3g} < {bound:.3g}")
        return out

    def update(
        self, teacher_entropy: float, student_entropy: float, std: float, out_dim: int, dim: int
    ) -> bool:
        """Count this step; returns True while the collapse run is at least ``patience`` long."""
        why = self.reasons(teacher_entropy, student_entropy, std, out_dim, dim)
        self.run = self.run + 1 if why else 0
        if self.run >= self.patience and not self.warned:
            self.warned = True
            log.warning(
                "DINO looks collapsed for %d consecutive steps (%s); lower the learning rate, "
                "raise the teacher temperature warm-up or check the augmentation",
                self.run,
                "; ".join(why),
            )
        return self.run >= self.patience


# -- objective -------------------------------------------------------------------------------


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DDP keeps the model in .module


def teacher_temperature_schedule(
    start: float, end: float, warmup_steps: int, steps: int
) -> np.ndarray:
    """DINO's teacher temperature per step: linear ``start -> end`` over ``warmup_steps``
    (``end`` reached at step ``warmup_steps``), then ``end``."""
    if min(start, end) <= 0:
        raise ValueError("temperatures must be positive")
    warmup = min(max(0, int(warmup_steps)), steps)
    ramp = start + (end - start) * np.arange(warmup) / max(warmup, 1)
    return np.concatenate([ramp, np.full(steps - warmup, end)]).astype(np.float64)


class DinoObjective(Objective):
    """The trainer's objective for :class:`DinoModel` (see the trainer's module docstring).

    Metrics every step: ``dino_loss``, ``teacher_entropy``, ``student_entropy``, ``kl``
    (KL(teacher || student) averaged over the loss's pairs: the loss minus the teacher
    entropy, as each teacher view is in the same number of pairs), ``embedding_std``,
    ``tau_t``, ``collapsed`` (1 while :class:`CollapseMonitor` sees a collapse) and the batch's
    ``short_global``/``short_local`` counts (utterances shorter than a crop).

    Args:
        loss: the :class:`DinoLoss` (holds the center and the temperatures).
        freeze_last_layer_steps: drop the last layer's gradients before this step (one epoch
            in DINO; the recipe computes it).
        monitor: a :class:`CollapseMonitor` (default: its defaults).
    """

    def __init__(
        self,
        loss: DinoLoss,
        freeze_last_layer_steps: int = 0,
        monitor: CollapseMonitor | None = None,
    ) -> None:
        self.loss = loss
        self.freeze_last_layer_steps = int(freeze_last_layer_steps)
        self.monitor = monitor or CollapseMonitor()

    def __call__(
        self, model: nn.Module, batch: Any, step: Step
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        out = model(batch)
        tau_t = step["tau_t"]
        loss, q = self.loss(out.student, out.teacher, tau_t)
        with torch.no_grad():
            h_t = entropy(q)
            p = F.softmax(out.student.detach().float() / self.loss.tau_s, dim=-1)
            h_s = entropy(p)
            std = embedding_std(out.embeddings)
        collapsed = self.monitor.update(
            float(h_t), float(h_s), float(std), out.student.shape[-1], out.embeddings.shape[-1]
        )
        metrics: dict[str, Any] = {
            "dino_loss": loss.detach(),
            "teacher_entropy": h_t,
            "student_entropy": h_s,
            "kl": loss.detach() - h_t,
            "embedding_std": std,
            "tau_t": tau_t,
            "collapsed": float(collapsed),
            "short_global": float(getattr(batch, "short_global", 0)),
            "short_local": float(getattr(batch, "short_local", 0)),
        }
        return loss, metrics

    def cancel_gradients(self, model: nn.Module, step: Step) -> None:
        if step.index < self.freeze_last_layer_steps:
            for p in _unwrap(model).head.last_layer.parameters():
                p.grad = None

    def after_step(self, model: nn.Module, step: Step) -> None:
        if step.momentum is None:
            raise ValueError("DINO needs an EMA schedule: set train.ema_start (e.g. 0.996)")
        _unwrap(model).update_teacher(step.momentum)

    def state_dict(self) -> dict[str, Any]:
        return {"center": self.loss.center.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        center = state["center"]
        if center.shape != self.loss.center.shape:
            raise ValueError(
                f"checkpoint center has shape {tuple(center.shape)}, this head "
                f"{tuple(self.loss.center.shape)}"
            )
        self.loss.center = center.to(self.loss.center.device).clone()
