"""``speechssl assess``: label-free indicators of checkpoints on a fixed unlabelled pool.

    speechssl assess --upstream runs/mt4ssl-tiny --cuts pool.jsonl.gz --hours 1 --out runs/assess

A run folder stands for all its checkpoints, so the table follows training step by step.
Writes ``indicators.jsonl`` (one row per checkpoint x layer), ``report.md`` with the table,
and one plot per indicator against step (a line per layer) and against layer (a line per
checkpoint).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from speechssl.config import opt, to_dict
from speechssl.data.manifest import load_cut_sets
from speechssl.errors import UserError
from speechssl.indicators import NAMES, IndicatorConfig
from speechssl.indicators.assess import assess_checkpoint, expand_upstreams, select_pool
from speechssl.recipes.probe import default_cache_dir
from speechssl.report.markdown import Report
from speechssl.runs import start_run

__all__ = ["AssessConfig", "run_assess"]


@dataclass
class AssessConfig:
    """Label-free indicators of one or more upstreams on a fixed pool of unlabelled audio."""

    upstream: list[str] = opt(
        help="checkpoint | run folder (all its checkpoints) | HF folder | fbank | mfcc | tiny ..."
    )
    cuts: list[Path] = opt(help="CutSet manifest(s) of unlabelled audio to draw the pool from")
    out: Path = opt(help="run folder for indicators.jsonl, report.md and plots")
    hours: float = opt(1.0, "audio in the pool (a seeded subset of the cuts)")
    seed: int = opt(
        0, "seed of the pool (--indicators.seed seeds the k-means and silhouette samples)"
    )
    layers: list[int] | None = opt(None, "layers to assess (hidden-state indices); none = all")
    indicators: IndicatorConfig = opt(factory=IndicatorConfig, help="indicator settings")
    cache_dir: Path = opt(factory=lambda: default_cache_dir(), help="feature cache")
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
    done: dict[str, list[dict]] = {}
    old = Path(cfg.out) / "indicators.jsonl"
    settings = Path(cfg.out) / "settings.json"
    if old.is_file() and settings.is_file():
        if json.loads(settings.read_text()) == json.loads(json.dumps(_settings(cfg), default=str)):
            for r in read_rows(old):
                done.setdefault(r["upstream"], []).append(r)
    run_dir = start_run(cfg.out, "assess", cfg, seed=cfg.seed)
    (run_dir / "settings.json").write_text(json.dumps(_settings(cfg), default=str))
    checkpoints = expand_upstreams(cfg.upstream)
    pool = select_pool(list(load_cut_sets(cfg.cuts)), cfg.hours, cfg.seed)
    rows: list[dict] = []
    out = run_dir / "indicators.jsonl"
    with out.open("w") as f:
        for ckpt in tqdm(checkpoints, desc="assess", unit="ckpt", disable=len(checkpoints) < 2):
            new = done.get(ckpt.spec)
            if new is None:
                new, seconds = assess_checkpoint(
                    ckpt, pool, cfg.indicators, cfg.layers, cfg.cache_dir / "features", cfg.device
                )
                for r in new:
                    r["seconds"] = seconds / len(new)
            for r in new:
                f.write(json.dumps(r) + "\n")
            f.flush()
            rows += new
    pool_s = sum(c.duration for c in pool)
    write_report(rows, run_dir, cfg, len(pool), pool_s)
    return rows


def read_rows(path: str | Path) -> list[dict]:
    """Rows of an ``indicators.jsonl`` (or of the run folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "indicators.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found: run `speechssl assess` first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def indicator_names(rows: list[dict]) -> list[str]:
    """Indicator columns present in ``rows`` (intervals and bookkeeping left out)."""
    present = {k for r in rows for k in r}
    return [n for n in NAMES if n in present]


def write_report(rows: list[dict], run_dir: Path, cfg: AssessConfig, n_cuts: int, pool_s: float):
    names = indicator_names(rows)
    rep = Report(run_dir, "Label-free indicators")
    rep.text(
        f"Pool: {n_cuts} cuts, {pool_s / 3600:.2f} h (seed {cfg.seed}) from "
        + ", ".join(str(p) for p in cfg.cuts)
        + f". k-means k = {cfg.indicators.k}. Config: `config.yaml`."
    )
    rep.table(
        ["run", "step", "layer", *names],
        [[r["run"], _dash(r["step"]), r["layer"], *[r.get(n) for n in names]] for r in rows],
    )
    for name in names:
        png = plot_indicator(rows, name, run_dir / f"{name}.png")
        rep.image(png, name)
    rep.write()


def _dash(x):
    return "-" if x is None else x


def plot_indicator(rows: list[dict], name: str, path: Path) -> Path:
    """Left: ``name`` against step, a line per (run, layer); right: against layer, a line per
    checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    by_run_layer: dict[tuple, list] = defaultdict(list)
    by_ckpt: dict[tuple, list] = defaultdict(list)
    for r in rows:
        v = r.get(name)
        if v is None or not math.isfinite(v):
            continue
        if r["step"] is not None:
            by_run_layer[(r["run"], r["layer"])].append((r["step"], v))
        by_ckpt[(r["run"], r["step"])].append((r["layer"], v))
    for (run, layer), pts in sorted(by_run_layer.items()):
        pts.sort()
        a.plot(*zip(*pts, strict=True), marker="o", ms=3, label=f"{run} L{layer}")
    a.set_xlabel("training step")
    a.set_ylabel(name)
    if 0 < len(by_run_layer) <= 12:
        a.legend(fontsize=6)
    for (run, step), pts in sorted(by_ckpt.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        pts.sort()
        b.plot(*zip(*pts, strict=True), marker="o", ms=3, label=f"{run} @{_dash(step)}")
    b.set_xlabel("layer")
    if 0 < len(by_ckpt) <= 12:
        b.legend(fontsize=6)
    fig.suptitle(name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
