"""Training-free pseudo-label selection by conditional independence (method A).

Zaiem et al., Interspeech 2021, arXiv:2104.07388; groups: IEEE JSTSP 2022, arXiv:2107.00594.
See docs/methods.md.

:mod:`~speechssl.selection.items` turns cuts into items (downsampled log-mel and
pseudo-label means); :mod:`~speechssl.selection.hsic` scores single pseudo-labels (HSIC
inside each downstream class, permutation p-value, jackknife or bootstrap interval);
:mod:`~speechssl.selection.groups` fits softmax/sparsemax weights over several;
:mod:`~speechssl.selection.ranking` ranks them. ``speechssl select``
(:mod:`speechssl.recipes.select`) wires these on a CutSet; its report is
:mod:`speechssl.report.selection`.
"""

from speechssl.selection.groups import GroupResult, fit_group, sparsemax
from speechssl.selection.hsic import (
    CIResult,
    conditional_hsic,
    cosine_kernel,
    gaussian_downsample,
    item_means,
)

__all__ = [
    "CIResult",
    "GroupResult",
    "conditional_hsic",
    "cosine_kernel",
    "fit_group",
    "gaussian_downsample",
    "item_means",
    "sparsemax",
]
