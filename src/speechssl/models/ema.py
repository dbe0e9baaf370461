"""The exponential moving average that makes a teacher out of a student (data2vec, MT4SSL, DINO).

Parameters move ``teacher = m * teacher + (1 - m) * student``. Buffers (BatchNorm running
statistics, fixed filterbanks) are not averaged: a running variance averaged with another is
no variance of anything. They are copied from the student by default; DINO keeps the
teacher's own (its teacher runs in train mode and tracks its statistics itself, as in the
DINO code).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ema_update"]


@torch.no_grad()
def ema_update(
    teacher: nn.Module, student: nn.Module, momentum: float, copy_buffers: bool = True
) -> None:
    """Move ``teacher`` towards ``student`` in place.

    Args:
        teacher: the EMA copy; same architecture as ``student`` (parameters and buffers in
            the same order).
        student: the trained module; read only.
        momentum: ``m`` in ``[0, 1]``: 1 keeps the teacher, 0 copies the student.
        copy_buffers: copy the student's buffers into the teacher (else leave them).
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)
    if copy_buffers:
        for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
            t.copy_(s)
