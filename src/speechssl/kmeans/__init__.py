"""Offline k-means targets (HuBERT / MT4SSL style): fit centroids, label frames, read labels.

A fitted k-means on disk is :mod:`~speechssl.kmeans.folder`; the frames come from
:func:`speechssl.evaluation.features.layer_frames`, wired by ``speechssl kmeans``.
"""

from speechssl.kmeans.fit import (
    assign,
    fit_centroids,
    fit_kmeans,
    kmeans_pp_init,
    subsample_frames,
)
from speechssl.kmeans.labels import (
    KmeansLabels,
    LabelSetInfo,
    LabelWriter,
    align_labels,
    centroids_id,
    check_centroids,
    cuts_hash,
)

__all__ = [
    "KmeansLabels",
    "LabelSetInfo",
    "LabelWriter",
    "align_labels",
    "assign",
    "centroids_id",
    "check_centroids",
    "cuts_hash",
    "fit_centroids",
    "fit_kmeans",
    "kmeans_pp_init",
    "subsample_frames",
]
