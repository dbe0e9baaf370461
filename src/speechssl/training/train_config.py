"""The trainer's options (:class:`TrainConfig`), apart from the loop so that a command can
list them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from speechssl.config import opt

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """How to train; the model, objective and data are the recipe's business.

    The defaults are neutral (no weight decay, no clipping); each method's config sets its
    own (DINO: AdamW, weight decay 0.04 -> 0.4, clip 3; UnFuSeD-style runs: SGD, momentum 0.9).
    """

    max_steps: int = opt(
        10000, "optimizer steps to train for (the loop counts steps, not epochs)", ge=1
    )
    max_minutes: float | None = opt(
        None, "stop cleanly, with a checkpoint, after this many minutes of training", gt=0
    )
    lr: float = opt(5e-4, "peak learning rate, reached at the end of the warm-up", gt=0)
    min_lr: float = opt(1e-6, "learning rate at the last step (cosine decay)", ge=0)
    warmup_steps: int = opt(1000, "steps of linear learning-rate warm-up from 0", ge=0)
    optimizer: Literal["adamw", "sgd"] = opt("adamw", "adamw, or sgd with momentum")
    momentum: float = opt(0.9, "SGD momentum (sgd only)", ge=0, lt=1)
    weight_decay: float = opt(0.0, "weight decay at the first step (biases/norms get none)", ge=0)
    weight_decay_end: float | None = opt(
        None, "weight decay at the last step, cosine from the first (none: constant)", ge=0
    )
    ema_start: float | None = opt(
        None,
        "EMA teacher momentum at the first step, e.g. 0.996 (none: no EMA schedule)",
        ge=0,
        le=1,
    )
    ema_end: float = opt(1.0, "EMA teacher momentum at the end of its ramp", ge=0, le=1)
    ema_steps: int = opt(0, "steps over which the EMA momentum ramps (0: the whole run)", ge=0)
    ema_shape: Literal["cosine", "linear"] = opt(
        "cosine", "EMA ramp: cosine (DINO) or linear (data2vec)"
    )
    betas: list[float] = opt(
        factory=lambda: [0.9, 0.999], help="AdamW betas (adamw only)", ge=0, lt=1
    )
    grad_clip: float | None = opt(
        None, "clip the global gradient norm to this (none or 0: no clip)", ge=0
    )
    accum_steps: int = opt(1, "micro-batches per optimizer step (gradient accumulation)", ge=1)
    precision: Literal["fp32", "bf16"] = opt(
        "fp32", "bf16 autocast on CUDA (ignored, with a note, on CPU)"
    )
    batch_duration: float = opt(
        120.0,
        "seconds of audio per micro-batch on each rank, when the trainer builds the sampler",
        gt=0,
    )
    log_every: int = opt(10, "write metrics every this many steps", ge=1)
    ckpt_every: int = opt(1000, "save a checkpoint every this many steps (and at the end)", ge=1)
    keep_last: int = opt(3, "keep this many newest checkpoints", ge=1)
    keep_every: int = opt(
        0, "also keep forever every checkpoint whose step is a multiple of this", ge=0
    )
    seed: int = opt(0, "seed of python/numpy/torch (plus the rank) and of the sampler", ge=0)
    num_workers: int = opt(2, "DataLoader worker processes per rank", ge=0)
    deterministic: bool = opt(False, "use deterministic kernels (slower on GPU; exact resume)")
    resume: bool = opt(False, "continue from the run folder's latest checkpoint")
