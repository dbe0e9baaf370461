"""``speechssl correlate``: do label-free indicators (and the pretraining loss) order
checkpoints the way downstream probes do?

    speechssl correlate --assess runs/assess --probes runs/probes --out runs/correlate

Joins, per checkpoint folder: the rows of ``speechssl assess`` (``indicators.jsonl``), the
probe results (every ``results.json`` under ``--probes``; their ``upstream`` names the
checkpoint) and the pretraining loss at the checkpoint's step (the run's ``metrics.jsonl``,
mean of the logged records of the last ``loss_window`` steps up to it: single records are
noisy). Then Spearman and Kendall coefficients with bootstrap intervals, per task, per
indicator and per layer, the loss beside them. The intervals resample runs (a checkpoint
``RUN/checkpoints/step-N`` belongs to ``RUN``) with all their checkpoints, or single
checkpoints where every run has one; correlations.json and the report say which. Probe scores are oriented so that higher is
better (accuracy; minus EER for verification); read the sign of an indicator's coefficient
with its meaning (a high Davies-Bouldin index is bad clustering).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from speechssl.config import opt
from speechssl.errors import UserError
from speechssl.runs import start_run

# The config imports nothing heavy (a command's --help reads it); the job below imports numpy,
# scipy and the library where it runs.

__all__ = ["CorrelateConfig", "probe_score", "run_correlate"]


@dataclass
class CorrelateConfig:
    """Correlate indicators and the pretraining loss with probe results across checkpoints."""

    assess: list[Path] = opt(help="`speechssl assess` run folders (or their indicators.jsonl)")
    probes: list[Path] = opt(help="folders searched for probe results.json (any depth)")
    out: Path = opt(help="run folder for correlations.json, report.md and scatter plots")
    bootstrap: int = opt(
        1000, "bootstrap resamples (of runs, or checkpoints) for the 95% intervals", ge=0
    )
    loss_window: int = opt(50, "average the logged loss over this many steps up to the step", ge=1)
    seed: int = opt(0, "bootstrap seed", ge=0)


def probe_score(result: dict) -> tuple[str, float]:
    """(metric name, value), higher is better: accuracy (%), or -EER (%) for verification."""
    if result.get("kind") == "verification":
        eer = result["per_layer"][result["scored_layer"]]["eer"]
        return "-EER %", -100.0 * eer
    return "accuracy %", 100.0 * result["summary"]["accuracy"]["mean"]


def collect_probes(folders: list[Path]) -> dict[str, dict[str, float]]:
    """``{checkpoint key: {task: score}}`` from every results.json under ``folders``.

    Keys are :func:`~speechssl.indicators.rows.row_key`: a probe of a run folder counts for
    the checkpoint it loaded, however the path was spelled.
    """
    from speechssl.indicators.rows import row_key

    out: dict[str, dict[str, float]] = defaultdict(dict)
    for folder in folders:
        if not Path(folder).exists():
            raise UserError(f"{folder} does not exist")
        for path in sorted(Path(folder).rglob("results.json")):
            r = json.loads(path.read_text())
            if "task" not in r or "upstream" not in r:
                continue
            out[row_key(r)][r["task"]] = probe_score(r)[1]
    return out


def loss_at(checkpoint: str, step: int | None, window: int) -> float:
    """Mean logged loss over the ``window`` steps up to ``step`` (nan when unknown)."""
    import numpy as np

    from speechssl.training import read_metrics

    if step is None:
        return math.nan
    metrics = Path(checkpoint).expanduser().parent.parent / "metrics.jsonl"
    if not metrics.is_file():
        return math.nan
    vals = [
        r["loss"]
        for r in read_metrics(metrics)
        if "loss" in r and step - window < r.get("step", -1) <= step
    ]
    return float(np.mean(vals)) if vals else math.nan


def run_correlate(cfg: CorrelateConfig) -> dict:
    from speechssl.indicators.assess import run_of
    from speechssl.indicators.correlation import rank_correlation
    from speechssl.indicators.rows import indicator_names, read_indicator_rows, row_key
    from speechssl.report.correlation import write_correlation_report

    run_dir = start_run(cfg.out, "correlate", cfg, seed=cfg.seed)
    rows = [r for path in cfg.assess for r in read_indicator_rows(path)]
    probes = collect_probes(cfg.probes)
    names = indicator_names(rows)
    by_ckpt: dict[str, dict[int, dict]] = defaultdict(dict)  # checkpoint -> layer -> row
    meta: dict[str, tuple[str, int | None]] = {}
    for r in rows:
        key = row_key(r)
        by_ckpt[key][r["layer"]] = r
        meta[key] = (r["upstream"], r["step"])
    joined = [k for k in by_ckpt if k in probes]
    if len(joined) < 3:
        raise UserError(
            f"only {len(joined)} checkpoint(s) have both indicators and probe results "
            "(need 3+); probe the same checkpoint folders that were assessed"
        )
    tasks = sorted({t for k in joined for t in probes[k]})
    losses = {k: loss_at(k, meta[k][1], cfg.loss_window) for k in joined}  # k: resolved
    runs = {k: run_of(k) for k in joined}
    results: list[dict] = []
    for task in tasks:
        ks = [k for k in joined if task in probes[k]]
        score = [probes[k][task] for k in ks]
        groups = [runs[k] for k in ks]
        measures = [("-loss", None, [-losses[k] for k in ks])]
        for name in names:
            for layer in sorted({layer for k in ks for layer in by_ckpt[k]}):
                x = [by_ckpt[k].get(layer, {}).get(name, math.nan) for k in ks]
                measures.append((name, layer, x))
        for name, layer, x in measures:
            c = rank_correlation(x, score, cfg.bootstrap, cfg.seed, groups)
            results.append({"task": task, "measure": name, "layer": layer, **c.to_dict()})
    summary = {
        "checkpoints": [meta[k][0] for k in joined],
        "tasks": tasks,
        "bootstrap": _bootstrap_summary(results, runs, cfg.bootstrap),
        "results": results,
        "points": {
            meta[k][0]: {
                "probes": probes[k],
                "loss": losses[k],
                "step": meta[k][1],
                "run": runs[k],
            }
            for k in joined
        },
    }
    (run_dir / "correlations.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_correlation_report(summary, by_ckpt, probes, losses, runs, run_dir)
    return summary


def _bootstrap_summary(results: list[dict], runs: dict[str, str], resamples: int) -> dict:
    """What the intervals resampled: ``unit`` runs | checkpoints (| mixed, when dropped
    non-finite values left some rows with one checkpoint per run)."""
    from speechssl.indicators.correlation import BOOTSTRAP_UNITS

    units = {r["bootstrap"] for r in results if r["n"] >= 3}
    unit = units.pop() if len(units) == 1 else ("mixed" if units else BOOTSTRAP_UNITS[1])
    return {"unit": unit, "runs": len(set(runs.values())), "resamples": resamples}
