"""Cluster-quality measures of a frame matrix: k-means inertia per frame, Davies-Bouldin,
Calinski-Harabasz and silhouette, with bounded memory.

k-means is fitted (:func:`speechssl.kmeans.fit.fit_centroids`: greedy k-means++, then faiss
Lloyd iterations coarse to fine) on a seeded subsample (by default every frame of one hour);
then every frame is assigned to its nearest centroid in a streaming pass that accumulates
per-cluster counts, sums and distances. What each measure holds in memory:

- inertia_per_frame: mean squared distance of *all* frames to their nearest fitted centroid
  (the k-means objective divided by the frames, so pools of different sizes compare; the
  inertia of :func:`speechssl.kmeans.fit.fit_kmeans` is the sum). O(k).
- Davies-Bouldin and Calinski-Harabasz: scikit-learn's definitions given the labels, i.e.
  around the *means of the frames assigned to each cluster* (not the fitted centroids); empty
  clusters are dropped, as sklearn only sees the labels present. DB needs the mean Euclidean
  distance to those means, which are only known after the first pass, so a second pass over
  the frames measures it (no matrix products, cheap). O(k D) plus the labels: int16 per frame
  for k <= 32767 (1/768 of the float16 frames at D = 768), the only per-frame state.
  The ``*_centroids`` variants use the fitted centroids instead (what a k-means user sees).
- silhouette: scikit-learn's definition on a seeded sample of frames (Euclidean; ``a`` and
  ``b`` averaged over the sample only, as ``silhouette_score(sample_size=...)`` does), labels
  from the full assignment; 95% interval = percentile bootstrap of the mean over the sample's
  per-point values (it ignores that a and b are themselves sample averages). O(n_sample^2 / 8)
  transient, in row blocks.
"""

from __future__ import annotations

import logging

import numpy as np

from speechssl.errors import UserError
from speechssl.indicators.rank import segment_sums
from speechssl.kmeans.fit import assign, fit_centroids

__all__ = [
    "ClusterPass",
    "bootstrap_interval",
    "calinski_harabasz",
    "davies_bouldin",
    "fit_layer_kmeans",
    "read_rows",
    "sample_rows",
    "silhouette_values",
]

log = logging.getLogger("speechssl")

BLOCK = 8192
MIN_FRAMES_PER_CLUSTER = 10
SILHOUETTE_BLOCK = 1024
BOOTSTRAP = 1000
BOOTSTRAP_SEED = 0  # fixed: the interval is a numerical approximation, not a data choice


def sample_rows(n: int, m: int, seed: int, stream: int) -> np.ndarray:
    """Sorted indices of ``min(m, n)`` rows drawn without replacement; all rows if ``m >= n``.

    ``stream`` separates draws made with the same seed (k-means sample, silhouette sample).
    """
    if m >= n:
        return np.arange(n)
    rng = np.random.default_rng([int(seed), int(stream)])
    return np.sort(rng.choice(n, size=int(m), replace=False))


def read_rows(frames: np.ndarray, rows: np.ndarray | slice, first_row: int = 0) -> np.ndarray:
    """Rows of ``frames`` (float16 memmap or array) as float32; refuses NaN or inf."""
    x = np.asarray(frames[rows], dtype=np.float32)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(1))[0])
        row = rows[bad] if isinstance(rows, np.ndarray) else first_row + bad
        raise UserError(
            f"frames contain NaN or inf (first at row {row}); the upstream produced "
            "non-finite embeddings, no indicator can be computed"
        )
    return x


def fit_layer_kmeans(
    frames: np.ndarray, k: int, max_frames: int, n_iter: int, seed: int
) -> tuple[np.ndarray, int]:
    """Centroids fitted on a seeded subsample of at most ``max_frames`` rows: (centroids, k).

    ``k`` is lowered to ``n_sample // 10`` (at least 2) when the sample has fewer than 10
    frames per cluster, and the k used is returned.
    """
    rows = sample_rows(len(frames), max_frames, seed, stream=0)
    if len(rows) < 2:
        raise UserError(f"cluster indicators need at least 2 frames, got {len(rows)}")
    k_used = min(k, max(2, len(rows) // MIN_FRAMES_PER_CLUSTER))
    if k_used < k:
        log.warning(
            "k-means: %d frames are too few for k=%d (under %d per cluster); using k=%d",
            len(rows),
            k,
            MIN_FRAMES_PER_CLUSTER,
            k_used,
        )
    x = read_rows(frames, rows)
    # greedy k-means++ (plain seeding ends a few % worse than scikit-learn at k = 1024), on
    # 10 frames per centre: the seeding only needs to find the basins, Lloyd does the rest,
    # coarse to fine (see benchmarks/results/indicators.md for what each choice costs)
    centroids = fit_centroids(
        x, k_used, seed=seed, n_iter=n_iter, init_sample=max(10_000, 10 * k_used),
        local_trials=None, coarse_to_fine=True,
    )  # fmt: skip
    return centroids, k_used


class ClusterPass:
    """Streaming assignment of frames to centroids and the per-cluster sums DB/CH need.

    Call :meth:`assign` on every chunk in row order, then :meth:`scatter` on every chunk
    again (distances to the cluster means), then read the results.
    """

    def __init__(self, centroids: np.ndarray, n: int) -> None:
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        k, d = self.centroids.shape
        self.labels = np.empty(n, dtype=np.int16 if k <= np.iinfo(np.int16).max else np.int32)
        self.counts = np.zeros(k, dtype=np.int64)
        self.sums = np.zeros((k, d), dtype=np.float64)
        self.sq_to_centroid = np.zeros(k)
        self.dist_to_centroid = np.zeros(k)
        self.sq_to_mean = np.zeros(k)
        self.dist_to_mean = np.zeros(k)
        self._means: np.ndarray | None = None

    @property
    def k(self) -> int:
        return len(self.counts)

    def assign(self, x: np.ndarray, start: int) -> None:
        labels, sq = assign(x, self.centroids)
        self.labels[start : start + len(x)] = labels
        sq = sq.astype(np.float64)
        self.counts += np.bincount(labels, minlength=self.k)
        self.sq_to_centroid += np.bincount(labels, sq, minlength=self.k)
        self.dist_to_centroid += np.bincount(labels, np.sqrt(sq), minlength=self.k)
        for b in range(0, len(x), BLOCK):
            x64 = np.asarray(x[b : b + BLOCK], dtype=np.float64)
            self.sums += segment_sums(x64, labels[b : b + BLOCK], self.k)

    def means(self) -> np.ndarray:
        """Mean of the frames assigned to each cluster (rows of empty clusters are 0)."""
        if self._means is None:
            self._means = self.sums / np.maximum(self.counts, 1)[:, None]
        return self._means

    def scatter(self, x: np.ndarray, start: int) -> None:
        means = self.means()
        for b in range(0, len(x), BLOCK):
            lab = self.labels[start + b : start + b + min(BLOCK, len(x) - b)].astype(np.int64)
            diff = np.asarray(x[b : b + BLOCK], dtype=np.float64) - means[lab]
            sq = np.einsum("ij,ij->i", diff, diff)
            self.sq_to_mean += np.bincount(lab, sq, minlength=self.k)
            self.dist_to_mean += np.bincount(lab, np.sqrt(sq), minlength=self.k)

    def results(self) -> dict[str, float]:
        n = int(self.counts.sum())
        keep = self.counts > 0
        cnt = self.counts[keep].astype(np.float64)
        grand = self.sums.sum(0) / n
        means = self.means()[keep]
        cents = self.centroids[keep].astype(np.float64)
        return {
            "inertia_per_frame": float(self.sq_to_centroid.sum() / n),
            "davies_bouldin": davies_bouldin(means, self.dist_to_mean[keep] / cnt),
            "calinski_harabasz": calinski_harabasz(cnt, means, grand, self.sq_to_mean.sum()),
            "davies_bouldin_centroids": davies_bouldin(cents, self.dist_to_centroid[keep] / cnt),
            "calinski_harabasz_centroids": calinski_harabasz(
                cnt, cents, grand, self.sq_to_centroid.sum()
            ),
            "kmeans_nonempty": float(keep.sum()),
        }


def _pairwise(c: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", c, c)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (c @ c.T), 0.0)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(d2)


def davies_bouldin(centres: np.ndarray, spread: np.ndarray) -> float:
    """``mean_i max_{j != i} (s_i + s_j) / ||c_i - c_j||`` (sklearn's Davies-Bouldin).

    Args:
        centres: ``[K, D]`` cluster centres (K >= 2 non-empty clusters).
        spread: ``[K]`` mean Euclidean distance of each cluster's frames to its centre.
    """
    if len(centres) < 2:
        return float("nan")
    dist = _pairwise(np.asarray(centres, dtype=np.float64))
    if np.allclose(spread, 0) or np.allclose(dist, 0):
        return 0.0
    dist[dist == 0] = np.inf
    return float(((spread[:, None] + spread[None, :]) / dist).max(1).mean())


def calinski_harabasz(
    counts: np.ndarray, centres: np.ndarray, grand_mean: np.ndarray, within: float
) -> float:
    """``[sum_c n_c ||m_c - mu||^2 / (K - 1)] / [within / (N - K)]`` (sklearn's definition).

    ``within`` is the total squared distance of frames to their cluster centre; sklearn
    returns 1.0 when it is zero.
    """
    k, n = len(counts), float(counts.sum())
    if k < 2:
        return float("nan")
    between = float((counts * ((centres - grand_mean) ** 2).sum(1)).sum())
    if within == 0:
        return 1.0
    return float(between * (n - k) / (within * (k - 1)))


def silhouette_values(x: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """Per-point silhouette ``(b - a) / max(a, b)`` of ``x [n, D]`` (sklearn's definition).

    ``a``: mean distance to the other points of the same cluster; ``b``: smallest mean
    distance to the points of another cluster; 0 for points alone in their cluster.
    Returns None when the labels give fewer than 2 or more than n - 1 clusters.
    """
    n = len(x)
    _, lab = np.unique(labels, return_inverse=True)
    freq = np.bincount(lab)
    if not 2 <= len(freq) <= n - 1:
        return None
    order = np.argsort(lab, kind="stable")
    ls = lab[order]
    xs = np.asarray(x, dtype=np.float64)[order]
    xs = np.ascontiguousarray(xs - xs.mean(0), dtype=np.float32)  # centring: fewer cancellations
    sq = np.einsum("ij,ij->i", xs, xs)
    first = np.searchsorted(ls, np.arange(len(freq)))
    out = np.empty(n)
    for b in range(0, n, SILHOUETTE_BLOCK):
        e = min(b + SILHOUETTE_BLOCK, n)
        d = sq[b:e, None] + sq[None, :] - 2.0 * (xs[b:e] @ xs.T)
        d = np.sqrt(np.maximum(d, 0.0), dtype=np.float64)
        d[np.arange(e - b), np.arange(b, e)] = 0.0
        sums = np.add.reduceat(d, first, axis=1)
        rows = np.arange(e - b)
        own = ls[b:e]
        with np.errstate(divide="ignore", invalid="ignore"):
            a = sums[rows, own] / (freq[own] - 1)
            mean_other = sums / freq
            mean_other[rows, own] = np.inf
            bb = mean_other.min(1)
            s = (bb - a) / np.maximum(a, bb)
        s[freq[own] == 1] = 0.0
        out[b:e] = np.nan_to_num(s)
    values = np.empty(n)
    values[order] = out
    return values


def bootstrap_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (1000 resamples, fixed seed)."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = np.empty(BOOTSTRAP)
    step = max(1, 10_000_000 // max(len(values), 1))
    for b in range(0, BOOTSTRAP, step):
        m = min(step, BOOTSTRAP - b)
        means[b : b + m] = values[rng.integers(0, len(values), (m, len(values)))].mean(1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)
