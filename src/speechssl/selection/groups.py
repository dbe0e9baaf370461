"""Weighted groups of pseudo-labels, fitted to minimise the CI utility (journal version).

Zaiem et al., IEEE JSTSP 2022: weights lambda = softmax(W) or sparsemax(W) over the
candidates; the group's pseudo-label kernel is the product of the single kernels raised to
lambda, prod_k L_k^lambda_k = exp(sum_k lambda_k log L_k), which is an RBF on the
lambda-weighted squared distances; W is fitted by SGD (lr 0.01, momentum 0.9, 1000 steps)
to minimise the CI utility of :mod:`speechssl.selection.hsic`. Pretraining then uses
sum_k lambda_k loss_k (plus the log-mel and MFCC baselines).

Choices, and why:
* Init W = 0.05 * N(0, 1) (seeded): the published sparsemax init (1 + 0.05 N(0, 1); both maps
  ignore a constant shift). The published softmax init was N(0, 1), which makes the result
  depend on the seed more than on the data at this learning rate; we start both near uniform.
* Objective. ``reference`` minimises the utility itself, as published (its nearly uncentred
  statistic is O(1), so lr 0.01 moves W). In ``standard`` mode the centred statistic is
  O(1e-4) and W would not move in 1000 steps, so we minimise log(utility): the same minimiser
  (the utility is >= 0, an inner product of two centred PSD kernels), a scale-free step.
* As the published code, ``reference`` clips log L to [-10, 0] (L changes by < 5e-5).
* Items: those usable for every candidate, at most ``max_items_per_class`` per class (seeded
  subsample): each SGD step costs O(F * sum_c n_c^2).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from speechssl.selection.hsic import (
    MIN_CLASS_SIZE,
    Averaging,
    Mode,
    center,
    cosine_kernel,
    prepare_feature,
)

__all__ = ["GroupResult", "fit_group", "sparsemax"]

Kind = Literal["softmax", "sparsemax"]


def sparsemax(w: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Euclidean projection of ``w`` onto the probability simplex (Martins & Astudillo 2016).

    Sort z descending; the support is the largest k with 1 + k z_(k) > sum_{j<=k} z_(j);
    tau = (sum_{j<=k} z_(j) - 1) / k; p = max(z - tau, 0). Written with differentiable ops,
    so autograd gives the sparsemax Jacobian diag(s) - s s^T / |S| (s = support indicator).
    """
    z = w.transpose(dim, -1)
    zs, _ = torch.sort(z, dim=-1, descending=True)
    cs = zs.cumsum(-1)
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=z.device)
    support = (1 + k * zs) > cs
    kz = support.sum(-1, keepdim=True)
    tau = (cs.gather(-1, kz - 1) - 1) / kz.to(z.dtype)
    return (z - tau).clamp(min=0).transpose(dim, -1)


@dataclass
class GroupResult:
    """Fitted weights over the candidates and the utility of the weighted group."""

    kind: str
    names: list[str]
    weights: list[float]
    utility: float  # CI utility of the group kernel at the fitted weights
    start_utility: float  # at uniform weights
    items: int
    classes_used: int
    classes_skipped: int
    steps: int

    def selected(self, threshold: float = 1e-3) -> dict[str, float]:
        """Candidates with weight above ``threshold``, heaviest first."""
        pairs = sorted(zip(self.names, self.weights, strict=True), key=lambda p: -p[1])
        return {n: w for n, w in pairs if w > threshold}

    def to_dict(self) -> dict:
        return asdict(self) | {"selected": self.selected()}


class _PairData:
    """Everything a utility evaluation needs, as flat vectors over the (i <= j) item pairs.

    utility(lambda) = sum_p kvec_p * exp(lambda . G[:, p]), where kvec folds in the centred
    speech kernel, the factor 2 of the off-diagonal pairs, 1/(n_c - 1)^2 and class weights.
    """

    def __init__(self, speech, labels, values, mode, averaging, seed, max_items_per_class):
        g = torch.Generator().manual_seed(seed)
        self.names = list(values)
        # Same seeding as conditional_hsic: the same bandwidths for the same inputs.
        feats = [prepare_feature(values[n], mode, g) for n in self.names]
        valid = torch.stack([f.valid for f in feats]).all(0)
        classes: dict[Hashable, list[int]] = {}
        for i, y in enumerate(labels):
            if valid[i]:
                classes.setdefault(y, []).append(i)
        kvecs, gmats, weights = [], [], []
        self.items = 0
        self.skipped = sum(1 for y in set(labels) if y not in classes)
        sub_g = torch.Generator().manual_seed(seed + 1)
        for y in sorted(classes, key=lambda y: (type(y).__name__, str(y))):
            idx = torch.tensor(classes[y])
            if max_items_per_class and len(idx) > max_items_per_class:
                idx = idx[torch.randperm(len(idx), generator=sub_g)[:max_items_per_class]]
            n = len(idx)
            if n < MIN_CLASS_SIZE:
                self.skipped += 1
                continue
            a = 1.0 / n if mode == "standard" else 1.0 / (n * n)
            kc = center(cosine_kernel(speech[idx]), a)
            logl = torch.stack([f.log_kernel(idx) for f in feats])
            if mode == "reference":
                logl = logl.clamp(-10.0, 0.0)
            iu = torch.triu_indices(n, n)
            factor = torch.where(iu[0] == iu[1], 1.0, 2.0).to(torch.float64)
            kvecs.append(kc[iu[0], iu[1]] * factor / (n - 1) ** 2)
            gmats.append(logl[:, iu[0], iu[1]])
            weights.append(1.0 if averaging == "plain" else float(n))
            self.items += n
        self.classes_used = len(kvecs)
        if not kvecs:
            raise ValueError("no class has enough items usable for every candidate")
        w = torch.tensor(weights, dtype=torch.float64) / sum(weights)
        self.kvec = torch.cat([k * wc for k, wc in zip(kvecs, w, strict=True)])
        self.gmat = torch.cat(gmats, dim=1)  # [F, P]

    def utility(self, lam: torch.Tensor) -> torch.Tensor:
        return self.kvec @ torch.exp(lam.to(self.gmat.dtype) @ self.gmat)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Group fitting is small ops (1000 SGD steps of a GEMV over at most ~100^2 / 2 pairs per
    class): extra OpenMP threads only add synchronisation, which made it several times slower
    with 2 threads on a busy 2-core machine. The caller's setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_group(
    speech: torch.Tensor,
    labels: Sequence[Hashable],
    values: Mapping[str, torch.Tensor],
    kind: Kind = "softmax",
    mode: Mode = "standard",
    averaging: Averaging = "plain",
    steps: int = 1000,
    lr: float = 0.01,
    momentum: float = 0.9,
    seed: int = 0,
    max_items_per_class: int | None = 100,
) -> GroupResult:
    """Fit weights over the pseudo-labels in ``values`` to minimise the group's CI utility.

    Arguments are those of :func:`speechssl.selection.hsic.conditional_hsic`, plus ``kind``
    (``softmax`` keeps every candidate; ``sparsemax`` can zero some out) and the SGD settings.
    """
    if kind not in ("softmax", "sparsemax"):
        raise ValueError(f"kind must be 'softmax' or 'sparsemax', got {kind!r}")
    if len(values) < 1:
        raise ValueError("give at least one candidate")
    with _threads(1):
        return _fit(
            speech,
            labels,
            values,
            kind,
            mode,
            averaging,
            steps,
            lr,
            momentum,
            seed,
            max_items_per_class,
        )


def _fit(speech, labels, values, kind, mode, averaging, steps, lr, momentum, seed, max_items):
    data = _PairData(speech, labels, values, mode, averaging, seed, max_items)
    act = torch.softmax if kind == "softmax" else sparsemax
    f = len(data.names)
    g = torch.Generator().manual_seed(seed)
    w = (0.05 * torch.randn(f, generator=g, dtype=torch.float64)).requires_grad_()
    opt = torch.optim.SGD([w], lr=lr, momentum=momentum)
    use_log = mode == "standard"
    for _ in range(steps):
        opt.zero_grad()
        u = data.utility(act(w, dim=-1))
        loss = u.clamp(min=1e-300).log() if use_log else u
        loss.backward()
        opt.step()
    with torch.no_grad():
        lam = act(w, dim=-1)
        final = float(data.utility(lam))
        start = float(data.utility(torch.full((f,), 1.0 / f, dtype=torch.float64)))
    return GroupResult(
        kind=kind,
        names=data.names,
        weights=[float(x) for x in lam],
        utility=final if math.isfinite(final) else math.nan,
        start_utility=start,
        items=data.items,
        classes_used=data.classes_used,
        classes_skipped=data.skipped,
        steps=steps,
    )
