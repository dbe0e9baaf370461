"""``speechssl select``: rank pseudo-labels for a downstream label without training.

Method A (Zaiem et al., Interspeech 2021, arXiv:2104.07388; docs/methods.md): one item per cut; the
speech kernel from its Gaussian-downsampled 40-mel log-mel, the pseudo-label kernel from the item
mean of each frame-level feature of :mod:`speechssl.pseudolabels`, HSIC inside each class of
``--label`` (lower = better). Writes ``selection.json`` (ranked list with interval, p-value and
counts), ``selection.md`` and a bar plot ``selection.png`` into ``--out``::

    speechssl select --cuts cuts.jsonl.gz --label speaker --out runs/select-speaker
    speechssl select --cuts cuts.jsonl.gz --label speaker --out runs/sel-ref \
        --candidates f0,loudness,alpha_ratio --mode reference --groups

Log-mel and MFCC are not ranked by default: the method always adds their reconstruction to
pretraining as baselines (name them in ``--candidates`` to score them anyway). Classes larger
than ``--max-items-per-class`` are subsampled (seeded): the utility costs O(n_c^2) per class
and pseudo-label. Feature extraction and the utility are timed apart in the JSON. Items
come from :mod:`speechssl.selection.items`, the ranking from :mod:`speechssl.selection.ranking`.
Under torchrun the ranks share the feature extraction (the one-process items, bit for bit)
and rank 0 ranks.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from speechssl.config import opt, to_dict
from speechssl.errors import UserError
from speechssl.runs import start_run

if TYPE_CHECKING:
    from lhotse.cut import Cut

# The config imports nothing heavy (a command's --help reads it); the job below imports torch,
# lhotse and the library where it runs.

__all__ = ["SelectConfig", "run_select"]

log = logging.getLogger("speechssl")


@dataclass
class SelectConfig:
    """Rank pseudo-labels for a downstream label by conditional independence (no training).

    Feature extraction on many processes or nodes: `torchrun --nnodes N --node-rank R
    --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint HEAD:29500 -m speechssl.cli select
    ...` (OUT on storage every node sees); rank 0 ranks.
    """

    cuts: Path = opt(help="CutSet manifest; one item per cut")
    label: str = opt(help="downstream label field whose classes condition the test, e.g. speaker")
    out: Path = opt(help="folder for selection.json, selection.md, selection.png")
    candidates: list[str] | None = opt(
        None, "pseudo-labels to rank (default: every registered one but the mfcc/logmel baselines)"
    )
    mode: Literal["standard", "reference"] = opt(
        "standard",
        "standard: centred HSIC, z-scored features, median bandwidth; "
        "reference: the published code's conventions (reproduces its rankings)",
    )
    averaging: Literal["plain", "weighted"] = opt(
        "plain", "average over classes: plain mean, or weighted by class size"
    )
    permutations: int = opt(200, "permutations of the conditional-independence test (0: off)", ge=0)
    interval: Literal["jackknife", "bootstrap", "none"] = opt(
        "jackknife",
        "95% interval: delete-one jackknife within classes, or the within-class bootstrap "
        "(wider: HSIC is near-degenerate, see selection.hsic)",
    )
    bootstrap: int = opt(200, "resamples per class for --interval bootstrap", ge=1)
    seed: int = opt(0, "seed of the per-class subsample, permutations, bootstrap and groups", ge=0)
    max_items_per_class: int | None = opt(
        300, "seeded subsample of larger classes (cost grows with the square of class size)", ge=4
    )
    frames: int = opt(
        30, "log-mel frames after Gaussian downsampling: 30 utterances, 10 segments", ge=1
    )
    groups: bool = opt(False, "also fit softmax and sparsemax weights over the candidates")
    batch_seconds: float = opt(60.0, "padded audio per feature-extraction batch, seconds", gt=0)


def _check(cfg: SelectConfig) -> None:
    if cfg.permutations < 0 or cfg.bootstrap < 0:
        raise UserError("--permutations and --bootstrap must be >= 0")
    if cfg.interval == "bootstrap" and cfg.bootstrap < 2:
        raise UserError("--interval bootstrap needs --bootstrap >= 2")
    if cfg.max_items_per_class is not None and cfg.max_items_per_class < 4:
        raise UserError("--max-items-per-class must be at least 4 (smaller classes are skipped)")
    if cfg.frames < 1:
        raise UserError("--frames must be >= 1")
    if cfg.batch_seconds <= 0:
        raise UserError("--batch-seconds must be positive")


def _labels(cuts: Sequence[Cut], label: str) -> list[str]:
    from speechssl.data.batching import LabelError, get_label
    from speechssl.data.manifest import labels_of

    out = []
    for cut in cuts:
        try:
            out.append(str(get_label(cut, label)))
        except LabelError:
            known = ", ".join(sorted(labels_of(cut))) or "none"
            raise UserError(
                f"cut {cut.id!r} has no label {label!r} (its label fields: {known})"
            ) from None
    return out


def _check_class_sizes(labels: list[str], label: str) -> None:
    """The test conditions on classes of at least MIN_CLASS_SIZE items: with none, every
    candidate would rank as n/a, so say so instead."""
    from speechssl.selection.hsic import MIN_CLASS_SIZE

    sizes: dict[str, int] = {}
    for y in labels:
        sizes[y] = sizes.get(y, 0) + 1
    if not sizes or max(sizes.values()) < MIN_CLASS_SIZE:
        largest = max(sizes.values(), default=0)
        raise UserError(
            f"no {label!r} class has {MIN_CLASS_SIZE} or more cuts, the least the test needs "
            f"({len(labels)} cuts in {len(sizes)} classes, the largest {largest})"
        )


def _items_on_ranks(cuts, labels, candidates, backend, cfg: SelectConfig, dinfo, run_dir: Path):
    """Under torchrun: the items of :func:`~speechssl.selection.items.extract_items`, each
    rank computing its share of the batches; on rank 0 the one-process items (same rows, same
    order), elsewhere ``None``."""
    import numpy as np
    import torch

    from speechssl.data.sorted_batches import duration_sorted_batches
    from speechssl.selection.items import MAX_ITEMS_PER_BATCH, Items, extract_items
    from speechssl.training.sharded import run_sharded, wait_merged

    label_of = {c.id: y for c, y in zip(cuts, labels, strict=True)}

    def compute(batch):
        try:
            it = extract_items(batch, [label_of[c.id] for c in batch], candidates, backend,
                               frames=cfg.frames, mode=cfg.mode, batch_seconds=cfg.batch_seconds,
                               progress=False)  # fmt: skip
        except UserError:  # every cut of the batch too short for one frame
            it = None
        row = {c: r for r, c in enumerate(it.ids)} if it is not None else {}
        spent = it.downsample_s if it is not None else 0.0
        for j, c in enumerate(batch):
            r = row.get(c.id)
            arrays = [np.zeros(0, np.float32)] + [np.zeros(0, np.float64)] * len(candidates)
            if r is not None:  # flat rows: a too-short cut is an empty one
                arrays = [it.speech[r].numpy().ravel()]
                arrays += [it.values[n][r].numpy().ravel() for n in candidates]
            yield j, [*arrays, np.array([spent if j == 0 else 0.0])]

    parts = run_dir / "parts"
    key = f"select|{cfg.mode}|{cfg.frames}|{cfg.batch_seconds!r}|{','.join(candidates)}"
    shards = run_sharded(
        cuts, compute, parts, key, dinfo, desc="select features",
        batch_size=MAX_ITEMS_PER_BATCH, max_batch_seconds=cfg.batch_seconds, longest_first=False,
    )  # fmt: skip
    if shards is None:
        wait_merged(parts)
        return None
    got = dict(iter(shards))
    order = duration_sorted_batches(cuts, MAX_ITEMS_PER_BATCH, cfg.batch_seconds, False)
    ids = [cuts[i].id for b in order for i in b if len(got[cuts[i].id][0])]
    if not ids:
        raise UserError("no cut is long enough for one 25 ms frame")
    items = Items(
        ids=ids,
        labels=[label_of[c] for c in ids],
        speech=torch.from_numpy(np.stack([got[c][0] for c in ids])),
        values={
            n: torch.from_numpy(np.stack([got[c][1 + k] for c in ids]))
            for k, n in enumerate(candidates)
        },
        voiced_only={n: backend.voiced_only(n) for n in candidates},
        too_short=len(cuts) - len(ids),
        downsample_s=float(sum(a[-1][0] for a in got.values())),
    )
    shards.remove()
    return items


def run_select(cfg: SelectConfig) -> dict:
    """Rank the candidates of ``cfg``; writes and returns what goes into ``selection.json``."""
    from speechssl.data.manifest import load_cuts
    from speechssl.report.selection import plot_selection, render_selection
    from speechssl.selection.items import (
        BASELINES,
        extract_items,
        pseudolabel_backend,
        resolve_candidates,
        subsample_per_class,
    )
    from speechssl.selection.ranking import rank_items
    from speechssl.training.distributed import init_distributed
    from speechssl.training.sharded import wait_complete

    _check(cfg)
    backend = pseudolabel_backend()
    candidates = resolve_candidates(cfg.candidates, backend.names)
    cuts = list(load_cuts(cfg.cuts))
    labels = _labels(cuts, cfg.label)
    _check_class_sizes(labels, cfg.label)
    run_dir = start_run(cfg.out, "select", cfg, seed=cfg.seed)
    keep = subsample_per_class(labels, cfg.max_items_per_class, cfg.seed)
    t0 = time.perf_counter()
    started = time.time()
    dinfo = init_distributed()
    kept_cuts, kept_labels = [cuts[i] for i in keep], [labels[i] for i in keep]
    if dinfo.enabled:
        items = _items_on_ranks(kept_cuts, kept_labels, candidates, backend, cfg, dinfo, run_dir)
        if items is None:  # not rank 0: rank 0 ranks and writes
            wait_complete(run_dir / "selection.json", newer_than=started)
            return json.loads((run_dir / "selection.json").read_text())
    else:
        items = extract_items(
            kept_cuts,
            kept_labels,
            candidates,
            backend,
            frames=cfg.frames,
            mode=cfg.mode,
            batch_seconds=cfg.batch_seconds,
        )
    extract_s = time.perf_counter() - t0
    ranked = rank_items(
        items, mode=cfg.mode, averaging=cfg.averaging, permutations=cfg.permutations,
        interval=cfg.interval, bootstrap=cfg.bootstrap, seed=cfg.seed, groups=cfg.groups,
    )  # fmt: skip
    result: dict[str, Any] = {
        "label": cfg.label,
        "cuts": str(cfg.cuts),
        "mode": cfg.mode,
        "averaging": cfg.averaging,
        "permutations": cfg.permutations,
        "interval": cfg.interval,
        "bootstrap": cfg.bootstrap if cfg.interval == "bootstrap" else 0,
        "seed": cfg.seed,
        "counts": {
            "cuts": len(cuts),
            "subsampled": len(keep),
            "items": len(items.ids),
            "too_short": items.too_short,
            "classes": len(set(labels)),
        },
        "baselines": list(BASELINES),
        "ranking": ranked["ranking"],
    }
    if "groups" in ranked:
        result["groups"] = ranked["groups"]
    result["timings"] = {
        "extract_s": round(extract_s, 3),
        "downsample_s": round(items.downsample_s, 3),
    } | ranked["timings"]
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    result["config"] = to_dict(cfg)
    log.info(
        "select: %d items, extraction %.1f s, utility %.1f s",
        len(items.ids),
        extract_s,
        ranked["timings"]["utility_s"],
    )
    (run_dir / "selection.json").write_text(json.dumps(result, indent=2) + "\n")
    (run_dir / "selection.md").write_text(render_selection(result) + "\n")
    plot_selection(result, run_dir / "selection.png")
    return result
