"""Splits by speaker: no speaker is ever in two splits, so tests measure generalisation."""

from __future__ import annotations

from collections import Counter

import numpy as np
from lhotse import CutSet

from speechssl.data.manifest import labels_of
from speechssl.errors import UserError


def split_by_speaker(
    cuts: CutSet, ratios: dict[str, float], seed: int = 0, field: str = "speaker"
) -> dict[str, CutSet]:
    """Assign whole speakers to splits so that each split gets about its share of utterances.

    Speakers are shuffled with ``seed`` and dealt out greedily: each goes to the split that is
    furthest below its target share. Every split with a positive ratio gets at least one
    speaker, so there must be at least as many speakers as such splits.

    Args:
        cuts: the cuts; each must carry ``field`` in its labels.
        ratios: split name -> share (normalised to sum to 1), e.g. {"train": .8, "test": .2}.
        seed: shuffling seed; the same seed gives the same splits.
        field: the label that identifies a speaker.
    """
    if not ratios or any(r < 0 for r in ratios.values()) or sum(ratios.values()) <= 0:
        raise UserError(
            "split ratios must be non-negative and not all zero, e.g. train=0.8,test=0.2"
        )
    missing = [c.id for c in cuts if not labels_of(c).get(field)]
    if missing:
        raise UserError(
            f"{len(missing)} cuts have no '{field}' label (first: {missing[0]}); cannot split by it"
        )
    per_speaker = Counter(labels_of(c)[field] for c in cuts)
    names = [n for n, r in ratios.items() if r > 0]
    if len(per_speaker) < len(names):
        raise UserError(
            f"{len(per_speaker)} speakers cannot fill {len(names)} splits ({', '.join(names)})"
        )
    total_ratio = sum(ratios[n] for n in names)
    target = {n: ratios[n] / total_ratio * len(cuts) for n in names}
    rng = np.random.default_rng(seed)
    speakers = sorted(per_speaker)
    rng.shuffle(speakers)
    assigned: dict[str, str] = {}
    got = dict.fromkeys(names, 0)
    # First one speaker per split, so that none is empty; then greedy on the deficit.
    for n, spk in zip(names, speakers, strict=False):
        assigned[spk] = n
        got[n] += per_speaker[spk]
    for spk in speakers[len(names) :]:
        n = max(names, key=lambda s: (target[s] - got[s]) / max(target[s], 1e-9))
        assigned[spk] = n
        got[n] += per_speaker[spk]
    out = {
        n: cuts.filter(lambda c, n=n: assigned[labels_of(c)[field]] == n).to_eager() for n in names
    }
    for n, r in ratios.items():
        if r == 0:
            out[n] = CutSet.from_cuts([])
    return out


def parse_ratios(text: str) -> dict[str, float]:
    """``"train=0.8,dev=0.1,test=0.1"`` -> {"train": 0.8, ...}, with a clear error otherwise."""
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise UserError(
                f"bad split ratio {part!r}; expected NAME=SHARE, e.g. train=0.8"
            ) from None
        if not name.strip():
            raise UserError(f"bad split ratio {part!r}; the split needs a name")
    return out
