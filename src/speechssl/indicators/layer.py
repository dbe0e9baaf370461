"""All indicators of one layer's frame embeddings over a fixed pool of utterances.

Input is what :func:`speechssl.evaluation.features.extract_features` caches: ``frames``
float16 ``[total frames, D]`` (usually memory-mapped) and ``offsets`` int64 ``[U + 1]``
(utterance i = rows ``offsets[i]:offsets[i+1]``). The array is read in chunks of
``cfg.chunk`` rows converted to float32, so memory is bounded by O(chunk D + D^2 + k D) plus
the k-means and silhouette samples and a 2-byte label per frame, whatever the pool size:

1. k-means (cluster measures only): fitted on ``cfg.kmeans_frames`` seeded rows.
2. one pass over all rows: finiteness check, float64 Gram of frames and of utterance means
   (rank measures, see :mod:`.rank`), nearest-centroid assignment and per-cluster sums.
3. cluster measures only: a second pass for distances to the cluster means (Davies-Bouldin,
   Calinski-Harabasz as scikit-learn defines them), then the silhouette on
   ``cfg.silhouette_frames`` seeded rows (see :mod:`.clusters`).
"""

from __future__ import annotations

import logging

import numpy as np

from speechssl.errors import UserError
from speechssl.indicators import clusters, rank
from speechssl.indicators.indicator_config import (
    CLUSTER_NAMES,
    NAMES,
    RANK_NAMES,
    RENAMED,
    IndicatorConfig,
)
from speechssl.progress import Progress

__all__ = ["layer_indicators"]

log = logging.getLogger("speechssl")


def _check(frames: np.ndarray, offsets: np.ndarray, cfg: IndicatorConfig) -> list[str]:
    unknown = [n for n in cfg.indicators if n not in NAMES]
    if unknown:
        renamed = [f"{n} is now {RENAMED[n]}" for n in unknown if n in RENAMED]
        hint = f" ({'; '.join(renamed)})" if renamed else ""
        raise UserError(f"unknown indicator(s) {unknown}{hint}; choose from {', '.join(NAMES)}")
    if not cfg.indicators:
        raise UserError("no indicator asked for")
    shape = getattr(frames, "shape", None)
    if shape is None or len(shape) != 2 or shape[1] == 0:
        raise UserError(f"frames must be a [frames, dim] array with dim >= 1, got shape {shape}")
    if not np.issubdtype(frames.dtype, np.floating):
        raise UserError(f"frames must be floating point, got {frames.dtype}")
    if shape[0] == 0:
        raise UserError("no frames: the pool of utterances is empty (0 rows)")
    off = np.asarray(offsets)
    if off.ndim != 1 or len(off) < 2 or not np.issubdtype(off.dtype, np.integer):
        raise UserError(f"offsets must be integers [utterances + 1], got shape {off.shape}")
    if off[0] != 0 or off[-1] != shape[0] or np.any(np.diff(off) < 0):
        raise UserError(
            f"offsets (from {off[0]} to {off[-1]}) do not cut the {shape[0]} frame rows; "
            "frames and offsets must come from the same feature cache"
        )
    minimum = {"k": 2, "kmeans_frames": 2, "kmeans_iter": 0, "silhouette_frames": 2, "chunk": 1}
    bad = [f"{name} = {getattr(cfg, name)} (at least {low})"
           for name, low in minimum.items() if getattr(cfg, name) < low]  # fmt: skip
    if bad:
        raise UserError(f"invalid indicator settings: {', '.join(bad)}")
    return list(dict.fromkeys(cfg.indicators))


def layer_indicators(
    frames: np.ndarray, offsets: np.ndarray, cfg: IndicatorConfig | None = None
) -> dict[str, float]:
    """The asked indicators of one layer, plus context values.

    Args:
        frames: ``[total frames, D]`` embeddings (float16 memmap as cached, or any float array).
        offsets: int ``[U + 1]``, utterance i = rows ``offsets[i]:offsets[i+1]``.
        cfg: what to compute (default: everything, k = 1024).

    Returns:
        ``{name: value}`` for each asked name, and where they apply: ``alpha_req_r2`` (R^2 of
        the log-log fit), ``kmeans_k`` (k fitted), ``kmeans_nonempty`` (clusters with frames,
        the K of DB/CH), ``davies_bouldin_centroids`` / ``calinski_harabasz_centroids``
        (around the fitted centroids), ``silhouette_lo`` / ``silhouette_hi`` (95% bootstrap
        interval), ``frames`` and ``utterances`` (non-empty ones).
    """
    cfg = cfg or IndicatorConfig()
    names = _check(frames, offsets, cfg)
    offsets = np.asarray(offsets, dtype=np.int64)
    n, dim = frames.shape
    want_rank = any(x in RANK_NAMES for x in names)
    want_utt = "rankme_t" in names
    want_clusters = any(x in CLUSTER_NAMES for x in names)

    out: dict[str, float] = {}
    cpass = None
    if want_clusters:
        centroids, k_used = clusters.fit_layer_kmeans(
            frames, cfg.k, cfg.kmeans_frames, cfg.kmeans_iter, cfg.seed
        )
        out["kmeans_k"] = float(k_used)
        cpass = clusters.ClusterPass(centroids, n)
    rpass = rank.RankPass(dim, offsets if want_utt else None) if want_rank else None

    for start, x in _chunks(frames, cfg.chunk, "indicators"):
        if rpass is not None:
            rpass.update(x, start)
        if cpass is not None:
            cpass.assign(x, start)

    if rpass is not None:
        out.update(_rank_results(rpass, names, n, dim))
    if cpass is not None:
        for start, x in _chunks(frames, cfg.chunk, "cluster scatter", check=False):
            cpass.scatter(x, start)
        res = cpass.results()
        for name in ("inertia_per_frame", "davies_bouldin", "calinski_harabasz"):
            if name in names:
                out[name] = res[name]
        if "davies_bouldin" in names or "calinski_harabasz" in names:
            out["kmeans_nonempty"] = res["kmeans_nonempty"]
            out["davies_bouldin_centroids"] = res["davies_bouldin_centroids"]
            out["calinski_harabasz_centroids"] = res["calinski_harabasz_centroids"]
        if "silhouette" in names:
            out.update(_silhouette(frames, cpass.labels, cfg))
    out["frames"] = float(n)
    out["utterances"] = float((np.diff(offsets) > 0).sum())
    return out


def _chunks(frames: np.ndarray, chunk: int, what: str, check: bool = True):
    starts = range(0, len(frames), chunk)
    bar = Progress(len(starts), what, "chunk", leave=False)
    for start in starts:
        stop = min(start + chunk, len(frames))
        if check:
            yield start, clusters.read_rows(frames, slice(start, stop), first_row=start)
        else:
            yield start, np.asarray(frames[start:stop], dtype=np.float32)
        bar.update()
    bar.close()


def _rank_results(rpass: rank.RankPass, names: list[str], n: int, dim: int) -> dict[str, float]:
    out: dict[str, float] = {}
    gram, utt = rpass.frames, rpass.utterances
    s = gram.singular_values()
    if "rankme" in names:
        out["rankme"] = rank.rankme(s)
    if "numerical_rank" in names:
        out["numerical_rank"] = float(rank.numerical_rank(s, n, dim))
    if "effective_rank" in names or "alpha_req" in names:
        sc = gram.singular_values(centred=True)
        if "effective_rank" in names:
            out["effective_rank"] = rank.effective_rank(sc)
        if "alpha_req" in names:
            out["alpha_req"], out["alpha_req_r2"] = rank.alpha_req(sc, n, dim)
    if utt is not None:
        out["rankme_t"] = rank.rankme(utt.singular_values())
    return out


def _silhouette(frames: np.ndarray, labels: np.ndarray, cfg: IndicatorConfig) -> dict[str, float]:
    rows = clusters.sample_rows(len(frames), cfg.silhouette_frames, cfg.seed, stream=1)
    values = clusters.silhouette_values(clusters.read_rows(frames, rows), labels[rows])
    if values is None:
        log.warning("silhouette: the sample holds fewer than 2 clusters (or one per frame)")
        nan = float("nan")
        return {"silhouette": nan, "silhouette_lo": nan, "silhouette_hi": nan}
    lo, hi = clusters.bootstrap_interval(values)
    return {"silhouette": float(values.mean()), "silhouette_lo": lo, "silhouette_hi": hi}
