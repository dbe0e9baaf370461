"""Rank measures of a frame matrix, from a streamed float64 Gram matrix.

A pool of one hour is ~180k frames x 768; an SVD of that matrix costs minutes and holds it
all in memory. Every rank measure here depends only on the singular values, and those are the
square roots of the eigenvalues of the D x D Gram matrix ``X^T X``, which is accumulated chunk
by chunk in float64 (memory O(D^2), whatever the pool size). float64 matters: a float32 Gram
carries errors of ~1e-7 ||X||^2, i.e. singular values of ~3e-4 s_max appear out of nothing,
which would move RankMe and the numerical rank; in float64 that floor is ~1e-7 s_max.

Measures (``s`` = singular values, largest first, ``min(N, D)`` of them):

- RankMe (Garrido et al., ICML 2023): ``p_k = s_k / sum(s) + 1e-7``, ``exp(-sum p_k log p_k)``
  on the *uncentred* frame matrix, as in the paper.
- RankMe-t (Apple, arXiv 2409.10787): the same on the utterance embeddings (mean over each
  utterance's frames); utterances without frames are left out.
- effective rank (Roy & Vetterli, EUSIPCO 2007): ``p_k = s_k / sum(s)``, ``exp(-sum p_k log p_k)``
  with ``0 log 0 = 0`` (no epsilon), on the *centred* frame matrix. On the uncentred matrix it
  would equal RankMe to ~1e-5 and add nothing; centred, it measures how evenly the variance
  spreads over directions, without the (often dominant) mean direction that inflates ``s_1``.
- numerical rank: ``#{s_k > s_max * max(N, D) * eps}`` with ``eps`` = float32 machine epsilon
  (numpy.linalg.matrix_rank's default rule, at the float32 tolerance since embeddings are
  float32 at best; on the uncentred matrix). The tolerance grows with N, so compare pools of
  the same size; at N = 180k it drops directions below ~2% of ``s_max``.
- alpha-ReQ (Agrawal et al., NeurIPS 2022): eigenvalues ``lambda_i`` of the centred covariance,
  least-squares fit of ``log lambda_i = c - alpha log i``; alpha is returned. Ranks ``i`` 11 to
  100 (the default range of the authors' ``reptrix`` library: the head rarely follows the power
  law and the far tail is noise); if fewer than 30 eigenvalues are above the numerical-rank
  tolerance, ranks 1 to that count. Plain (unweighted) least squares; reptrix weights by 1/i.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = [
    "ALPHA_RANKS",
    "GramAccumulator",
    "RankPass",
    "UtteranceGram",
    "alpha_req",
    "effective_rank",
    "numerical_rank",
    "rankme",
    "segment_sums",
    "singular_values",
]

BLOCK = 8192  # rows converted at once (25 MB in float32 at D = 768)
RANKME_EPS = 1e-7
ALPHA_RANKS = (11, 100)
ALPHA_MIN_USABLE = 30
EPS32 = float(np.finfo(np.float32).eps)


class GramAccumulator:
    """Streaming ``X^T X`` (float64), column sums and row count of a [N, D] matrix."""

    def __init__(self, dim: int) -> None:
        self.gram = np.zeros((dim, dim), dtype=np.float64)
        self.colsum = np.zeros(dim, dtype=np.float64)
        self.n = 0

    def update(self, x: np.ndarray) -> None:
        """Add rows ``x`` (any float dtype) in blocks of ``BLOCK`` rows: each block's Gram in
        float32 (faster than float64; float16 embeddings are exact in float32 and a block's
        sums lose ~1e-6 relative), summed over blocks in float64."""
        for start in range(0, len(x), BLOCK):
            x32 = np.asarray(x[start : start + BLOCK], dtype=np.float32)
            self.gram += x32.T @ x32  # numpy uses a symmetric rank-k update for a.T @ a
            self.colsum += x32.sum(0, dtype=np.float64)
            self.n += len(x32)

    def add64(self, x64: np.ndarray) -> None:
        self.gram += x64.T @ x64
        self.colsum += x64.sum(0)
        self.n += len(x64)

    def singular_values(self, centred: bool = False) -> np.ndarray:
        """The ``min(N, D)`` singular values of X (or of X minus its column means)."""
        g = self.gram
        if centred and self.n:
            mean = self.colsum / self.n
            g = g - self.n * np.outer(mean, mean)
        return singular_values(g, self.n)


class UtteranceGram(GramAccumulator):
    """Gram of the per-utterance mean frames, fed the frames in row order.

    Only utterances that end inside the rows seen so far are complete; the one that runs on
    into the next chunk is carried as a partial sum, so memory stays O(D^2 + D).
    """

    def __init__(self, offsets: np.ndarray, dim: int) -> None:
        super().__init__(dim)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self._pending = np.zeros(dim, dtype=np.float64)
        self._pending_n = 0

    def update_rows(self, x: np.ndarray, start: int) -> None:
        """Add frames ``x`` that are rows ``start:start + len(x)`` of the pool."""
        for b in range(0, len(x), BLOCK):
            self.add_block64(np.asarray(x[b : b + BLOCK], dtype=np.float64), start + b)

    def add_block64(self, x64: np.ndarray, a: int) -> None:
        """Add float64 frames that are rows ``a:a + len(x64)`` of the pool."""
        off = self.offsets
        b = a + len(x64)
        inner = off[np.searchsorted(off, a, "right") : np.searchsorted(off, b, "left")]
        starts = np.concatenate([[0], np.unique(inner) - a]).astype(np.int64)
        counts = np.diff(np.append(starts, len(x64)))
        sums = segment_sums(x64, np.repeat(np.arange(len(starts)), counts), len(starts))
        counts = counts.astype(np.float64)
        sums[0] += self._pending
        counts[0] += self._pending_n
        ends_here = off[min(np.searchsorted(off, b), len(off) - 1)] == b
        done = len(sums) if ends_here else len(sums) - 1
        if done:
            self.add64(sums[:done] / counts[:done, None])
        if ends_here:
            self._pending = np.zeros_like(self._pending)
            self._pending_n = 0
        else:
            self._pending, self._pending_n = sums[-1], int(counts[-1])


class RankPass:
    """Both Gram matrices (frames; utterance means if ``offsets`` is given) in one pass,
    converting each block to float64 once."""

    def __init__(self, dim: int, offsets: np.ndarray | None) -> None:
        self.frames = GramAccumulator(dim)
        self.utterances = UtteranceGram(offsets, dim) if offsets is not None else None

    def update(self, x: np.ndarray, start: int) -> None:
        for b in range(0, len(x), BLOCK):
            x64 = np.asarray(x[b : b + BLOCK], dtype=np.float64)
            self.frames.add64(x64)
            if self.utterances is not None:
                self.utterances.add_block64(x64, start + b)


def segment_sums(x: np.ndarray, segment: np.ndarray, n_segments: int) -> np.ndarray:
    """``out[s] = sum of rows i with segment[i] == s`` (float64), as a sparse product."""
    m = sp.csr_matrix((np.ones(len(x)), (segment, np.arange(len(x)))), shape=(n_segments, len(x)))
    return np.asarray(m @ x, dtype=np.float64)


def singular_values(gram: np.ndarray, n: int) -> np.ndarray:
    """``sqrt(max(eig, 0))`` of a Gram matrix, largest first, the top ``min(n, D)`` of them."""
    eig = np.linalg.eigvalsh(gram)[::-1]
    return np.sqrt(np.maximum(eig[: min(n, len(eig))], 0.0))


def rankme(s: np.ndarray, eps: float = RANKME_EPS) -> float:
    """RankMe: ``exp(-sum p log p)`` with ``p = s / sum(s) + eps`` (Garrido et al. 2023)."""
    total = float(s.sum())
    if total <= 0:
        return float("nan")
    p = s / total + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def effective_rank(s: np.ndarray) -> float:
    """Roy & Vetterli's effective rank: ``exp(H(p))``, ``p = s / sum(s)``, ``0 log 0 = 0``."""
    total = float(s.sum())
    if total <= 0:
        return float("nan")
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def rank_tolerance(s: np.ndarray, n: int, dim: int) -> float:
    return float(s.max(initial=0.0)) * max(n, dim) * EPS32


def numerical_rank(s: np.ndarray, n: int, dim: int) -> int:
    """Count of ``s > s_max * max(N, D) * eps_float32``."""
    return int((s > rank_tolerance(s, n, dim)).sum()) if len(s) else 0


def alpha_req(s_centred: np.ndarray, n: int, dim: int) -> tuple[float, float]:
    """alpha-ReQ from the centred singular values: (alpha, R^2 of the log-log fit).

    Covariance eigenvalues are ``s^2 / (N - 1)``; the scale does not change the slope.
    """
    usable = int((s_centred > rank_tolerance(s_centred, n, dim)).sum())
    lo, hi = ALPHA_RANKS
    if usable >= ALPHA_MIN_USABLE:
        ranks = np.arange(lo, min(hi, usable) + 1)
    else:
        ranks = np.arange(1, min(hi, usable) + 1)
    if len(ranks) < 2:
        return float("nan"), float("nan")
    y = np.log(s_centred[ranks - 1] ** 2 / max(n - 1, 1))
    x = np.log(ranks.astype(np.float64))
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss if ss > 0 else float("nan")
    return float(-slope), r2
