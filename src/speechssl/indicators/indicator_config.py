"""The indicators' names and options (:class:`IndicatorConfig`, and the live monitor's
:class:`MonitorSection`), apart from the computations so that a command lists them without
importing numpy, scipy or torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from speechssl.config import opt

__all__ = [
    "CLUSTER_NAMES",
    "NAMES",
    "RANK_NAMES",
    "RENAMED",
    "IndicatorConfig",
    "MonitorSection",
]


RANK_NAMES = ("rankme", "rankme_t", "effective_rank", "numerical_rank", "alpha_req")


CLUSTER_NAMES = ("inertia_per_frame", "davies_bouldin", "calinski_harabasz", "silhouette")


NAMES = RANK_NAMES + CLUSTER_NAMES


# Old name -> current one. ``inertia`` meant the k-means objective per frame; ``inertia`` is
# now only the sum (as ``kmeans fit`` reports it), so the per-frame measure says so.
RENAMED = {"inertia": "inertia_per_frame"}


@dataclass
class IndicatorConfig:
    """Which indicators to compute and how.

    Args:
        indicators: names from :data:`NAMES` (default: all).
        k: k-means clusters for the cluster measures (lowered, and reported as ``kmeans_k``,
            when the k-means sample has under 10 frames per cluster).
        kmeans_frames: seeded subsample of frames the k-means is fitted on (float32 in
            memory: 200k x 768-d is 614 MB; with the seeding's Gram matrix and the coarse
            stages' copies the process peaked at 1.3 GB on one hour of a 768-d layer, k = 1024:
            benchmarks/results/indicator-parts.md).
            The default takes all of one hour at 50 frames/s: fitted on a subsample alone, the
            centroids end ~1% worse on the other frames.
        kmeans_iter: Lloyd iterations (faiss), coarse to fine: the first half on a quarter
            of the sample, the last on all of it (cost ~0.4x as many full iterations).
        silhouette_frames: seeded sample the silhouette (and its bootstrap interval) uses.
        chunk: rows read and converted to float32 at once.
        seed: seeds the k-means sample and initialisation and the silhouette sample.
    """

    indicators: list[str] = opt(factory=lambda: list(NAMES), help="indicators to compute")
    k: int = opt(1024, "k-means clusters of the cluster measures", ge=2)
    kmeans_frames: int = opt(200_000, "seeded subsample of frames to fit k-means on", ge=2)
    kmeans_iter: int = opt(10, "k-means (Lloyd) iterations (after greedy k-means++)", ge=0)
    silhouette_frames: int = opt(10_000, "seeded sample of frames for the silhouette", ge=2)
    chunk: int = opt(65_536, "frames read at once (bounds memory)", ge=1)
    seed: int = opt(0, "seed of the k-means and silhouette samples", ge=0)


LIVE_DEFAULT = ["rankme", "rankme_t", "alpha_req", "inertia_per_frame", "davies_bouldin"]


@dataclass
class MonitorSection:
    """Label-free indicators logged during pretraining (method B)."""

    every: int = opt(0, "compute the indicators every this many steps (0: off)", ge=0)
    pool: list[Path] = opt(
        factory=list, help="CutSet(s) to draw the fixed pool from (default: the training cuts)"
    )
    minutes: float = opt(10.0, "audio in the pool (a seeded subset)", gt=0)
    layers: list[int] | None = opt(None, "hidden states to assess (none: all)")
    indicators: list[str] = opt(factory=lambda: list(LIVE_DEFAULT), help="which indicators")
    k: int = opt(128, "k-means clusters for inertia per frame / Davies-Bouldin", ge=2)
    seed: int = opt(0, "seed of the pool and of the subsampling", ge=0)
