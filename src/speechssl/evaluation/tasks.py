"""Probing tasks: a CutSet, the label to predict, the kind of probe and how to split.

Presets cover the project's real speech in ``../shared/data`` (folder relative to the
repository root; ``--data-root`` or ``SPEECHSSL_DATA`` move it) and a synthetic corpus made
by ``speechssl data synth`` (given with ``--cuts``). Custom tasks take any CutSet, a label field
and a split rule. Splits are always seeded, so two upstreams probed on a task see the same splits.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lhotse import CutSet

from speechssl.data.batching import LabelError, get_label
from speechssl.data.corpora import folder_rows
from speechssl.data.manifest import build_cutset, load_cuts, save_cuts
from speechssl.data.split import split_by_speaker
from speechssl.errors import UserError
from speechssl.evaluation.task_presets import PRESETS, Kind, SplitRule

__all__ = ["Task", "build_task", "default_data_root", "split_cuts"]

RATIOS = {"train": 0.7, "dev": 0.1, "test": 0.2}


@dataclass
class Task:
    """What a probe runs on: named splits (``train``/``dev``/``test``; ``test`` alone for SV)."""

    name: str
    kind: Kind
    label: str
    splits: dict[str, CutSet] = field(default_factory=dict)

    def all_cuts(self) -> list:
        """Every cut once, sorted by id: tasks over the same corpus share one feature cache."""
        seen = {c.id: c for split in self.splits.values() for c in split}
        return [seen[k] for k in sorted(seen)]


def default_data_root() -> Path:
    """``$SPEECHSSL_DATA``, else ``<repository>/../shared/data``."""
    env = os.environ.get("SPEECHSSL_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def preset_cuts(folder: str, data_root: Path, cache_dir: Path | None) -> CutSet:
    """The CutSet of one shared-data folder, prepared once by the folder recipe and cached."""
    cached = Path(cache_dir) / "cutsets" / f"{folder}.jsonl.gz" if cache_dir else None
    if cached is not None and cached.is_file():
        return load_cuts(cached)
    src = Path(data_root) / folder
    if not (src / "labels.csv").is_file():
        raise UserError(
            f"{src / 'labels.csv'} not found; point --data-root (or SPEECHSSL_DATA) at the shared data folder"
        )
    cuts, _ = build_cutset(folder_rows(src, src / "labels.csv"), progress=False)
    if cached is not None:
        save_cuts(cuts, cached)
    return cuts


def _check_label(cuts: CutSet, label: str, kind: Kind) -> None:
    first = next(iter(cuts))
    if kind == "frame":
        if not (first.custom and label in first.custom):
            have = ", ".join(sorted((first.custom or {}).keys())) or "none"
            raise UserError(
                f"frame task: cut {first.id} has no '{label}' alignment (custom fields: {have})"
            )
        return
    for c in cuts:
        try:
            value = get_label(c, label)
        except LabelError:
            have = (
                ", ".join(sorted((c.supervisions[0].custom or {}) if c.supervisions else {}))
                or "none"
            )
            raise UserError(f"cut {c.id} has no label '{label}' (labels: {have})") from None
        if kind == "ctc" and not str(value).split():
            raise UserError(f"ctc task: cut {c.id} has an empty '{label}' token sequence")


def _within_groups(cuts: list, group_of, ratios: dict[str, float], seed: int) -> dict[str, list]:
    """Shuffle each group's cuts and deal them to splits by ``ratios``.

    The first and last splits (train, test) get at least one cut of every group that has two,
    so that small groups are still tested and never unseen in training.
    """
    groups: dict[str, list] = defaultdict(list)
    for c in cuts:
        groups[group_of(c)].append(c)
    rng = np.random.default_rng(seed)
    names = list(ratios)
    total = sum(ratios.values())
    out: dict[str, list] = {n: [] for n in names}
    for g in sorted(groups):
        items = groups[g]
        n = len(items)
        counts = np.diff(np.round(np.cumsum([0] + [ratios[k] / total for k in names]) * n)).astype(
            int
        )
        if n >= 2 and counts[-1] == 0:
            counts[-1] = 1
            counts[int(np.argmax(counts[:-1]))] -= 1
        if counts[0] == 0:
            counts[0] = 1
            counts[int(np.argmax(counts[1:])) + 1] -= 1
        order = rng.permutation(n)
        start = 0
        for k, m in zip(names, counts, strict=True):
            out[k].extend(items[i] for i in order[start : start + m])
            start += m
    return out


def split_cuts(cuts: CutSet, label: str, rule: SplitRule, seed: int = 0) -> dict[str, CutSet]:
    """Train/dev/test by ``rule``: whole speakers, whole voice variants (the synthetic
    corpus' ``variant`` label), utterances within speakers, an existing ``split`` label (dev
    carved from train within each class), or everything as test."""
    cl = list(cuts)
    if rule == "all":
        return {"test": CutSet.from_cuts(cl)}
    if rule == "variant" and not all(_has(c, "variant") for c in cl):
        raise UserError(
            "splitting by variant needs a 'variant' label on every cut; a corpus made by an "
            "older 'speechssl data synth' has none: synthesise it again"
        )
    if rule in ("speaker", "variant"):
        spk = {get_label(c, rule) for c in cl if _has(c, rule)}
        if len(spk) < 3:
            raise UserError(
                f"splitting by {rule} needs at least 3 {rule}s (train, dev, test); found {len(spk)}"
            )
        return split_by_speaker(cuts, RATIOS, seed=seed, field=rule)
    if rule == "utterance":
        key = "speaker" if all(_has(c, "speaker") for c in cl) else label
        parts = _within_groups(cl, lambda c: str(get_label(c, key)), RATIOS, seed)
    elif rule == "split":
        if not all(_has(c, "split") for c in cl):
            raise UserError("--split-by split needs a 'split' label on every cut (train/dev/test)")
        by = defaultdict(list)
        for c in cl:
            by[str(get_label(c, "split"))].append(c)
        if "test" not in by or "train" not in by:
            raise UserError(
                f"the 'split' label needs 'train' and 'test' values; found {', '.join(sorted(by))}"
            )
        parts = {"train": by["train"], "dev": by.get("dev", []), "test": by["test"]}
        if not parts["dev"]:
            carved = _within_groups(
                parts["train"], lambda c: str(get_label(c, label)), {"train": 0.9, "dev": 0.1}, seed
            )
            parts["train"], parts["dev"] = carved["train"], carved["dev"]
    else:
        raise UserError(
            f"unknown split rule {rule!r}; use speaker, variant, utterance, split or all"
        )
    return {n: CutSet.from_cuts(v) for n, v in parts.items()}


def _has(cut, label: str) -> bool:
    try:
        get_label(cut, label)
        return True
    except LabelError:
        return False


def build_task(
    name: str | None = None,
    *,
    cuts: str | Path | None = None,
    label: str | None = None,
    kind: Kind | None = None,
    split_by: SplitRule | None = None,
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    seed: int = 0,
) -> Task:
    """A preset by ``name`` (``cuts`` needed for ``synth-*``), or a custom task from ``cuts``,
    ``label``, ``kind`` (default utterance) and ``split_by``; a given label or split rule
    overrides a preset's, a kind other than the preset's is refused (a preset fixes its kind)."""
    if name is not None:
        if name not in PRESETS:
            listing = "\n".join(f"  {k:16s} {p.about}" for k, p in PRESETS.items())
            raise UserError(f"unknown task {name!r}; presets:\n{listing}")
        p = PRESETS[name]
        if kind is not None and kind != p.kind:
            raise UserError(
                f"task {name} is of kind {p.kind}; --kind {kind} needs a custom task "
                "(--cuts with --label)"
            )
        if p.folder == "synth":
            if cuts is None:
                raise UserError(
                    f"task {name} needs --cuts: the cuts.jsonl.gz of a corpus made by "
                    "'speechssl data synth'"
                )
            cutset = load_cuts(cuts)
        else:
            cutset = preset_cuts(
                p.folder, Path(data_root) if data_root else default_data_root(), cache_dir
            )
        label, kind, split_by = label or p.label, p.kind, split_by or p.split
    else:
        if cuts is None or label is None:
            raise UserError(
                f"give --task (one of {', '.join(PRESETS)}) or --cuts and --label for a custom task"
            )
        cutset = load_cuts(cuts)
        kind = kind or "utterance"
        split_by = split_by or ("all" if kind == "verification" else "speaker")
        name = f"{Path(cuts).name.split('.')[0]}-{label}"
    _check_label(cutset, label, kind)
    splits = split_cuts(cutset, label, split_by, seed)
    empty = [n for n, s in splits.items() if len(s) == 0 and n != "dev"]
    if empty:
        raise UserError(
            f"task {name}: split {', '.join(empty)} is empty; too few utterances or speakers"
        )
    return Task(name, kind, label, splits)
