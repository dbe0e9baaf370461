"""The items of method A: one per cut, its class, downsampled log-mel and pseudo-label means.

``speechssl select`` turns a CutSet into :class:`Items` with :func:`extract_items` (cuts in
duration-sorted batches: 40-mel log-mel Gaussian-downsampled in time, and the item mean of
every candidate pseudo-label), then ranks them with
:func:`~speechssl.selection.ranking.rank_items`. The pseudo-label extractors come in
through a :class:`PseudoLabelBackend`, so tests can pass a small stand-in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from lhotse.cut import Cut

from speechssl.audio.features import LogMel
from speechssl.data.sorted_batches import run_sorted_batches
from speechssl.errors import UserError
from speechssl.progress import Progress
from speechssl.selection.hsic import gaussian_downsample, item_means

__all__ = [
    "BASELINES",
    "N_MELS",
    "Items",
    "PseudoLabelBackend",
    "extract_items",
    "pseudolabel_backend",
    "resolve_candidates",
    "subsample_per_class",
]

BASELINES = ("mfcc", "logmel")  # always added to pretraining as reconstruction targets
N_MELS = 40
MAX_ITEMS_PER_BATCH = 64


@dataclass
class PseudoLabelBackend:
    """What item extraction needs from :mod:`speechssl.pseudolabels` (tests pass a stand-in)."""

    names: tuple[str, ...]
    extract: Callable[..., Any]  # (names, wave [B, N], lengths [B]) -> PseudoLabels
    voiced_only: Callable[[str], bool]


def pseudolabel_backend() -> PseudoLabelBackend:
    """The registered pseudo-labels of :mod:`speechssl.pseudolabels` (imported when needed)."""
    from speechssl import pseudolabels

    return PseudoLabelBackend(
        tuple(pseudolabels.NAMES),
        pseudolabels.extract,
        lambda name: pseudolabels.get(name).voiced_only,
    )


@dataclass
class Items:
    """One row per usable cut: its class, downsampled log-mel and pseudo-label item means."""

    ids: list[str]
    labels: list[str]
    speech: torch.Tensor  # [N, frames * 40] float32
    values: dict[str, torch.Tensor]  # name -> [N, dim] float64, NaN rows = no usable frame
    voiced_only: dict[str, bool] = field(default_factory=dict)
    too_short: int = 0  # cuts shorter than one 25 ms frame
    downsample_s: float = 0.0


def resolve_candidates(requested: Sequence[str] | None, known: Sequence[str]) -> list[str]:
    """The candidate list, checked against the registry (unknown names -> UserError).

    By default every registered pseudo-label but the :data:`BASELINES`.
    """
    if not requested:
        names = [n for n in known if n not in BASELINES]
        if not names:
            raise UserError("no pseudo-labels are registered")
        return names
    unknown = [n for n in requested if n not in known]
    if unknown:
        raise UserError(f"unknown pseudo-label {', '.join(unknown)} (known: {', '.join(known)})")
    return list(dict.fromkeys(requested))


def subsample_per_class(labels: Sequence[str], max_items: int | None, seed: int) -> list[int]:
    """Indices kept: every item, or a seeded subsample of ``max_items`` per larger class."""
    by_class: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    g = torch.Generator().manual_seed(seed)
    keep = []
    for y in sorted(by_class):
        idx = by_class[y]
        if max_items and len(idx) > max_items:
            pick = torch.randperm(len(idx), generator=g)[:max_items].tolist()
            idx = [idx[i] for i in sorted(pick)]
        keep += idx
    return sorted(keep)


def extract_items(
    cuts: Sequence[Cut],
    labels: Sequence[str],
    candidates: Sequence[str],
    backend: PseudoLabelBackend,
    frames: int = 30,
    mode: str = "standard",
    batch_seconds: float = 60.0,
    progress: bool = True,
) -> Items:
    """Log-mel (downsampled) and pseudo-label item means of every cut, in batches.

    Cuts too short for one frame are dropped and counted. In reference mode voiced-only
    features are averaged with unvoiced frames as 0 (see :func:`item_means`). Batches are
    shortest first, at most 64 cuts and ``batch_seconds`` of padded audio.
    """
    logmel = LogMel(n_mels=N_MELS)
    voiced_only = {n: backend.voiced_only(n) for n in candidates}
    timing = {"downsample_s": 0.0}

    def item_rows(audio: torch.Tensor, lengths: torch.Tensor):
        feats, _, counts = logmel(audio, lengths)
        ok = counts > 0
        t0 = time.perf_counter()
        down = gaussian_downsample(feats, counts, n_out=frames).flatten(1)
        timing["downsample_s"] += time.perf_counter() - t0
        pl = backend.extract(list(candidates), audio, lengths)
        values = {}
        for name in candidates:
            v = pl.values[name]
            v = v[..., None] if v.dim() == 2 else v
            t = min(v.shape[1], pl.mask.shape[1])
            z = item_means(
                v[:, :t],
                pl.mask[:, :t],
                pl.voiced[:, :t],
                voiced_only=voiced_only[name],
                zero_unvoiced=mode == "reference",
            )
            values[name] = z[ok]
        return ok, down[ok].float(), values

    ids, ys, speech = [], [], []
    values: dict[str, list[torch.Tensor]] = {n: [] for n in candidates}
    too_short = 0
    bar = Progress(len(cuts), "select features", "cut", enabled=progress)
    batches = run_sorted_batches(
        item_rows, cuts, MAX_ITEMS_PER_BATCH, batch_seconds, longest_first=False
    )
    for batch_idx, (ok, down, batch_values) in batches:
        too_short += int((~ok).sum())
        for name in candidates:
            values[name].append(batch_values[name])
        speech.append(down)
        for j, i in enumerate(batch_idx):
            if ok[j]:
                ids.append(cuts[i].id)
                ys.append(labels[i])
        bar.update(len(batch_idx))
    bar.close()
    if not ids:
        raise UserError("no cut is long enough for one 25 ms frame")
    return Items(
        ids=ids,
        labels=ys,
        speech=torch.cat(speech),
        values={n: torch.cat(v) for n, v in values.items()},
        voiced_only=voiced_only,
        too_short=too_short,
        downsample_s=timing["downsample_s"],
    )
