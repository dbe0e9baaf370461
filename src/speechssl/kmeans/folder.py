"""A fitted k-means on disk: ``centroids.npy`` and ``kmeans.json`` in one folder.

``kmeans.json`` records what the centroids cluster (upstream, layer, dimension), the label
rate, a hash of the centroids (``kmeans_id``, checked on load so an altered file is caught),
the fit's settings and the cuts it was fitted on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from speechssl.errors import UserError
from speechssl.kmeans.labels import centroids_id, check_centroids

__all__ = ["CENTROIDS", "META", "load_kmeans", "save_kmeans"]

CENTROIDS, META = "centroids.npy", "kmeans.json"


def save_kmeans(folder: str | Path, centroids: np.ndarray, meta: dict[str, Any]) -> None:
    """Write ``centroids`` and ``meta`` (which must hold their ``k`` and ``kmeans_id``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / CENTROIDS, centroids)
    (folder / META).write_text(json.dumps(meta, indent=2) + "\n")


def load_kmeans(folder: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """``(centroids, kmeans.json)`` of a fit folder; UserError if missing, empty or altered."""
    folder = Path(folder)
    if not (folder / META).is_file() or not (folder / CENTROIDS).is_file():
        raise UserError(f"{folder} is not a k-means folder ({CENTROIDS} + {META} expected)")
    try:
        meta = json.loads((folder / META).read_text())
        centroids = np.load(folder / CENTROIDS)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read k-means folder {folder}: {exc}") from None
    centroids = check_centroids(centroids, where=str(folder))
    if meta.get("k") != len(centroids):
        raise UserError(
            f"{folder}: {META} says k={meta.get('k')} but there are {len(centroids)} centroids"
        )
    if meta.get("kmeans_id") != centroids_id(centroids):
        raise UserError(f"{folder}: {CENTROIDS} does not match the kmeans_id in {META} (altered?)")
    return centroids, meta
