"""One explicit training loop (torchrun/DDP), schedules as arrays, safe checkpoints, logging.

See :mod:`speechssl.objectives.base` for the objective contract and
:mod:`speechssl.training.trainer` for the iteration order.
"""

from speechssl.training.checkpoint import CheckpointError, find_latest, load_checkpoint
from speechssl.training.metrics_log import read_metrics
from speechssl.training.schedules import cosine_schedule, ema_schedule
from speechssl.training.trainer import (
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    seed_everything,
)

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
