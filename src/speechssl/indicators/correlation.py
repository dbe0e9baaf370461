"""Rank correlations with bootstrap intervals: do label-free numbers order checkpoints like
downstream results do?

With 8-30 checkpoints a coefficient alone says little; a percentile bootstrap (pairs
resampled together) shows how much it could move. Checkpoints of one pretraining run are not
independent (step 600 of a run resembles its step 300 far more than another run's), so when
``groups`` name each point's run and some run has several points, whole runs are resampled
with all their checkpoints (a cluster bootstrap); resampling single checkpoints would treat
n dependent points as n independent ones and give intervals that are too narrow. Where every
run has one point the two are the same and single points are resampled. ``bootstrap`` in the
result says which was done. Resampling runs needs :data:`MIN_RUNS` of them (one run resampled
is always itself): with fewer the intervals are NaN. The p-values are scipy's, which assume
independent points.
Resamples where one side is constant have no defined coefficient and are left out of the
interval (counted).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

__all__ = ["BOOTSTRAP_UNITS", "MIN_RUNS", "Correlation", "best_per_measure", "rank_correlation"]

BOOTSTRAP_UNITS = ("runs", "checkpoints")  # what a resample draws: whole runs, or single points
MIN_RUNS = 3  # fewest runs a run-level interval is computed from


@dataclass
class Correlation:
    """Spearman's rho and Kendall's tau of ``x`` with ``y``, their p-values and 95% intervals.

    ``bootstrap`` is what the interval resampled (``runs`` or ``checkpoints``) and ``runs``
    how many distinct runs the ``n`` points come from.
    """

    n: int
    spearman: float
    spearman_p: float
    spearman_lo: float
    spearman_hi: float
    kendall: float
    kendall_p: float
    kendall_lo: float
    kendall_hi: float
    degenerate_resamples: int
    bootstrap: str
    runs: int

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _coefs(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: scipy warns and returns nan
        s = stats.spearmanr(x, y)
        k = stats.kendalltau(x, y)
    return float(s.statistic), float(s.pvalue), float(k.statistic), float(k.pvalue)


def rank_correlation(
    x: np.ndarray | Sequence[float],
    y: np.ndarray | Sequence[float],
    n_boot: int = 1000,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> Correlation:
    """Correlation of paired values (pairs with a non-finite side are dropped first).

    Args:
        x, y: paired values, one pair per checkpoint.
        n_boot: bootstrap resamples for the 95% percentile intervals.
        seed: seed of the resampling.
        groups: the run of each pair (any hashable label); ``None`` means every pair is its
            own run. When some run keeps two or more pairs, runs are resampled with all their
            pairs (module docstring).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
    labels = list(range(len(x))) if groups is None else list(groups)
    if len(labels) != len(x):
        raise ValueError(f"groups has {len(labels)} entries for {len(x)} pairs")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    labels = [g for g, k in zip(labels, keep, strict=True) if k]
    clusters = _clusters(labels)
    unit = "runs" if any(len(c) > 1 for c in clusters) else "checkpoints"
    n = len(x)
    nan = math.nan
    if n < 3:
        return Correlation(n, nan, nan, nan, nan, nan, nan, nan, nan, 0, unit, len(clusters))
    rho, rho_p, tau, tau_p = _coefs(x, y)
    rng = np.random.default_rng(seed)
    boots, degenerate = [], 0
    if unit == "runs" and len(clusters) < MIN_RUNS:
        n_boot = 0  # too few runs to say how the coefficient varies between runs
    for _ in range(n_boot):
        if unit == "runs":
            picked = rng.integers(0, len(clusters), len(clusters))
            i = np.concatenate([clusters[c] for c in picked])
        else:
            i = rng.integers(0, n, n)
        r, _, t, _ = _coefs(x[i], y[i])
        if math.isnan(r) or math.isnan(t):
            degenerate += 1
            continue
        boots.append((r, t))
    if boots:
        b = np.array(boots)
        (r_lo, t_lo), (r_hi, t_hi) = np.percentile(b, 2.5, axis=0), np.percentile(b, 97.5, axis=0)
    else:
        r_lo = r_hi = t_lo = t_hi = nan
    return Correlation(
        n,
        rho,
        rho_p,
        float(r_lo),
        float(r_hi),
        tau,
        tau_p,
        float(t_lo),
        float(t_hi),
        degenerate,
        unit,
        len(clusters),
    )


def _clusters(labels: Sequence) -> list[np.ndarray]:
    """Indices of the points of each distinct label, in order of first appearance."""
    members: dict = {}
    for i, g in enumerate(labels):
        members.setdefault(g, []).append(i)
    return [np.array(v, dtype=np.int64) for v in members.values()]


def best_per_measure(results: list[dict], task: str) -> list[dict]:
    """For each measure, the layer with the largest |rho| on ``task``."""
    best: dict[str, dict] = {}
    for r in results:
        if r["task"] != task or not math.isfinite(r["spearman"]):
            continue
        cur = best.get(r["measure"])
        if cur is None or abs(r["spearman"]) > abs(cur["spearman"]):
            best[r["measure"]] = r
    return sorted(best.values(), key=lambda r: -abs(r["spearman"]))
