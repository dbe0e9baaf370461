"""The options of the utterance-level recipes' data (``dino``, ``supervised``), apart from
the multi-crop dataset so that a command lists them without torch or lhotse."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from speechssl.config import opt

__all__ = ["SHORT_POLICY_HELP", "ShortPolicy", "UtteranceDataSection"]


ShortPolicy = Literal["repeat", "zero"]


SHORT_POLICY_HELP = (
    "utterances shorter than a crop: repeat (tile in a loop from a random start) "
    "or zero (zero padding, masked)"
)


@dataclass
class UtteranceDataSection:
    """The ``data`` section of the utterance-level recipes (``dino``, ``supervised``)."""

    train: list[Path] = opt(help="training CutSet(s) (JSONL manifests)", factory=list)
    batch_size: int = opt(
        32, "utterances per micro-batch on each rank (BatchNorm: 2 or more)", ge=2
    )
    seed: int | None = opt(None, "seed of the crops and augmentation (none: train.seed)", ge=0)
    babble_pool: int = opt(500, "utterances sampled from the training cuts for babble noise", ge=0)
