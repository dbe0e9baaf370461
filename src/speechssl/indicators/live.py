"""Indicators during pretraining: every N steps, on a fixed small pool, next to the loss.

The trainer calls a monitor as ``monitor(model, step) -> dict`` on rank 0 and logs what it
returns in ``metrics.jsonl`` (and TensorBoard) under ``ind/L<layer>/<name>``; it knows
nothing else about it. The defaults keep the cost a small share of training (the
``monitor_seconds`` key of each record says what it cost, ``monitor_share`` its share): a
10-minute pool, k = 128 clusters, and no silhouette (its pairwise distances are the one
quadratic measure).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from lhotse.cut import Cut

from speechssl.evaluation.features import extract_features
from speechssl.indicators.assess import assess_features, select_pool
from speechssl.indicators.indicator_config import IndicatorConfig, MonitorSection

__all__ = ["LiveIndicators"]


@dataclass
class LiveIndicators:
    """The trainer's monitor: indicators of ``encoder_of(model)`` on ``pool``."""

    pool: Sequence[Cut]
    every: int
    config: IndicatorConfig
    layers: list[int] | None = None
    encoder_of: Callable[[torch.nn.Module], torch.nn.Module] = field(default=lambda m: m.encoder)

    @classmethod
    def from_section(cls, section: MonitorSection, cuts: Sequence[Cut]) -> LiveIndicators:
        # the pool is read at every call: hold its audio in memory (10 min of 16 kHz WAV is
        # ~19 MB), so a slow or network file system is read once; from the page cache it is
        # no faster (benchmarks/results/indicator-parts.md), and files changed mid-run do not
        # change the pool
        pool = [c.move_to_memory(audio_format="wav") for c in select_pool(
            cuts, section.minutes / 60.0, section.seed)]  # fmt: skip
        icfg = IndicatorConfig(indicators=list(section.indicators), k=section.k, seed=section.seed)
        return cls(pool, section.every, icfg, section.layers)

    def __call__(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        encoder = self.encoder_of(model)
        was_training = encoder.training
        device = next(encoder.parameters()).device
        try:
            feats = extract_features(
                encoder, self.pool, None, "live", device=device, progress=False
            )
        finally:
            encoder.train(was_training)
        out: dict[str, float] = {}
        for layer, values in assess_features(feats, self.config, self.layers).items():
            for name, v in values.items():
                if name in self.config.indicators:
                    out[f"ind/L{layer}/{name}"] = v
        out["monitor_seconds"] = time.perf_counter() - t0
        return out
