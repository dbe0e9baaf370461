"""Pseudo-labels as pretraining targets: 100 -> 50 frames/s, standardised, per batch.

The masked-prediction encoder runs at 50 frames/s; pseudo-labels come at 100. Two
consecutive frames are averaged (frame ``t`` of the encoder covers log-mel frames ``2t`` and
``2t + 1``) and the result is trimmed or zero-padded to the encoder's frame count (they differ
by at most one frame at the end).

Features have wildly different units (Hz, dB, ratios), so each target dimension is
standardised with a mean and std measured once on a seeded sample of the training cuts
(:func:`fit_stats`); the statistics travel in the checkpoint's spec, so a resumed or
reloaded run uses the same ones. Voiced-only features (F0, HNR, jitter, shimmer) are
measured on voiced frames and are 0 (their mean) on unvoiced ones after standardisation.

Which targets, with which weights: :func:`pretext_weights` follows method A (Zaiem et al., JSTSP
2022), where the pretraining loss is ``sum_k lambda_k * loss_k + mel loss + MFCC loss``: the lambdas
of a ``speechssl select`` result, plus log-mel and MFCC reconstruction at weight 1 (the baselines),
plus any target named by hand.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from speechssl.errors import UserError
from speechssl.pseudolabels.registry import extract, get

__all__ = [
    "BASELINES",
    "PretextTargets",
    "fit_stats",
    "parse_weights",
    "pretext_weights",
    "to_50fps",
    "weights_from_selection",
]

# Method A (Zaiem et al., JSTSP 2022): MSE for the mel / MFCC reconstruction, L1 for the
# signal features.
MSE_TARGETS = ("logmel", "mfcc")
# Method A: log-mel and MFCC reconstruction are always added as baseline pretext tasks.
BASELINES = ("logmel", "mfcc")


def to_50fps(values: torch.Tensor, frames: int) -> torch.Tensor:
    """``[B, T, d]`` at 100 fps -> ``[B, frames, d]``: mean of frame pairs, trimmed/padded."""
    b, t, d = values.shape
    pairs = t // 2
    out = values[:, : 2 * pairs].reshape(b, pairs, 2, d).mean(2)
    if t % 2:  # a last unpaired frame stands alone
        out = torch.cat([out, values[:, -1:]], 1)
    if out.shape[1] >= frames:
        return out[:, :frames]
    return torch.cat([out, out.new_zeros(b, frames - out.shape[1], d)], 1)


def fit_stats(
    cuts: Sequence, names: Sequence[str], max_cuts: int = 200, seed: int = 0, batch: int = 16
) -> dict[str, dict[str, list[float]]]:
    """Mean and std per dimension of each pseudo-label over a seeded sample of ``cuts``."""
    from speechssl.data.batching import collate_cuts

    cuts = list(cuts)
    if not cuts:
        raise UserError("no cuts to measure pseudo-label statistics on")
    pick = np.random.default_rng(seed).permutation(len(cuts))[:max_cuts]
    sums: dict[str, tuple[torch.Tensor, torch.Tensor, int]] = {}
    for i in range(0, len(pick), batch):
        b = collate_cuts([cuts[j] for j in pick[i : i + batch]])
        pl = extract(list(names), b.audio, b.lengths)
        for name in names:
            keep = pl.voiced if get(name).voiced_only else pl.mask
            x = pl.values[name][keep].double()
            s, s2, n = sums.get(name, (0.0, 0.0, 0))
            sums[name] = (s + x.sum(0), s2 + (x * x).sum(0), n + x.shape[0])
    stats = {}
    for name, (s, s2, n) in sums.items():
        if n < 2:
            raise UserError(
                f"pseudo-label {name!r}: fewer than 2 usable frames in {len(pick)} cuts "
                "(all unvoiced or too short?)"
            )
        mean = s / n
        std = (s2 / n - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
        stats[name] = {"mean": mean.tolist(), "std": std.tolist()}
    return stats


class PretextTargets:
    """Callable ``(audio, lengths, frames) -> {name: [B, F, d]}`` standardised 50 fps targets."""

    def __init__(
        self, stats: dict[str, dict[str, list[float]]], weights: dict[str, float] | None = None
    ):
        self.stats = stats
        self.names = list(stats)
        self.weights = dict(weights) if weights is not None else dict.fromkeys(self.names, 1.0)
        self._mean = {n: torch.tensor(s["mean"], dtype=torch.float32) for n, s in stats.items()}
        self._std = {n: torch.tensor(s["std"], dtype=torch.float32) for n, s in stats.items()}

    def dims(self) -> dict[str, int]:
        return {n: len(s["mean"]) for n, s in self.stats.items()}

    def losses(self) -> dict[str, str]:
        return {n: "mse" if n in MSE_TARGETS else "l1" for n in self.names}

    def __call__(
        self, audio: torch.Tensor, lengths: torch.Tensor, frames: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        pl = extract(self.names, audio, lengths)
        f = int(frames.max()) if len(frames) else 0
        out = {}
        for name in self.names:
            keep = pl.voiced if get(name).voiced_only else pl.mask
            z = (pl.values[name] - self._mean[name]) / self._std[name]
            z = z * keep[..., None]
            out[name] = to_50fps(z, f)
        return out


def weights_from_selection(path: str | Path, top: int = 3) -> dict[str, float]:
    """Pretext weights from a ``speechssl select`` result: its sparsemax group, else its
    softmax group, else the ``top`` best single pseudo-labels (lowest utility) at weight 1."""
    path = Path(path)
    if path.is_dir():
        path = path / "selection.json"
    if not path.is_file():
        raise UserError(f"{path} not found: run `speechssl select` first")
    try:
        sel = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    groups = sel.get("groups") or {}
    for kind in ("sparsemax", "softmax"):
        chosen = (groups.get(kind) or {}).get("selected")
        if chosen:
            return {str(n): float(w) for n, w in chosen.items()}
    ranked = [r for r in sel.get("ranking", []) if r.get("utility") is not None]
    if not ranked:
        raise UserError(f"{path} holds no ranked pseudo-label")
    return {str(r["name"]): 1.0 for r in ranked[:top]}


def parse_weights(entries: Sequence[str]) -> dict[str, float]:
    """``name`` or ``name=weight`` entries (each may hold several, comma-separated) as a dict;
    a bare name weighs 1."""
    out = {}
    for e in (part.strip() for entry in entries for part in entry.split(",")):
        if not e:
            continue
        name, sep, w = e.partition("=")
        try:
            out[name.strip()] = float(w) if sep else 1.0
        except ValueError:
            raise UserError(f"pretext entry {e!r} is not name=weight") from None
    return out


def pretext_weights(
    entries: Sequence[str] = (),
    selection: str | Path | None = None,
    baselines: bool | None = None,
) -> dict[str, float]:
    """The pretext targets and weights of a pretraining run (method A, docs/methods.md).

    Args:
        entries: targets named by hand (:func:`parse_weights`); they add to the selection's
            and override its weight for a name both give (weight 0 drops a target).
        selection: a ``speechssl select`` result (:func:`weights_from_selection`).
        baselines: add log-mel and MFCC reconstruction at weight 1 unless ``entries`` or the
            selection already weigh them; ``None``: only with a ``selection``.

    Returns:
        name -> weight, non-zero weights only, in order: selection, entries, baselines.
    """
    weights = {} if selection is None else weights_from_selection(selection)
    weights.update(parse_weights(entries))
    if baselines is None:
        baselines = selection is not None
    if baselines:
        for name in BASELINES:
            weights.setdefault(name, 1.0)
    if any(w < 0 for w in weights.values()):
        raise UserError("pretext weights must be >= 0")
    for name in weights:
        get(name)  # unknown names: one line listing the known ones
    return {n: w for n, w in weights.items() if w}
