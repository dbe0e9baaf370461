"""The report of ``speechssl select``: the ranking as Markdown and as a bar plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from speechssl.report.plots import pyplot

__all__ = ["plot_selection", "render_selection"]


def _num(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def _interval_text(r: dict) -> str:
    if r["interval"] == "bootstrap":
        return f"95% interval from {r['bootstrap']} bootstrap resamples per class"
    if r["interval"] == "jackknife":
        return "95% interval from the delete-one jackknife within classes"
    return "no interval"


def render_selection(r: dict) -> str:
    """The ranking (and groups) as a Markdown table, best (lowest utility) first."""
    c = r["counts"]
    lines = [
        f"# Pseudo-label selection for `{r['label']}` ({r['mode']} mode)",
        "",
        f"{c['items']} items in {c['classes']} classes from `{r['cuts']}`; "
        f"{r['averaging']} average over classes; {r['permutations']} permutations; "
        f"{_interval_text(r)}; seed {r['seed']}. Lower utility = more "
        "conditionally independent of the speech given the label = better pretext target; "
        "a small p-value says the pseudo-label still depends on the speech inside classes.",
        "",
        "| rank | pseudo-label | utility | 95% interval | p-value | items "
        "| classes used / skipped | dropped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["ranking"]:
        name = row["name"] + (" (voiced)" if row.get("voiced_only") else "")
        lines.append(
            f"| {row['rank']} | {name} | {_num(row['utility'])} | "
            f"[{_num(row['low'])}, {_num(row['high'])}] | {_num(row['p_value'], 3)} | "
            f"{row['items']} | {row['classes_used']} / {row['classes_skipped']} | "
            f"{row['items_dropped']} |"
        )
    for kind, g in (r.get("groups") or {}).items():
        sel = ", ".join(f"{n} {w:.3f}" for n, w in g["selected"].items())
        lines += [
            "",
            f"{kind} group: utility {_num(g['utility'])} (uniform weights "
            f"{_num(g['start_utility'])}); weights: {sel}.",
        ]
    t = r["timings"]
    lines += [
        "",
        f"Baselines always added to pretraining, not ranked: {', '.join(r['baselines'])}. "
        f"Feature extraction {t['extract_s']:.1f} s; utility {t['utility_s']:.1f} s.",
    ]
    return "\n".join(lines)


def plot_selection(r: dict, path: Path) -> None:
    """Horizontal bars of the utility (best on top) with interval whiskers and p-values."""
    plt = pyplot()
    rows = [row for row in r["ranking"] if row["utility"] is not None]
    names = [row["name"] for row in rows][::-1]
    u = np.array([row["utility"] for row in rows][::-1], dtype=float)
    low = np.array([np.nan if row["low"] is None else row["low"] for row in rows][::-1])
    high = np.array([np.nan if row["high"] is None else row["high"] for row in rows][::-1])
    err = np.nan_to_num(np.stack([u - low, high - u]).clip(min=0))
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(rows) + 1.4))
    ax.barh(names, u, xerr=err if np.isfinite(low).any() else None, color="#4c72b0", capsize=3)
    ends = np.fmax(u, np.nan_to_num(high, nan=-np.inf))
    for y, row in enumerate(rows[::-1]):
        if row["p_value"] is not None:
            ax.annotate(
                f"p={row['p_value']:.3f}",
                (ends[y], y),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
    lo_x, hi_x = ax.get_xlim()
    ax.set_xlim(lo_x, hi_x + 0.18 * (hi_x - lo_x))  # room for the p-values
    ax.set_xlabel("CI utility (HSIC within classes; lower = better)")
    ax.set_title(f"Pseudo-labels for '{r['label']}' ({r['mode']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
