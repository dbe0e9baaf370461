"""Label-free quality indicators of SSL embeddings (method B).

Whetten et al., Interspeech 2025, arXiv:2501.05966; RankMe: Garrido et al., ICML 2023,
arXiv:2210.02885; alpha-ReQ: Agrawal et al., NeurIPS 2022. See docs/methods.md.

Rank measures (RankMe, RankMe-t, effective rank, numerical rank, alpha-ReQ) in :mod:`.rank`,
cluster measures (k-means inertia per frame, Davies-Bouldin, Calinski-Harabasz, silhouette) in
:mod:`.clusters`, and :func:`layer_indicators`, which computes them for one layer of a
feature cache with bounded memory, in :mod:`.layer`. Whole upstreams and the fixed pool in
:mod:`.assess`, the rows of ``indicators.jsonl`` in :mod:`.rows`, rank correlations with
probe results (intervals that resample runs) in :mod:`.correlation`, the live monitor in
:mod:`.live`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from speechssl.indicators.indicator_config import (
        CLUSTER_NAMES,
        NAMES,
        RANK_NAMES,
        IndicatorConfig,
    )
    from speechssl.indicators.layer import layer_indicators

# Loaded on first use, so that reading IndicatorConfig (a command's --help) stays light.
_EXPORTS = {
    "CLUSTER_NAMES": "indicator_config",
    "NAMES": "indicator_config",
    "RANK_NAMES": "indicator_config",
    "IndicatorConfig": "indicator_config",
    "layer_indicators": "layer",
}
__all__ = ["CLUSTER_NAMES", "NAMES", "RANK_NAMES", "IndicatorConfig", "layer_indicators"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
