"""Conditional-independence utility of a pseudo-label: HSIC inside each downstream class.

Method A (Zaiem et al., Interspeech 2021, arXiv:2104.07388; docs/methods.md): a pseudo-label Z is a
good pretext target for labels Y when the speech X and Z are close to independent given Y. Per class
c with n_c items::

    HSIC_c = tr(K H L H) / (n_c - 1)^2        K: speech kernel, L: pseudo-label kernel

averaged over the classes (plain mean, or weighted by n_c). Lower = better pseudo-label.

* Speech kernel K: each item's log-mel matrix [T, 40] is Gaussian-downsampled in time to a
  fixed number of frames (:func:`gaussian_downsample`), flattened; K_ij = cosine similarity.
* Pseudo-label kernel L: z_i = the item mean of the frame-level feature
  (:func:`item_means`); L_ij = exp(-|z_i - z_j|^2 / (2 sigma2)) (Euclidean distance for
  multi-dimensional features such as MFCC).
* Modes. ``reference`` keeps the published code's conventions so as to reproduce its
  rankings: raw item means (feature units matter), sigma2 = 0.05, and its centring defect
  H = I - 11^T / n_c^2 (almost no centring). ``standard`` is the sound version: each
  feature z-scored over all items, sigma by the median heuristic, H = I - 11^T / n_c.
  Both divide by (n_c - 1)^2 as the paper states (the released script divides by n_c^2,
  which only changes the relative weight of classes of different sizes). Without centring
  the reference statistic is close to the mean of K * L inside a class, so it mostly rewards
  a large within-class spread in raw units (F0 in Hz gives L ~ identity, a ZCR in [0, 1]
  gives L ~ all ones), not independence from the speech.
* Items without a usable value (a voiced-only feature on an item with no voiced frame, in
  standard mode) are left out of that feature's classes and counted; classes with n_c <= 3
  usable items are skipped and counted.

Significance. Under the null "Z independent of X given Y", permuting z *within* each class
keeps the joint law, so a permutation test is exact. Dependence raises HSIC, so the p-value
is the upper tail, p = (1 + #{perm >= observed}) / (1 + B): a small p says "Z still depends
on X inside the classes" (a worse pseudo-label); a large p is no evidence against
conditional independence (it does not prove it).

Interval. The default is a delete-one jackknife inside each class (classes independent:
var = sum_c w_c^2 var_c) with a normal interval. The within-class bootstrap (items resampled
with replacement) is offered too, but HSIC at these class sizes is close to a degenerate
V-statistic, for which the naive bootstrap is known to be inconsistent: a repeated item is a
pair with K = L = 1, so the resampled statistic is biased and its spread inflated. On planted
data (4 classes x 30 items, 60 independent draws of the data) the 95 % intervals were, in
units of 3.92 x the true sampling sd, 1.1-1.9 wide for the jackknife (conservative, as the
Efron-Stein inequality says) and 2.3-3.6 for the bootstrap. The bootstrap distribution is
shifted by its bias (mean - estimate) before its percentiles are taken.

Speed. With Kc = H K H, tr(K H L H) = <Kc, L>. A permutation p of z gives
<Kc, L[p][:, p]> = <Kc[p^-1][:, p^-1], L>, and a bootstrap resample q gives <M_q, L> with
M_q = scatter-add of H K_q H onto (q_i, q_j); leaving item i out gives the recentred K
without row and column i. So each class builds its 1 + B (+ R or + n_c) "design" matrices
once (O(n_c^2) each, shared by all pseudo-labels) and a single matrix product with the
stacked L matrices scores every pseudo-label at once (timings: benchmarks/results/select.md).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch

__all__ = [
    "MIN_CLASS_SIZE",
    "Interval",
    "REFERENCE_SIGMA2",
    "CIResult",
    "FeatureKernel",
    "center",
    "class_statistics",
    "conditional_hsic",
    "cosine_kernel",
    "downsample_weights",
    "gaussian_downsample",
    "item_means",
    "prepare_feature",
    "sq_distances",
]

Mode = Literal["standard", "reference"]
Averaging = Literal["plain", "weighted"]
Interval = Literal["jackknife", "bootstrap", "none"]

REFERENCE_SIGMA2 = 0.05  # the published code's rbf_value(sigma=0.05): exp(-d^2 / (2 * 0.05))
MIN_CLASS_SIZE = 4  # classes with n_c <= 3 usable items are skipped
_MEDIAN_ITEMS = 2000  # items used for the median-heuristic bandwidth


# --------------------------------------------------------------------------- speech kernel


def downsample_weights(
    lengths: torch.Tensor,
    n_out: int,
    std_ratio: float = 0.07,
    std_slope: float = 0.1,
    t_max: int | None = None,
) -> torch.Tensor:
    """Gaussian downsampling filters, ``[B, n_out, t_max]`` float64, rows summing to 1.

    Our reading of the published downsampler (``downsample(features, n_samples, std_ratio,
    std_slope)`` in the authors' CI_estimator, from the Zero Resource Challenge tools):
    output k is a Gaussian-weighted average of the T input frames, centred at
    ``mu_k = k (T - 1) / (n_out - 1)`` (evenly spaced from the first to the last frame), with
    ``std_k = std_ratio * T + std_slope * min(k, n_out - 1 - k)``: wider with longer items,
    and a little wider towards the middle than at the two ends (the published code builds
    this rank vector for an even n_out only; min(k, n_out - 1 - k) equals it there and is the
    symmetric choice for an odd one). Frame j gets the Gaussian's
    mass over [j - 0.5, j + 0.5] (a CDF difference, not the density at j), and each row is
    renormalised over the valid frames, so the edges are not darkened by truncation.
    Frames at or after ``lengths[b]`` get weight 0; an item with no frame gets a zero row.
    """
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    if n_out < 1:
        raise ValueError(f"n_out must be >= 1, got {n_out}")
    t_max = int(lengths.max()) if t_max is None else t_max
    t = lengths.to(torch.float64)[:, None, None]  # [B, 1, 1]
    k = torch.arange(n_out, dtype=torch.float64)[None, :, None]  # [1, K, 1]
    step = (t - 1).clamp(min=0) / max(n_out - 1, 1)
    mu = k * step
    rank = torch.minimum(k, n_out - 1 - k)
    std = (std_ratio * t + std_slope * rank).clamp(min=1e-6)
    j = torch.arange(t_max, dtype=torch.float64)[None, None, :]
    # Phi(b) - Phi(a) computed on the side of the mean where it does not cancel.
    a, b = (j - 0.5 - mu) / std, (j + 0.5 - mu) / std
    ndtr = torch.special.ndtr
    w = torch.where(a > 0, ndtr(-a) - ndtr(-b), ndtr(b) - ndtr(a))
    w = w * (j < t)
    total = w.sum(-1, keepdim=True)
    return torch.where(total > 0, w / total.clamp(min=1e-300), torch.zeros_like(w))


def gaussian_downsample(
    feats: torch.Tensor,
    lengths: torch.Tensor | None = None,
    n_out: int = 30,
    std_ratio: float = 0.07,
    std_slope: float = 0.1,
) -> torch.Tensor:
    """Downsample padded frames ``[B, T, D]`` (or one item ``[T, D]``) to ``[B, n_out, D]``.

    30 output frames for utterances, 10 for phone or word segments (the published settings).
    Padding (frames at or after ``lengths``) never leaks into the result.
    """
    single = feats.dim() == 2
    x = feats[None] if single else feats
    if lengths is None:
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
    w = downsample_weights(lengths, n_out, std_ratio, std_slope, t_max=x.shape[1])
    out = torch.einsum("bkt,btd->bkd", w.to(x.dtype), x)
    return out[0] if single else out


def cosine_kernel(x: torch.Tensor) -> torch.Tensor:
    """K_ij = cosine similarity of rows i and j of ``x`` ``[n, d]`` (flattened matrices)."""
    x = x.to(torch.float64)
    unit = x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return unit @ unit.T


# ------------------------------------------------------------------- pseudo-label kernel


def item_means(
    values: torch.Tensor,
    mask: torch.Tensor,
    voiced: torch.Tensor | None = None,
    voiced_only: bool = False,
    zero_unvoiced: bool = False,
) -> torch.Tensor:
    """Item means ``[B, dim]`` of frame values ``[B, T, dim]`` over valid frames (``mask``).

    Voiced-only features (F0, jitter, shimmer, HNR) are averaged over voiced frames; an item
    with no usable frame gets a NaN row (the utility drops it and counts it). With
    ``zero_unvoiced`` (reference mode) unvoiced frames count as 0 and the mean runs over all
    valid frames instead: openSMILE writes 0 for these LLDs on unvoiced frames and the
    published code took the plain mean of the column, zeros included.
    """
    if values.dim() == 2:
        values = values[..., None]
    values = values.to(torch.float64)
    keep = mask.bool() & torch.isfinite(values).all(-1)
    if voiced_only and voiced is not None:
        if zero_unvoiced:
            values = torch.where(voiced.bool()[..., None], values, 0.0)
        else:
            keep = keep & voiced.bool()
    count = keep.sum(1, keepdim=True)
    total = torch.where(keep[..., None], values, 0.0).sum(1)
    mean = total / count.clamp(min=1)
    return torch.where(count > 0, mean, torch.full_like(mean, math.nan))


def sq_distances(z: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[n, n]`` between the rows of ``z`` ``[n, dim]``."""
    z = z.to(torch.float64)
    if z.dim() == 1:
        z = z[:, None]
    return (z[:, None, :] - z[None, :, :]).square().sum(-1)


@dataclass
class FeatureKernel:
    """A pseudo-label ready for its kernel: item values (NaN rows = unusable) and sigma^2."""

    z: torch.Tensor  # [N, dim] float64, standardised in standard mode
    valid: torch.Tensor  # [N] bool
    sigma2: float  # L_ij = exp(-d_ij^2 / (2 sigma2))
    constant: bool  # every usable item has the same value: L is all ones

    def log_kernel(self, idx: torch.Tensor) -> torch.Tensor:
        """log L on items ``idx``: ``-d^2 / (2 sigma2)``."""
        return -sq_distances(self.z[idx]) / (2.0 * self.sigma2)


def prepare_feature(
    values: torch.Tensor, mode: Mode, generator: torch.Generator | None = None
) -> FeatureKernel:
    """Item values ``[N]`` or ``[N, dim]`` -> :class:`FeatureKernel` for ``mode``.

    ``reference``: raw values, sigma2 = 0.05. ``standard``: each dimension z-scored over the
    usable items, then sigma = the median pairwise distance over (at most 2000 of) all items,
    all classes pooled: a within-class bandwidth would blow a feature that is nearly constant
    inside each class (a function of Y, the ideal pseudo-label) up to unit scale and test its
    noise instead.
    """
    z = values.to(torch.float64)
    z = z[:, None] if z.dim() == 1 else z
    valid = torch.isfinite(z).all(1)
    good = z[valid]
    constant = bool(good.shape[0] < 2 or (good.max(0).values == good.min(0).values).all())
    if mode == "reference":
        return FeatureKernel(z, valid, REFERENCE_SIGMA2, constant)
    if mode != "standard":
        raise ValueError(f"mode must be 'standard' or 'reference', got {mode!r}")
    if good.shape[0] >= 2:
        std = good.std(0, unbiased=False)
        z = (z - good.mean(0)) / torch.where(std > 0, std, torch.ones_like(std))
        good = z[valid]
    sigma2 = 1.0
    if good.shape[0] >= 2 and not constant:
        sample = good
        if good.shape[0] > _MEDIAN_ITEMS:
            pick = torch.randperm(good.shape[0], generator=generator)[:_MEDIAN_ITEMS]
            sample = good[pick]
        d2 = sq_distances(sample)
        iu = torch.triu_indices(len(sample), len(sample), offset=1)
        dist = d2[iu[0], iu[1]].sqrt()
        med = float(np.median(dist.numpy()))  # midpoint median; torch.quantile is 20x slower
        if med <= 0:  # mostly ties (a discrete feature): fall back to the mean distance
            med = float(dist.mean())
        sigma2 = med**2 if med > 0 else 1.0
    return FeatureKernel(z, valid, sigma2, constant)


# ---------------------------------------------------------------------------- statistic


def center(k: torch.Tensor, a: float) -> torch.Tensor:
    """H K H with H = I - a 11^T, for ``[..., n, n]`` (a = 1/n standard, 1/n^2 reference)."""
    rows = k.sum(-1, keepdim=True)
    cols = k.sum(-2, keepdim=True)
    total = k.sum((-2, -1), keepdim=True)
    return k - a * (rows + cols) + (a * a) * total


def _centring(n: int, mode: Mode) -> float:
    return 1.0 / n if mode == "standard" else 1.0 / (n * n)


def class_statistics(
    k: torch.Tensor,
    log_ls: torch.Tensor,
    mode: Mode,
    perms: torch.Tensor | None = None,
    boots: torch.Tensor | None = None,
    jackknife: bool = False,
    chunk_elements: int = 1 << 22,
) -> torch.Tensor:
    """HSIC of one class for F pseudo-labels: observed, permuted, resampled, leave-one-out.

    Args:
        k: speech kernel ``[n, n]`` of the class (uncentred, symmetric).
        log_ls: ``[F, n, n]`` log pseudo-label kernels (L = exp(log_ls)).
        mode: centring convention.
        perms: ``[B, n]`` permutations p: z permuted within the class (L -> L[p][:, p]).
        boots: ``[R, n]`` bootstrap resamples (indices drawn with replacement).
        jackknife: add the n leave-one-out statistics (each on n - 1 items).

    Returns:
        ``[1 + B + R (+ n), F]``: row 0 the observed tr(K H L H) / (n - 1)^2, then one row
        per permutation, per bootstrap resample and per left-out item.
    """
    n = k.shape[0]
    a = _centring(n, mode)
    lflat = log_ls.exp().reshape(log_ls.shape[0], n * n).T  # [n^2, F]
    kc = center(k, a)
    norm = float((n - 1) ** 2)
    rows = [(kc.reshape(1, n * n) @ lflat) / norm]
    step = max(1, chunk_elements // (n * n))
    if perms is not None:
        for p in perms.split(step):
            inv = torch.argsort(p, dim=1)  # <Kc, L[p][:, p]> = <Kc[inv][:, inv], L>
            m = kc[inv[:, :, None], inv[:, None, :]]
            rows.append(m.reshape(len(p), n * n) @ lflat / norm)
    if boots is not None:
        for q in boots.split(step):
            kq = center(k[q[:, :, None], q[:, None, :]], a)  # H K_q H, [b, n, n]
            flat = (q[:, :, None] * n + q[:, None, :]).reshape(len(q), n * n)
            m = torch.zeros(len(q), n * n, dtype=kq.dtype)
            m.scatter_add_(1, flat, kq.reshape(len(q), n * n))  # M_q: sum_{q_i=a, q_j=b}
            rows.append(m @ lflat / norm)
    if jackknife:
        a1 = _centring(n - 1, mode)
        r, total = k.sum(1), k.sum()
        for out in torch.arange(n).split(step):
            b = len(out)
            r1 = r[None, :] - k[out]  # row sums without the left-out item, [b, n]
            t1 = total - 2 * r[out] + k[out, out]
            m = k[None] - a1 * (r1[:, :, None] + r1[:, None, :]) + (a1 * a1) * t1[:, None, None]
            m[torch.arange(b), out, :] = 0.0
            m[torch.arange(b), :, out] = 0.0
            rows.append(m.reshape(b, n * n) @ lflat / float((n - 2) ** 2))
    return torch.cat(rows)


@dataclass
class CIResult:
    """The utility of one pseudo-label (lower = more conditionally independent = better)."""

    utility: float
    low: float  # interval (NaN when turned off)
    high: float
    p_value: float  # permutation test of conditional independence (NaN without permutations)
    null_mean: float  # mean of the permutation distribution (what independence would give)
    null_std: float
    items: int  # items that entered the statistic
    classes_used: int
    classes_skipped: int  # fewer than MIN_CLASS_SIZE usable items
    items_dropped: int  # no usable value (e.g. no voiced frame) or in a skipped class
    constant: bool = False
    interval: str = "jackknife"

    def to_dict(self) -> dict:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


def conditional_hsic(
    speech: torch.Tensor,
    labels: Sequence[Hashable],
    values: Mapping[str, torch.Tensor],
    mode: Mode = "standard",
    averaging: Averaging = "plain",
    permutations: int = 200,
    interval: Interval = "jackknife",
    bootstrap: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, CIResult]:
    """The CI utility of every pseudo-label in ``values``.

    Args:
        speech: ``[N, d]`` flattened downsampled log-mel of the N items.
        labels: the downstream class of each item.
        values: name -> item values ``[N]`` or ``[N, dim]``; NaN rows are unusable items.
        mode: ``standard`` or ``reference`` (see the module docstring).
        averaging: ``plain`` mean over classes or ``weighted`` by usable items per class.
        permutations: permutations per class for the p-value (0: no test).
        interval: ``jackknife`` (delete-one within classes, normal interval), ``bootstrap``
            (bias-corrected percentile, ``bootstrap`` resamples per class) or ``none``.
        seed: seeds the bandwidth subsample, the permutations and the resamples.
        confidence: coverage of the interval.
    """
    if averaging not in ("plain", "weighted"):
        raise ValueError(f"averaging must be 'plain' or 'weighted', got {averaging!r}")
    if interval not in ("jackknife", "bootstrap", "none"):
        raise ValueError(f"interval must be jackknife, bootstrap or none, got {interval!r}")
    if len(labels) != speech.shape[0]:
        raise ValueError(f"{len(labels)} labels for {speech.shape[0]} items")
    n_boot = bootstrap if interval == "bootstrap" else 0
    g = torch.Generator().manual_seed(seed)
    feats = {name: prepare_feature(v, mode, g) for name, v in values.items()}
    names = list(feats)
    classes: dict[Hashable, list[int]] = {}
    for i, y in enumerate(labels):
        classes.setdefault(y, []).append(i)
    order = sorted(classes, key=lambda y: (type(y).__name__, str(y)))
    # per feature: (class weight, [1 + B + R] averaged rows, jackknife variance of the class)
    parts: dict[str, list[tuple[float, torch.Tensor, float]]] = {n: [] for n in names}
    used_items = dict.fromkeys(names, 0)
    skipped = dict.fromkeys(names, 0)
    for y in order:
        idx = torch.tensor(classes[y])
        patterns: dict[bytes, list[str]] = {}
        for name in names:
            patterns.setdefault(feats[name].valid[idx].numpy().tobytes(), []).append(name)
        for group in patterns.values():
            sub = idx[feats[group[0]].valid[idx]]
            n = len(sub)
            if n < MIN_CLASS_SIZE:
                for name in group:
                    skipped[name] += 1
                continue
            k = cosine_kernel(speech[sub])
            log_ls = torch.stack([feats[name].log_kernel(sub) for name in group])
            perms = None
            if permutations:
                perms = torch.argsort(torch.rand(permutations, n, generator=g), dim=1)
            boots = torch.randint(0, n, (n_boot, n), generator=g) if n_boot else None
            stats = class_statistics(
                k, log_ls, mode, perms, boots, jackknife=interval == "jackknife"
            )
            head = 1 + permutations + n_boot
            weight = 1.0 if averaging == "plain" else float(n)
            for j, name in enumerate(group):
                var = math.nan
                if interval == "jackknife":
                    loo = stats[head:, j]
                    var = float((n - 1) / n * (loo - loo.mean()).square().sum())
                parts[name].append((weight, stats[:head, j], var))
                used_items[name] += n
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)
    tail = (1.0 - confidence) / 2.0
    out = {}
    for name in names:
        common = dict(
            items=used_items[name],
            classes_used=len(parts[name]),
            classes_skipped=skipped[name],
            items_dropped=len(labels) - used_items[name],
            constant=feats[name].constant,
            interval=interval,
        )
        if not parts[name]:
            nan = math.nan
            out[name] = CIResult(nan, nan, nan, nan, nan, nan, **common)
            continue
        w = torch.tensor([p[0] for p in parts[name]], dtype=torch.float64)
        w = w / w.sum()
        avg = (w[:, None] * torch.stack([p[1] for p in parts[name]])).sum(0)
        observed = float(avg[0])
        null = avg[1 : 1 + permutations]
        p_value = null_mean = null_std = low = high = math.nan
        if permutations:
            tol = 1e-12 * max(abs(observed), 1e-300)
            p_value = float((1 + (null >= observed - tol).sum()) / (1 + permutations))
            null_mean = float(null.mean())
            null_std = float(null.std(unbiased=True)) if permutations > 1 else math.nan
        if interval == "jackknife":
            # classes are independent: var(sum_c w_c s_c) = sum_c w_c^2 var(s_c)
            var = sum(float(wc) ** 2 * p[2] for wc, p in zip(w, parts[name], strict=True))
            low, high = observed - z * math.sqrt(var), observed + z * math.sqrt(var)
        elif n_boot:
            boot = avg[1 + permutations :]
            q = torch.tensor([tail, 1.0 - tail], dtype=torch.float64)
            shifted = boot - (boot.mean() - observed)  # remove the duplicate-item bias
            low, high = (float(v) for v in torch.quantile(shifted, q))
        out[name] = CIResult(observed, low, high, p_value, null_mean, null_std, **common)
    return out
