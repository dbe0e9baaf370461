"""One explicit training loop (torchrun/DDP), schedules as arrays, safe checkpoints, logging.

See :mod:`speechssl.objectives.base` for the objective contract and
:mod:`speechssl.training.trainer` for the iteration order.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from speechssl.training.checkpoint import CheckpointError, find_latest, load_checkpoint
    from speechssl.training.metrics_log import read_metrics
    from speechssl.training.schedules import cosine_schedule, ema_schedule
    from speechssl.training.train_config import TrainConfig
    from speechssl.training.trainer import NonFiniteLossError, Trainer, seed_everything

# Loaded on first use, so that reading TrainConfig (a command's --help) does not import torch.
_EXPORTS = {
    "CheckpointError": "checkpoint",
    "NonFiniteLossError": "trainer",
    "TrainConfig": "train_config",
    "Trainer": "trainer",
    "cosine_schedule": "schedules",
    "ema_schedule": "schedules",
    "find_latest": "checkpoint",
    "load_checkpoint": "checkpoint",
    "read_metrics": "metrics_log",
    "seed_everything": "trainer",
}
__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "TrainConfig",
    "Trainer",
    "cosine_schedule",
    "ema_schedule",
    "find_latest",
    "load_checkpoint",
    "read_metrics",
    "seed_everything",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
