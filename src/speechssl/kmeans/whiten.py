"""Utterance-level pseudo-labels (method E, UnFuSeD): PCA-whitening, L2 normalisation, k-means.

The released code (faiss ``PCAMatrix(d, 128, eigen_power=-0.5)``, ``normalize_L2``, 20
k-means iterations) clusters one pooled embedding per utterance. Here the whitening is
computed in float64 with numpy (``eigh`` of the covariance), so that the whitened training
embeddings have exactly the identity covariance (faiss' eigenvalues are of the scatter
matrix, which scales every component by ``1 / sqrt(n)``; the L2 normalisation that follows
removes any common scale, so the clusters are the same). k-means is
:func:`speechssl.kmeans.fit.fit_centroids` (greedy k-means++ seeding, faiss Lloyd iterations).

Components whose variance is below ``1e-6`` of the largest are dropped: with fewer
utterances than dimensions the centred embeddings have rank at most ``n - 1``, and whitening a
zero-variance direction would divide by zero.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from speechssl.errors import UserError
from speechssl.kmeans.fit import assign, fit_centroids

__all__ = [
    "Clustering",
    "Whitening",
    "cluster_embeddings",
    "fit_whitening",
    "l2_normalize",
    "label_agreement",
]

RELATIVE_TOL = 1e-6  # components with variance below this fraction of the largest are dropped


@dataclass
class Whitening:
    """``apply(x) = (x - mean) @ matrix``: the top principal components, each scaled to unit
    variance on the data it was fitted on."""

    mean: np.ndarray  # [D] float64
    matrix: np.ndarray  # [D, d] float64: eigenvectors / sqrt(eigenvalues)
    eigenvalues: np.ndarray  # [d] float64, decreasing (covariance with 1/n)

    @property
    def dims(self) -> int:
        return int(self.matrix.shape[1])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Whitened rows ``[N, d]`` (float64)."""
        return (np.asarray(x, dtype=np.float64) - self.mean) @ self.matrix


def fit_whitening(x: np.ndarray, dims: int = 128) -> Whitening:
    """PCA-whitening of the rows of ``x [N, D]`` to at most ``dims`` components.

    Fewer components are kept when ``D`` or the rank of the centred data is smaller (see the
    module docstring). Each eigenvector's sign is fixed (largest-magnitude entry positive) so
    that the result does not depend on the eigen-solver.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2 or x.shape[1] == 0:
        raise UserError(f"whitening needs at least 2 embeddings of 1+ dims, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise UserError("embeddings contain NaN or inf; cannot whiten them")
    if dims < 1:
        raise UserError(f"whitening dims must be at least 1, got {dims}")
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / len(x)
    values, vectors = np.linalg.eigh(cov)  # ascending
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    top = values[0] if len(values) else 0.0
    if top <= 0:
        raise UserError("all embeddings are identical: nothing to whiten or cluster")
    keep = int(min(dims, np.sum(values > RELATIVE_TOL * top)))
    values, vectors = values[:keep], vectors[:, :keep]
    flip = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(keep)])
    vectors = vectors * np.where(flip == 0, 1.0, flip)
    return Whitening(mean, vectors / np.sqrt(values), values)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit Euclidean norm (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


@dataclass
class Clustering:
    """What :func:`cluster_embeddings` returns."""

    labels: np.ndarray  # int64 [N]
    centroids: np.ndarray  # float32 [k, d]
    whitening: Whitening
    inertia: float  # sum of squared distances of the normalised rows to their centroid

    def sizes(self) -> list[int]:
        """Utterances per cluster, cluster 0 first (empty clusters count 0)."""
        k = len(self.centroids)
        return np.bincount(self.labels, minlength=k).astype(int).tolist()


def cluster_embeddings(
    embeddings: np.ndarray, k: int = 32, dims: int = 128, n_iter: int = 20, seed: int = 0
) -> Clustering:
    """PCA-whiten to ``dims`` (:func:`fit_whitening`), L2-normalise, k-means with ``k``
    clusters and ``n_iter`` Lloyd iterations; deterministic for a seed."""
    x = np.asarray(embeddings)
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    if k > len(x):
        raise UserError(
            f"k = {k} clusters but only {len(x)} utterances to cluster; lower --cluster.k"
        )
    white = fit_whitening(x, dims)
    z = l2_normalize(white.apply(x)).astype(np.float32)
    centroids = fit_centroids(z, k, seed=seed, n_iter=n_iter)
    labels, dist = assign(z, centroids)
    return Clustering(labels, centroids, white, float(dist.astype(np.float64).sum()))


def label_agreement(pseudo: Sequence[int], true: Sequence[Any]) -> dict[str, float]:
    """How well pseudo-labels match true labels (reporting only): scikit-learn's NMI
    (arithmetic mean normalisation) and purity, the fraction of utterances whose cluster's
    most frequent true label is their own."""
    from sklearn.metrics import normalized_mutual_info_score

    pseudo = [int(p) for p in pseudo]
    true = [str(t) for t in true]
    if len(pseudo) != len(true) or not pseudo:
        raise ValueError("pseudo and true labels must be non-empty and of the same length")
    by_cluster: dict[int, Counter] = {}
    for p, t in zip(pseudo, true, strict=True):
        by_cluster.setdefault(p, Counter())[t] += 1
    purity = sum(c.most_common(1)[0][1] for c in by_cluster.values()) / len(pseudo)
    return {"nmi": float(normalized_mutual_info_score(true, pseudo)), "purity": float(purity)}
