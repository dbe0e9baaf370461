"""``speechssl assess``: label-free indicators of checkpoints on a fixed unlabelled pool.

    speechssl assess --upstream runs/mt4ssl-tiny --cuts pool.jsonl.gz --hours 1 --out runs/assess

A run folder stands for all its checkpoints, so the table follows training step by step.
Writes ``indicators.jsonl`` (one row per checkpoint x layer), ``report.md`` with the table,
and one plot per indicator against step (a line per layer) and against layer (a line per
checkpoint).

Under torchrun (one node or several), the ranks split each checkpoint's feature extraction
(:func:`speechssl.training.sharded.run_sharded`) and rank 0 computes the indicators.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from speechssl.config import opt, to_dict
from speechssl.indicators.indicator_config import IndicatorConfig
from speechssl.progress import Progress
from speechssl.runs import probe_cache_dir, start_run

# The config imports nothing heavy (a command's --help reads it); the job below imports torch,
# lhotse and the library where it runs.

__all__ = ["AssessConfig", "run_assess"]

log = logging.getLogger("speechssl")


@dataclass
class AssessConfig:
    """Label-free indicators of one or more upstreams on a fixed pool of unlabelled audio.

    Feature extraction on many processes or nodes: `torchrun --nnodes N --node-rank R
    --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint HEAD:29500 -m speechssl.cli assess
    ...` (the cache folder on storage every node sees).
    """

    upstream: list[str] = opt(
        help="checkpoint | run folder (all its checkpoints) | HF folder | fbank | mfcc | tiny ..."
    )
    cuts: list[Path] = opt(help="CutSet manifest(s) of unlabelled audio to draw the pool from")
    out: Path = opt(help="run folder for indicators.jsonl, report.md and plots")
    hours: float = opt(1.0, "audio in the pool (a seeded subset of the cuts)", gt=0)
    seed: int = opt(
        0, "seed of the pool (--indicators.seed seeds the k-means and silhouette samples)", ge=0
    )
    layers: list[int] | None = opt(None, "layers to assess (hidden-state indices); none = all")
    indicators: IndicatorConfig = opt(factory=IndicatorConfig, help="indicator settings")
    cache_dir: Path = opt(factory=lambda: probe_cache_dir(), help="feature cache")
    device: str = opt("cpu", "device for feature extraction")


def _settings(cfg: AssessConfig) -> dict:
    """What makes two assess runs' rows comparable (everything but the upstream list)."""
    d = to_dict(cfg)
    return {k: d[k] for k in ("cuts", "hours", "seed", "layers", "indicators")}


def run_assess(cfg: AssessConfig) -> list[dict]:
    """Assess every upstream of ``cfg``; returns the rows written to ``indicators.jsonl``.

    Resumable: when ``out`` already holds rows made with the same settings (pool, seed,
    layers, indicators), checkpoints assessed there are not assessed again, so a killed run
    or a run given more checkpoints later only does what is missing.
    """
    from speechssl.data.manifest import load_cut_sets
    from speechssl.evaluation.features import extract_features
    from speechssl.indicators.assess import assess_checkpoint, expand_upstreams, select_pool
    from speechssl.indicators.rows import checkpoint_key, read_indicator_rows, row_key
    from speechssl.models.registry import load_upstream, upstream_id
    from speechssl.report.indicators import write_indicator_report
    from speechssl.training.distributed import all_gather_objects, init_distributed
    from speechssl.training.sharded import wait_complete

    done: dict[str, list[dict]] = {}
    old = Path(cfg.out) / "indicators.jsonl"
    settings = Path(cfg.out) / "settings.json"
    if old.is_file() and settings.is_file():
        if json.loads(settings.read_text()) == json.loads(json.dumps(_settings(cfg), default=str)):
            for r in read_indicator_rows(old):
                done.setdefault(row_key(r), []).append(r)  # however the path was spelt
    started = time.time()
    run_dir = start_run(cfg.out, "assess", cfg, seed=cfg.seed)
    checkpoints = expand_upstreams(cfg.upstream)
    pool = select_pool(list(load_cut_sets(cfg.cuts)), cfg.hours, cfg.seed)
    dinfo = init_distributed()
    if dinfo.enabled:  # torchrun: every rank extracts its share, rank 0 alone assesses
        skip = set(all_gather_objects(sorted(done), dinfo)[0])  # rank 0's view, before it writes
        if not dinfo.is_main:
            for ckpt in checkpoints:
                if checkpoint_key(ckpt.spec) not in skip:
                    extract_features(lambda s=ckpt.spec: load_upstream(s, cfg.device), pool,
                                     cfg.cache_dir / "features", upstream_id(ckpt.spec),
                                     device=cfg.device)  # fmt: skip
            wait_complete(run_dir / "report.md", newer_than=started)
            return read_indicator_rows(run_dir / "indicators.jsonl")
    (run_dir / "settings.json").write_text(json.dumps(_settings(cfg), default=str))
    rows: list[dict] = []
    out = run_dir / "indicators.jsonl"
    bar = Progress(len(checkpoints), "assess", "checkpoint", enabled=len(checkpoints) > 1)
    with out.open("w") as f:
        for ckpt in checkpoints:
            new = done.get(checkpoint_key(ckpt.spec))
            if new is None:
                new, seconds = assess_checkpoint(
                    ckpt, pool, cfg.indicators, cfg.layers, cfg.cache_dir / "features", cfg.device
                )
                for r in new:
                    r["seconds"] = seconds / len(new)
                log.info("assessed %s in %.1f s", ckpt.spec, seconds)
            for r in new:
                f.write(json.dumps(r) + "\n")
            f.flush()
            rows += new
            bar.update()
    bar.close()
    pool_s = sum(c.duration for c in pool)
    write_indicator_report(rows, run_dir, cfg.cuts, cfg.seed, cfg.indicators.k, len(pool), pool_s)
    return rows
