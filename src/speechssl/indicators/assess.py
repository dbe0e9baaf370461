"""Indicators of whole upstreams: the fixed unlabelled pool, checkpoint lists, one table.

The pool is what makes numbers comparable across checkpoints: the same seeded subset of
cuts (about ``hours`` of audio) for every upstream. A run folder stands for all of its
``checkpoints/step-*``, so one call follows a pretraining run step by step.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lhotse.cut import Cut

from speechssl.errors import UserError
from speechssl.evaluation.features import LayerFeatures, extract_features
from speechssl.indicators.indicator_config import IndicatorConfig
from speechssl.indicators.layer import layer_indicators
from speechssl.indicators.rows import checkpoint_key
from speechssl.models.registry import load_upstream, upstream_id

__all__ = ["Checkpoint", "assess_features", "expand_upstreams", "run_of", "select_pool"]

log = logging.getLogger("speechssl")


def select_pool(cuts: Sequence[Cut], hours: float, seed: int) -> list[Cut]:
    """A seeded subset of ``cuts`` with about ``hours`` of audio (all of them if fewer).

    Cuts are ordered by id before the seeded shuffle, so the pool does not depend on the
    manifest's order; the pool keeps that id order.
    """
    if hours <= 0:
        raise UserError(f"hours must be positive, got {hours}")
    ordered = sorted(cuts, key=lambda c: c.id)
    if not ordered:
        raise UserError("the cut set is empty: nothing to assess")
    perm = np.random.default_rng(seed).permutation(len(ordered))
    budget, total, picked = 3600.0 * hours, 0.0, []
    for i in perm:
        if total >= budget:
            break
        picked.append(int(i))
        total += ordered[i].duration
    return [ordered[i] for i in sorted(picked)]


@dataclass(frozen=True)
class Checkpoint:
    """One upstream to assess: ``spec`` for ``load_upstream``, its run and step when known."""

    spec: str
    run: str
    step: int | None


def expand_upstreams(specs: Sequence[str]) -> list[Checkpoint]:
    """Names, checkpoint and HF folders as given; a run folder becomes its ``step-*`` list."""
    out: list[Checkpoint] = []
    for spec in specs:
        path = Path(spec).expanduser()
        steps = sorted((path / "checkpoints").glob("step-*")) if path.is_dir() else []
        steps = [p for p in steps if (p / "model.json").is_file()]
        if steps:
            out += [Checkpoint(str(p), path.name, _step_of(p)) for p in steps]
        elif path.name.startswith("step-") and (path / "model.json").is_file():
            out.append(Checkpoint(spec, path.parent.parent.name, _step_of(path)))
        else:
            out.append(Checkpoint(spec, path.name or spec, None))
    if not out:
        raise UserError("no upstream to assess; pass --upstream NAME|CHECKPOINT|RUN_DIR|HF_DIR")
    return out


def run_of(spec: str) -> str:
    """The run a checkpoint belongs to: ``RUN`` for ``RUN/checkpoints/step-N``, else ``spec``.

    Checkpoints of one run share its data, seed and trajectory, so statistics over
    checkpoints resample runs, not checkpoints (:mod:`speechssl.indicators.correlation`).
    Anything else (a feature name, an HF folder) is a run of its own.
    """
    path = Path(spec).expanduser()
    if _step_of(path) is not None and path.parent.name == "checkpoints":
        return str(path.parent.parent)
    return spec


def _step_of(path: Path) -> int | None:
    m = re.fullmatch(r"step-(\d+)", path.name)
    return int(m.group(1)) if m else None


def assess_features(
    feats: LayerFeatures, cfg: IndicatorConfig, layers: Sequence[int] | None = None
) -> dict[int, dict[str, float]]:
    """Indicators of each of ``layers`` (all by default) of extracted features."""
    chosen = range(feats.num_layers) if layers is None else layers
    out = {}
    for k in chosen:
        if not -feats.num_layers <= k < feats.num_layers:
            raise UserError(f"layer {k} does not exist: the upstream has {feats.num_layers}")
        k = k % feats.num_layers
        out[k] = layer_indicators(feats.layers[k], feats.offsets, cfg)
    return out


def assess_checkpoint(
    ckpt: Checkpoint,
    pool: Sequence[Cut],
    cfg: IndicatorConfig,
    layers: Sequence[int] | None,
    cache_dir: Path | None,
    device: str = "cpu",
) -> tuple[list[dict], float]:
    """Rows ``{upstream, run, step, layer, <indicator>: value}`` and seconds spent."""
    t0 = time.perf_counter()
    feats = extract_features(
        lambda: load_upstream(ckpt.spec, device),
        pool,
        cache_dir,
        upstream_id(ckpt.spec),
        device=device,
    )
    rows = []
    for layer, values in assess_features(feats, cfg, layers).items():
        rows.append(
            {
                "upstream": ckpt.spec,
                "checkpoint": checkpoint_key(ckpt.spec),
                "run": ckpt.run,
                "step": ckpt.step,
                "layer": layer,
                **values,
            }
        )
    return rows, time.perf_counter() - t0
