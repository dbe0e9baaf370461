"""The report of ``speechssl correlate``: coefficient tables per task and scatter plots."""

from __future__ import annotations

import math
from pathlib import Path

from speechssl.indicators.correlation import MIN_RUNS, best_per_measure
from speechssl.report.markdown import Report
from speechssl.report.plots import pyplot

__all__ = ["bootstrap_sentence", "result_cells", "scatter", "write_correlation_report"]

HEADER = ["measure", "layer", "rho", "rho 95% CI", "p", "tau", "tau 95% CI", "n"]


def bootstrap_sentence(summary: dict) -> str:
    """What the intervals resampled, from ``summary["bootstrap"]`` (see ``run_correlate``)."""
    b = summary["bootstrap"]
    if b["unit"] == "runs" and b["runs"] < MIN_RUNS:
        return (
            f"no intervals: checkpoints of one run are not independent, so the bootstrap "
            f"resamples runs, and it needs {MIN_RUNS}+ runs (here {b['runs']})"
        )
    if b["unit"] == "runs":
        return (
            f"95% bootstrap intervals, {b['resamples']} resamples of the {b['runs']} runs, "
            "each with all its checkpoints (checkpoints of one run are not independent)"
        )
    if b["unit"] == "checkpoints":
        return (
            f"95% bootstrap intervals, {b['resamples']} resamples of checkpoints "
            f"(each of the {b['runs']} runs has one)"
        )
    return (
        f"95% bootstrap intervals, {b['resamples']} resamples of runs with all their "
        "checkpoints, or of checkpoints where each run kept one (field `bootstrap` of each "
        "row of correlations.json)"
    )


def write_correlation_report(
    summary: dict,
    values: dict[str, dict[int, dict]],
    probes: dict[str, dict[str, float]],
    losses: dict[str, float],
    runs: dict[str, str],
    run_dir: Path,
) -> Path:
    """``report.md`` with a table and a scatter figure per task, then every layer.

    Args:
        summary: what ``run_correlate`` wrote to correlations.json.
        values: checkpoint -> layer -> indicator row.
        probes: checkpoint -> task -> score (higher is better).
        losses: checkpoint -> pretraining loss.
        runs: checkpoint -> its run (the checkpoints joined, in order).
        run_dir: where report.md and the PNGs go.
    """
    rep = Report(run_dir, "Indicators vs downstream results")
    rep.text(
        f"{len(runs)} checkpoints of {len(set(runs.values()))} runs. Spearman's rho and "
        f"Kendall's tau with {bootstrap_sentence(summary)}. p: scipy's, which treats the "
        "checkpoints as independent. Scores: higher is better. `-loss` is minus the "
        "pretraining loss (comparable only within one objective). The layer column is the "
        "indicator's layer; the best layer per measure is shown first, all layers below "
        "and in correlations.json. Picking the best of many layers inflates |rho|: read the "
        "intervals."
    )
    for task in summary["tasks"]:
        rep.heading(task, 3)
        rep.table(HEADER, [result_cells(r) for r in best_per_measure(summary["results"], task)])
        png = scatter(summary, values, probes, losses, runs, task, run_dir)
        rep.image(png, f"{task} scatter")
    rep.heading("All layers", 3)
    rep.table(["task", *HEADER], [[r["task"], *result_cells(r)] for r in summary["results"]])
    return rep.write()


def result_cells(r: dict) -> list:
    """One table row of a correlation result (columns of :data:`HEADER`)."""
    layer = "-" if r["layer"] is None else r["layer"]
    return [
        r["measure"],
        layer,
        f"{r['spearman']:+.2f}",
        f"[{r['spearman_lo']:+.2f}, {r['spearman_hi']:+.2f}]",
        f"{r['spearman_p']:.3f}",
        f"{r['kendall']:+.2f}",
        f"[{r['kendall_lo']:+.2f}, {r['kendall_hi']:+.2f}]",
        r["n"],
    ]


def scatter(
    summary: dict,
    values: dict[str, dict[int, dict]],
    probes: dict[str, dict[str, float]],
    losses: dict[str, float],
    runs: dict[str, str],
    task: str,
    run_dir: Path,
) -> Path:
    """One panel per measure at its best layer: the measure against the task's score, a colour
    per run."""
    plt = pyplot()
    best = best_per_measure(summary["results"], task)
    n = len(best)
    cols = min(4, max(n, 1))
    rows_ = math.ceil(max(n, 1) / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(3.2 * cols, 2.8 * rows_), squeeze=False)
    ks = [k for k in runs if task in probes[k]]
    colour = {r: f"C{i % 10}" for i, r in enumerate(sorted({runs[k] for k in ks}))}
    for ax, r in zip(axes.flat, best, strict=False):
        if r["measure"] == "-loss":
            x = [losses[k] for k in ks]
            ax.set_xlabel("pretraining loss")
        else:
            x = [values[k].get(r["layer"], {}).get(r["measure"], math.nan) for k in ks]
            ax.set_xlabel(f"{r['measure']} (layer {r['layer']})")
        y = [probes[k][task] for k in ks]
        ax.scatter(x, y, c=[colour[runs[k]] for k in ks], s=14)
        ax.set_title(f"rho {r['spearman']:+.2f}", fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0][0].set_ylabel(task)
    fig.tight_layout()
    path = run_dir / f"scatter-{task}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
