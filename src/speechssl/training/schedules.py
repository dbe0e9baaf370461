"""Per-iteration schedules, precomputed as arrays (the DINO way).

A schedule is data, not a callback: ``lr[step]`` is the learning rate of optimizer step
``step``. That makes them trivial to test, plot, log, and to resume from (the step is the
only state).
"""

from __future__ import annotations

import numpy as np

__all__ = ["cosine_schedule", "ema_schedule"]


def cosine_schedule(
    start: float, end: float, steps: int, warmup_steps: int = 0, warmup_start: float = 0.0
) -> np.ndarray:
    """``steps`` values: linear ``warmup_start -> start`` over ``warmup_steps``, then cosine to ``end``.

    The warm-up reaches ``start`` at its last step's successor, so step ``warmup_steps`` is
    exactly ``start``; the last value is exactly ``end`` (when there is a cosine part).
    """
    if steps < 0 or warmup_steps < 0:
        raise ValueError(f"steps and warmup_steps must be >= 0, got {steps}, {warmup_steps}")
    warmup_steps = min(warmup_steps, steps)
    warmup = np.linspace(warmup_start, start, warmup_steps, endpoint=False)
    n = steps - warmup_steps
    if n == 1:
        cosine = np.array([start])
    else:
        t = np.arange(n) / max(n - 1, 1)
        cosine = end + 0.5 * (start - end) * (1.0 + np.cos(np.pi * t))
    out = np.concatenate([warmup, cosine]).astype(np.float64)
    assert len(out) == steps
    return out


def ema_schedule(
    start: float, end: float, steps: int, ramp_steps: int = 0, shape: str = "cosine"
) -> np.ndarray:
    """EMA teacher momentum moving from ``start`` to ``end`` over the first ``ramp_steps``
    (0: the whole run), then staying at ``end``.

    ``shape="cosine"`` is DINO's half cosine (0.996 -> 1 over the run); ``"linear"`` is
    data2vec's anneal (0.999 -> 0.9999 over the first 30k updates).
    """
    if not 0.0 <= start <= 1.0 or not 0.0 <= end <= 1.0:
        raise ValueError(f"EMA momentum must lie in [0, 1], got {start} -> {end}")
    if shape not in ("cosine", "linear"):
        raise ValueError(f"EMA schedule shape must be cosine or linear, got {shape!r}")
    ramp = steps if ramp_steps <= 0 else min(ramp_steps, steps)
    if shape == "cosine":
        head = cosine_schedule(start, end, ramp)
    else:
        head = np.linspace(start, end, ramp) if ramp > 1 else np.full(ramp, start)
    return np.concatenate([head, np.full(steps - ramp, end)]).astype(np.float64)
