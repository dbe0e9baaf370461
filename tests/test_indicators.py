"""Indicators against independent references: a direct numpy SVD of the whole matrix for the
rank measures, scikit-learn (and brute-force numpy) for the cluster measures."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

from speechssl.errors import UserError
from speechssl.indicators import NAMES, RANK_NAMES, IndicatorConfig, layer_indicators
from speechssl.indicators import clusters as cl
from speechssl.indicators import rank as rk

EPS32 = np.finfo(np.float32).eps


def _offsets(n: int, rng: np.random.Generator) -> np.ndarray:
    """Utterance boundaries of random lengths, some utterances empty."""
    lengths = []
    while sum(lengths) < n:
        lengths.append(int(rng.integers(0, 120)))
    lengths[-1] -= sum(lengths) - n
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _planted(n=3000, d=32, r=5, seed=0):
    """Integer frames of exact rank r + 1 (rank r plus a constant row; exact in float16)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-3, 4, size=(n, r))
    b = rng.integers(-3, 4, size=(r, d))
    return (a @ b + 1).astype(np.float16), _offsets(n, rng)


def _blobs(n=3000, d=16, centres=6, spread=1.0, sep=12.0, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, d)) * sep
    lab = rng.integers(0, centres, n)
    x = means[lab] + rng.normal(size=(n, d)) * spread
    return x.astype(np.float32), _offsets(n, rng)


# --- references written here: textbook formulas on a full SVD --------------------------------
def _ref_rankme(s):
    p = s / s.sum() + 1e-7
    return np.exp(-(p * np.log(p)).sum())


def _ref_entropy_rank(s):
    p = s / s.sum()
    p = p[p > 0]
    return np.exp(-(p * np.log(p)).sum())


def _ref_alpha(x):
    n, d = x.shape
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    lam = s**2 / (n - 1)
    usable = int((s > s.max() * max(n, d) * EPS32).sum())
    ranks = np.arange(11, min(100, usable) + 1) if usable >= 30 else np.arange(1, usable + 1)
    slope, _ = np.polyfit(np.log(ranks), np.log(lam[ranks - 1]), 1)
    return -slope


def _ref_utterance_means(x, offsets):
    return np.stack(
        [x[a:b].mean(0) for a, b in zip(offsets[:-1], offsets[1:], strict=True) if b > a]
    )


def test_rank_measures_match_full_svd(monkeypatch):
    monkeypatch.setattr(rk, "BLOCK", 256)  # float64 blocks inside chunks are exercised too
    x16, off = _planted()
    x = x16.astype(np.float64)
    cfg = IndicatorConfig(indicators=list(RANK_NAMES), chunk=700)
    got = layer_indicators(x16, off, cfg)

    s = np.linalg.svd(x, compute_uv=False)
    sc = np.linalg.svd(x - x.mean(0), compute_uv=False)
    su = np.linalg.svd(_ref_utterance_means(x, off), compute_uv=False)
    assert got["rankme"] == pytest.approx(_ref_rankme(s), rel=1e-6)
    assert got["rankme_t"] == pytest.approx(_ref_rankme(su), rel=1e-6)
    assert got["effective_rank"] == pytest.approx(_ref_entropy_rank(sc), rel=1e-6)
    assert got["numerical_rank"] == 6 == np.linalg.matrix_rank(x, tol=s.max() * 3000 * EPS32)
    assert got["alpha_req"] == pytest.approx(_ref_alpha(x), rel=1e-6)
    assert got["utterances"] == (np.diff(off) > 0).sum()
    assert not any(k in got for k in ("inertia_per_frame", "kmeans_k", "silhouette"))


def test_alpha_req_on_a_power_law_spectrum():
    rng = np.random.default_rng(1)
    n, d, alpha = 3000, 128, 1.5
    scale = np.arange(1, d + 1) ** (-alpha / 2)  # covariance eigenvalues i^-alpha
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    x = ((rng.normal(size=(n, d)) * scale) @ q.T + 3.0).astype(np.float32)
    got = layer_indicators(x, np.array([0, n]), IndicatorConfig(["alpha_req"], chunk=512))
    assert got["alpha_req"] == pytest.approx(_ref_alpha(x.astype(np.float64)), rel=1e-6)
    assert got["alpha_req"] == pytest.approx(alpha, abs=0.15)  # the planted exponent
    assert got["alpha_req_r2"] > 0.95


def test_utterance_gram_handles_boundaries_in_any_chunking():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 4))
    off = _offsets(500, rng)
    ref = _ref_utterance_means(x, off)
    for step in (1, 7, 64, 500):
        acc = rk.UtteranceGram(off, 4)
        for a in range(0, 500, step):
            acc.update_rows(x[a : a + step], a)
        np.testing.assert_allclose(acc.gram, ref.T @ ref, rtol=1e-10)
        assert acc.n == len(ref)


def test_cluster_measures_match_sklearn_on_the_same_assignment():
    x, off = _blobs(sep=3.0)  # overlapping blobs: DB and CH are not trivial
    cfg = IndicatorConfig(
        ["inertia_per_frame", "davies_bouldin", "calinski_harabasz"], k=8, chunk=700
    )
    got = layer_indicators(x, off, cfg)
    centroids, k = cl.fit_layer_kmeans(x, cfg.k, cfg.kmeans_frames, cfg.kmeans_iter, cfg.seed)
    assert k == got["kmeans_k"] == 8
    d2 = ((x[:, None, :].astype(np.float64) - centroids[None]) ** 2).sum(-1)
    labels = d2.argmin(1)
    assert got["inertia_per_frame"] == pytest.approx(d2.min(1).mean(), rel=1e-5)
    assert got["davies_bouldin"] == pytest.approx(davies_bouldin_score(x, labels), rel=1e-5)
    assert got["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(x, labels), rel=1e-5)
    # around the fitted centroids: textbook formulas with the centroids as centres
    spread = np.array([np.sqrt(d2[labels == c, c]).mean() for c in range(k)])
    sep = np.linalg.norm(centroids[:, None] - centroids[None], axis=-1) + np.diag(
        np.full(k, np.inf)
    )
    db = ((spread[:, None] + spread[None]) / sep).max(1).mean()
    assert got["davies_bouldin_centroids"] == pytest.approx(db, rel=1e-5)
    cnt = np.bincount(labels, minlength=k)
    between = (cnt * ((centroids - x.mean(0)) ** 2).sum(1)).sum()
    ch = between / (k - 1) / (d2.min(1).sum() / (len(x) - k))
    assert got["calinski_harabasz_centroids"] == pytest.approx(ch, rel=1e-5)


def test_empty_clusters_are_dropped_like_sklearn():
    x, _ = _blobs(n=600, centres=4, sep=4.0, seed=3)
    labels = np.random.default_rng(0).integers(0, 4, len(x)) * 2  # labels 0,2,4,6 of k = 8
    centroids = np.zeros((8, x.shape[1]), np.float32)
    cp = cl.ClusterPass(centroids, len(x))
    # feed the labels directly (what assign() would have produced) through the same sums
    cp.labels[:] = labels
    cp.counts[:] = np.bincount(labels, minlength=8)
    for c in range(8):
        cp.sums[c] = x[labels == c].astype(np.float64).sum(0)
    cp.sq_to_centroid[:] = 1.0  # unused by the means-based scores
    cp.scatter(x, 0)
    res = cp.results()
    assert res["kmeans_nonempty"] == 4
    assert res["davies_bouldin"] == pytest.approx(davies_bouldin_score(x, labels), rel=1e-6)
    assert res["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(x, labels), rel=1e-6)


def test_silhouette_sample_matches_sklearn_and_interval_covers_full_value():
    x, off = _blobs(n=3000, centres=5, sep=6.0, spread=1.5, seed=4)
    cfg = IndicatorConfig(["silhouette"], k=5, silhouette_frames=1000, chunk=1024, seed=3)
    got = layer_indicators(x, off, cfg)
    centroids, _ = cl.fit_layer_kmeans(x, cfg.k, cfg.kmeans_frames, cfg.kmeans_iter, cfg.seed)
    labels = ((x[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    rows = cl.sample_rows(len(x), cfg.silhouette_frames, cfg.seed, stream=1)
    assert len(rows) == 1000
    assert got["silhouette"] == pytest.approx(silhouette_score(x[rows], labels[rows]), rel=1e-5)
    full = silhouette_score(x, labels)
    assert got["silhouette_lo"] < full < got["silhouette_hi"]
    assert got["silhouette_hi"] - got["silhouette_lo"] < 0.05


def test_silhouette_values_with_singletons_match_sklearn():
    from sklearn.metrics import silhouette_samples

    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    labels = rng.integers(0, 6, 300)
    labels[7] = 99  # a cluster of one point: silhouette 0
    np.testing.assert_allclose(
        cl.silhouette_values(x, labels), silhouette_samples(x, labels), atol=2e-6
    )


def test_float16_memmap_equals_in_memory(tmp_path):
    x, off = _blobs(n=2000, seed=6)
    x16 = x.astype(np.float16)
    np.save(tmp_path / "layer-00.npy", x16)
    mm = np.load(tmp_path / "layer-00.npy", mmap_mode="r")
    assert isinstance(mm, np.memmap)
    cfg = IndicatorConfig(k=6, kmeans_frames=1500, silhouette_frames=800, chunk=333)
    a = layer_indicators(x16, off, cfg)
    b = layer_indicators(mm, off, cfg)
    assert set(a) == set(b) >= set(NAMES)
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-12), key


def test_seed_changes_nothing_when_samples_cover_all_frames():
    x, off = _blobs(n=1500, centres=4, sep=20.0, seed=7)
    values = [
        layer_indicators(
            x, off, IndicatorConfig(k=4, kmeans_frames=1500, silhouette_frames=1500, seed=s)
        )
        for s in (0, 1, 2)
    ]
    for v in values[1:]:
        for key in values[0]:
            assert v[key] == pytest.approx(values[0][key], rel=1e-6), key
    # and a smaller sample does depend on the seed (so the test above can fail)
    sub = [
        layer_indicators(
            x, off, IndicatorConfig(["silhouette"], k=4, silhouette_frames=100, seed=s)
        )
        for s in (0, 1)
    ]
    assert sub[0]["silhouette"] != sub[1]["silhouette"]


def test_k_is_lowered_when_frames_are_few():
    x, off = _blobs(n=200, seed=8)
    got = layer_indicators(x, off, IndicatorConfig(["inertia_per_frame"], k=1024))
    assert got["kmeans_k"] == 20


@pytest.mark.parametrize(
    ("frames", "offsets", "match"),
    [
        (np.zeros((0, 8), np.float16), np.array([0]), "offsets|empty"),
        (np.zeros((0, 8), np.float16), np.array([0, 0]), "empty"),
        (np.zeros(10, np.float16), np.array([0, 10]), "shape"),
        (np.zeros((10, 0), np.float16), np.array([0, 10]), "dim"),
        (np.ones((10, 4), np.float16), np.array([0, 4, 12]), "do not cut the 10 frame rows"),
        (np.ones((10, 4), np.int32), np.array([0, 10]), "floating"),
    ],
)
def test_bad_input_is_a_user_error(frames, offsets, match):
    with pytest.raises(UserError, match=match):
        layer_indicators(frames, offsets, IndicatorConfig(chunk=4))


@pytest.mark.parametrize("names", [list(RANK_NAMES), ["inertia_per_frame"], ["silhouette"]])
def test_nan_rows_are_a_user_error(names):
    x = np.random.default_rng(9).normal(size=(100, 4)).astype(np.float16)
    x[57, 2] = np.nan
    with pytest.raises(UserError, match="NaN or inf .*row 57"):
        layer_indicators(x, np.array([0, 100]), IndicatorConfig(names, k=2, chunk=16))


def test_unknown_indicator_is_a_user_error():
    with pytest.raises(UserError, match="unknown indicator"):
        layer_indicators(np.ones((4, 2)), np.array([0, 4]), IndicatorConfig(["rankme", "lidar"]))
    with pytest.raises(UserError, match="inertia is now inertia_per_frame"):
        layer_indicators(np.ones((4, 2)), np.array([0, 4]), IndicatorConfig(["inertia"]))


def test_bad_settings_name_the_setting_and_its_minimum():
    x = np.ones((20, 4), np.float16)
    with pytest.raises(UserError, match=r"^invalid indicator settings: k = 0 \(at least 2\)$"):
        layer_indicators(x, np.array([0, 20]), IndicatorConfig(k=0))
