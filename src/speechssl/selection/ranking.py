"""Rank the candidates of :class:`~speechssl.selection.items.Items` by their CI utility.

Single pseudo-labels are sorted by :func:`~speechssl.selection.hsic.conditional_hsic`
(lowest utility first, unusable ones last); optionally softmax and sparsemax groups are
fitted over all candidates (:func:`~speechssl.selection.groups.fit_group`). Both are timed,
apart from item extraction.
"""

from __future__ import annotations

import math
import time
from typing import Any

from speechssl.errors import UserError
from speechssl.selection.groups import fit_group
from speechssl.selection.hsic import Averaging, Interval, Mode, conditional_hsic
from speechssl.selection.items import Items

__all__ = ["rank_items"]


def rank_items(
    items: Items,
    mode: Mode = "standard",
    averaging: Averaging = "plain",
    permutations: int = 200,
    interval: Interval = "jackknife",
    bootstrap: int = 200,
    seed: int = 0,
    groups: bool = False,
) -> dict[str, Any]:
    """``{"ranking": [...], "timings": {...}}`` (and ``"groups"`` when asked for).

    Each ranking row is the candidate's rank (1 = best), name, whether it is voiced-only and
    its :class:`~speechssl.selection.hsic.CIResult` fields; see :func:`conditional_hsic` for
    the arguments.
    """
    t0 = time.perf_counter()
    scores = conditional_hsic(
        items.speech,
        items.labels,
        items.values,
        mode=mode,
        averaging=averaging,
        permutations=permutations,
        interval=interval,
        bootstrap=bootstrap,
        seed=seed,
    )
    utility_s = time.perf_counter() - t0
    order = sorted(scores, key=lambda n: (math.isnan(scores[n].utility), scores[n].utility))
    ranking = [
        {"rank": r + 1, "name": n, "voiced_only": items.voiced_only.get(n, False)}
        | scores[n].to_dict()
        for r, n in enumerate(order)
    ]
    out: dict[str, Any] = {"ranking": ranking, "timings": {"utility_s": round(utility_s, 3)}}
    if groups:
        t0 = time.perf_counter()
        out["groups"] = {}
        for kind in ("softmax", "sparsemax"):
            try:
                res = fit_group(
                    items.speech,
                    items.labels,
                    items.values,
                    kind=kind,
                    mode=mode,
                    averaging=averaging,
                    seed=seed,
                )
            except ValueError as exc:
                raise UserError(f"cannot fit a {kind} group: {exc}") from None
            out["groups"][kind] = res.to_dict()
        out["timings"]["groups_s"] = round(time.perf_counter() - t0, 3)
    return out
