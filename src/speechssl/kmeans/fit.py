"""k-means for frame targets: our greedy k-means++ seeding, then faiss' Lloyd iterations.

faiss is much faster than scikit-learn's MiniBatchKMeans (what fairseq's HuBERT recipe
uses) on hundreds of thousands of frames (benchmarks/results/kmeans.md), but its default
initialisation (k random points) converges to visibly worse optima; seeding it with greedy
k-means++ computed on a seeded subsample fixes that at a small cost. Plain k-means++ (one
candidate per centre) stays available for comparison. Everything is deterministic for a seed.
"""

from __future__ import annotations

import logging
import math
import zlib

import faiss
import numpy as np

from speechssl.errors import UserError
from speechssl.kmeans.labels import check_centroids

__all__ = [
    "SEEDINGS",
    "assign",
    "fit_centroids",
    "fit_kmeans",
    "kmeans_pp_init",
    "seeding_trials",
    "subsample_frames",
    "thin_frames",
]

log = logging.getLogger("speechssl")

ASSIGN_CHUNK = 1 << 16
GRAM_MAX_ROWS = 12_288  # k-means++ on up to this many rows uses a Gram matrix (<= 600 MB)
ROWS_CACHED_BYTES = 16 << 20  # seeding rows up to this size are read fast enough per centre
SEEDINGS = ("greedy", "plain")


def _as_features(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] == 0:
        raise UserError(f"features must be a [frames, dim] array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise UserError("features contain NaN or inf; cannot cluster them")
    return x


def subsample_frames(features: np.ndarray, max_frames: int | None, seed: int) -> np.ndarray:
    """At most ``max_frames`` rows, drawn without replacement by ``seed`` (kept in order)."""
    if max_frames is None or len(features) <= max_frames:
        return features
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(features), size=int(max_frames), replace=False))
    return features[keep]


def thin_frames(frames: np.ndarray, cut_id: str, keep_p: float, seed: int) -> np.ndarray:
    """Each frame of one cut kept with probability ``keep_p``, drawn from (seed, cut id), so
    the sample does not depend on batching or on the order of the cuts."""
    if keep_p >= 1.0:
        return frames
    rng = np.random.default_rng([seed, zlib.crc32(cut_id.encode())])
    return frames[rng.random(len(frames)) < keep_p]


def kmeans_pp_init(
    features: np.ndarray,
    k: int,
    seed: int,
    init_sample: int | None = None,
    local_trials: int | None = None,
) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) on a seeded subsample.

    Each next centre is drawn with probability proportional to the squared distance to the
    nearest centre so far. ``init_sample`` rows (default ``max(10_000, 40 k)``) are enough to
    place the centres; using all frames would cost k passes over them.

    ``local_trials`` > 1 is greedy k-means++ (scikit-learn's default): that many candidates
    are drawn per centre and the one that lowers the total squared distance most is kept;
    ``None`` (the default) means ``2 + ln k``; 1 is plain k-means++. Greedy costs
    ``local_trials`` times more seeding and ends in a lower inertia after Lloyd, where plain
    seeding leaves Lloyd stuck in a worse basin: a few % at k = 1024 on 768-d embeddings, 24 %
    on a 200-component mixture with k = 200, 0.2-0.3 % on speech frames
    (benchmarks/results/kmeans.md).
    """
    trials = _trials(k, local_trials)
    x = _as_features(features)
    rng = np.random.default_rng(seed)
    n_sample = init_sample if init_sample is not None else max(10_000, 40 * k)
    if len(x) > n_sample:
        x = x[np.sort(rng.choice(len(x), size=n_sample, replace=False))]
    n = len(x)
    if n < k:
        raise UserError(f"cannot seed {k} clusters from {n} frames")
    gram = x @ x.T if _use_gram(n, x.shape[1], k, trials) else None
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)

    def sq_dist(rows: np.ndarray) -> np.ndarray:  # [len(rows), n]
        dots = gram[rows] if gram is not None else x[rows] @ x.T
        return np.maximum(sq[rows][:, None] - 2.0 * dots + sq[None, :], 0.0)

    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    first = int(rng.integers(n))
    centres[0] = x[first]
    closest = sq_dist(np.array([first]))[0]
    for j in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than clusters: any point will do
            picks = rng.integers(n, size=1)
        else:
            draws = rng.random(trials if trials > 1 else 1) * total
            picks = np.minimum(np.searchsorted(np.cumsum(closest), draws, side="right"), n - 1)
        d = sq_dist(picks)
        best = int(np.argmin(np.minimum(closest[None, :], d).sum(1))) if len(picks) > 1 else 0
        centres[j] = x[picks[best]]
        np.minimum(closest, d[best], out=closest)
    return centres


def _trials(k: int, local_trials: int | None) -> int:
    return 2 + int(np.log(k)) if local_trials is None else max(1, int(local_trials))


def seeding_trials(seeding: str, k: int) -> int:
    """Candidates per centre of a named seeding: ``greedy`` ``2 + ln k``, ``plain`` 1."""
    if seeding not in SEEDINGS:
        raise UserError(f"seeding must be one of {', '.join(SEEDINGS)}, got {seeding!r}")
    return _trials(k, None if seeding == "greedy" else 1)


def _use_gram(n: int, dim: int, k: int, trials: int) -> bool:
    """Whether k-means++ reads distances from an ``n x n`` Gram matrix.

    Each centre needs its candidates' distances to every sampled row: one pass over the rows
    per centre (k * trials * n * D flops, memory-bound once the rows outgrow the CPU caches),
    or one Gram matrix up front (n^2 * D flops, compute-bound, n^2 floats) read a row per
    candidate. The Gram pays off when n is at most ~2 k * trials and the rows are too big to
    stay cached (measured in benchmarks/results/indicator-parts.md).
    """
    return n <= min(GRAM_MAX_ROWS, 2 * k * trials) and n * dim * 4 > ROWS_CACHED_BYTES


def assign(features: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row (exact, faiss ``IndexFlatL2``), in bounded-memory chunks.

    Returns:
        (labels int64 ``[N]``, squared L2 distances float32 ``[N]``).
    """
    c = check_centroids(centroids)
    x = np.ascontiguousarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != c.shape[1]:
        raise UserError(f"features of shape {x.shape} do not match centroids of dim {c.shape[1]}")
    index = faiss.IndexFlatL2(c.shape[1])
    index.add(c)
    labels = np.empty(len(x), dtype=np.int64)
    dist = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), ASSIGN_CHUNK):
        d, i = index.search(x[start : start + ASSIGN_CHUNK], 1)
        labels[start : start + len(i)] = i[:, 0]
        dist[start : start + len(d)] = np.maximum(d[:, 0], 0.0)
    return labels, dist


def fit_centroids(
    features: np.ndarray,
    k: int,
    seed: int = 0,
    n_iter: int = 50,
    init_sample: int | None = None,
    max_frames: int | None = None,
    local_trials: int | None = None,
    coarse_to_fine: bool = False,
) -> np.ndarray:
    """``k`` centroids (float32 ``[k, D]``) fitted to ``features [N, D]``.

    Args:
        features: frames (float32, or anything convertible).
        k: number of clusters.
        seed: seeds the frame subsample, the k-means++ draw and faiss.
        n_iter: Lloyd iterations in faiss.
        init_sample: frames used for k-means++ (default ``max(10_000, 40 k)``).
        max_frames: fit on a seeded subsample of at most this many frames.
        local_trials: candidates per centre in the seeding (see :func:`kmeans_pp_init`;
            default greedy, ``2 + ln k``; 1 is plain k-means++).
        coarse_to_fine: run the first half of the iterations on a seeded quarter of the
            frames, all but the last on half, the last on all: about 0.4x the cost of
            ``n_iter`` full iterations. Early iterations move centroids far and need few
            frames; the last one on every frame removes the fit-sample bias (Lloyd on a
            subsample alone ends ~1% worse on the other frames at 100 frames per centroid).
    """
    x = subsample_frames(_as_features(features), max_frames, seed)
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    if len(x) < k:
        raise UserError(f"only {len(x)} frames to fit {k} clusters; give more audio or a smaller k")
    centroids = kmeans_pp_init(x, k, seed, init_sample, local_trials)
    order = np.random.default_rng([seed, 1]).permutation(len(x))
    for size, iters in _stages(len(x), k, int(n_iter), coarse_to_fine):
        sub = x if size >= len(x) else x[np.sort(order[:size])]
        km = faiss.Kmeans(
            x.shape[1],
            k,
            niter=iters,
            seed=int(seed),
            verbose=False,
            # use every frame (faiss subsamples to 256 per centroid by default) and do not warn
            max_points_per_centroid=math.ceil(len(sub) / k) + 1,
            min_points_per_centroid=1,
        )
        km.train(sub, init_centroids=centroids)
        centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    return check_centroids(centroids)


def _stages(n: int, k: int, n_iter: int, coarse_to_fine: bool) -> list[tuple[int, int]]:
    """(frames, iterations) of each faiss run."""
    if n_iter <= 0:
        return []
    if not coarse_to_fine or n_iter < 2:
        return [(n, n_iter)]
    first = math.ceil(n_iter / 2)
    stages = [(n // 4, first), (n // 2, n_iter - first - 1), (n, 1)]
    return [(max(size, min(n, 10 * k)), it) for size, it in stages if it > 0]


def fit_kmeans(
    features: np.ndarray, k: int, seed: int = 0, max_frames: int | None = None, **fit_options
) -> tuple[np.ndarray, float]:
    """:func:`fit_centroids` (``fit_options``: ``n_iter``, ``init_sample``, ``local_trials``,
    ``coarse_to_fine``), plus the inertia: the sum of squared distances of the fitted frames to
    their nearest centroid. Returns (centroids, inertia)."""
    x = subsample_frames(_as_features(features), max_frames, seed)
    centroids = fit_centroids(x, k, seed, **fit_options)
    _, dist = assign(x, centroids)
    inertia = float(dist.astype(np.float64).sum())
    log.info("k-means k=%d on %d x %d frames: inertia %.6g", k, len(x), x.shape[1], inertia)
    return centroids, inertia
