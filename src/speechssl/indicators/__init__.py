"""Label-free quality indicators of SSL embeddings (method B of METHODS.md).

Rank measures (RankMe, RankMe-t, effective rank, numerical rank, alpha-ReQ) in :mod:`.rank`,
cluster measures (k-means inertia per frame, Davies-Bouldin, Calinski-Harabasz, silhouette) in
:mod:`.clusters`, and :func:`layer_indicators`, which computes them for one layer of a
feature cache with bounded memory, in :mod:`.layer`. Whole upstreams and the fixed pool in
:mod:`.assess`, the rows of ``indicators.jsonl`` in :mod:`.rows`, rank correlations with
probe results (intervals that resample runs) in :mod:`.correlation`, the live monitor in
:mod:`.live`.
"""

from speechssl.indicators.layer import (
    CLUSTER_NAMES,
    NAMES,
    RANK_NAMES,
    IndicatorConfig,
    layer_indicators,
)

__all__ = ["CLUSTER_NAMES", "NAMES", "RANK_NAMES", "IndicatorConfig", "layer_indicators"]
