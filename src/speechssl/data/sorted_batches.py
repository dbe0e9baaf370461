"""Inference over a list of cuts in duration-sorted batches: little padding, bounded memory.

Every job that runs something frozen over many cuts (feature extraction for probes and
k-means, speaker embeddings, the items of ``speechssl select``) batches the same way: cuts
sorted by duration, cut into batches bounded in count and in padded seconds (the longest cut
of a batch times its size). :func:`run_sorted_batches` collates each batch, calls a function
on it under :func:`torch.inference_mode` and yields the result with the batch's cut indices,
so callers put results back in cut order themselves. It lives in ``data`` because it knows
nothing of models; the upstream-specific part (valid frames of each hidden state) is
:func:`speechssl.evaluation.features.upstream_frames`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch
from lhotse.cut import Cut

from speechssl.data.batching import collate_cuts

__all__ = ["duration_sorted_batches", "run_sorted_batches"]

T = TypeVar("T")


def duration_sorted_batches(
    cuts: Sequence[Cut],
    max_cuts: int,
    max_seconds: float = math.inf,
    longest_first: bool = True,
) -> list[list[int]]:
    """Indices of ``cuts`` sorted by duration, cut into batches.

    A batch closes before a cut that would make it hold more than ``max_cuts`` cuts or more
    than ``max_seconds`` of padded audio (its longest duration x its size); a single cut
    longer than ``max_seconds`` still gets a batch of its own. Ties keep the input order.

    Args:
        cuts: anything with a ``duration``.
        max_cuts: most cuts per batch.
        max_seconds: most padded seconds per batch (default: no bound).
        longest_first: longest cuts first (an out-of-memory shows up on the first batch),
            else shortest first.
    """
    if max_cuts < 1:
        raise ValueError(f"max_cuts must be >= 1, got {max_cuts}")
    order = sorted(range(len(cuts)), key=lambda i: cuts[i].duration, reverse=longest_first)
    out: list[list[int]] = []
    cur: list[int] = []
    longest = 0.0
    for i in order:
        d = cuts[i].duration
        if cur and (len(cur) >= max_cuts or (len(cur) + 1) * max(longest, d) > max_seconds):
            out.append(cur)
            cur, longest = [], 0.0
        cur.append(i)
        longest = max(longest, d)
    if cur:
        out.append(cur)
    return out


def run_sorted_batches(
    fn: Callable[[torch.Tensor, torch.Tensor], T],
    cuts: Sequence[Cut],
    max_cuts: int,
    max_seconds: float = math.inf,
    device: str | torch.device = "cpu",
    longest_first: bool = True,
) -> Iterator[tuple[list[int], T]]:
    """``(indices, fn(audio, lengths))`` for every batch of :func:`duration_sorted_batches`.

    ``audio`` ``[B, N]`` (zero-padded) and ``lengths`` ``[B]`` are on ``device``; ``fn`` runs
    under inference mode, which is left before each yield (the caller's code runs outside it).
    Row ``r`` of the batch is ``cuts[indices[r]]``.
    """
    for idx in duration_sorted_batches(cuts, max_cuts, max_seconds, longest_first):
        with torch.inference_mode():
            batch = collate_cuts([cuts[i] for i in idx], label_fields=[])
            result = fn(batch.audio.to(device), batch.lengths.to(device))
        yield idx, result
