"""The report of ``speechssl assess``: the indicator table and one plot per indicator."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from speechssl.indicators.rows import indicator_names
from speechssl.report.markdown import Report
from speechssl.report.plots import pyplot

__all__ = ["plot_indicator", "write_indicator_report"]


def write_indicator_report(
    rows: list[dict],
    run_dir: Path,
    cuts: Sequence[Path],
    seed: int,
    k: int,
    n_cuts: int,
    pool_s: float,
) -> Path:
    """``report.md``: the pool, a row per checkpoint x layer, a plot per indicator.

    Args:
        rows: the rows of ``indicators.jsonl``.
        run_dir: where report.md and the PNGs go.
        cuts, seed: the manifests the pool was drawn from and its seed.
        k: k-means clusters of the cluster measures.
        n_cuts, pool_s: cuts and seconds of audio in the pool.
    """
    names = indicator_names(rows)
    rep = Report(run_dir, "Label-free indicators")
    per_frame = (
        " inertia_per_frame: the k-means objective (squared distances to the nearest centroid)"
        " divided by the frames."
        if "inertia_per_frame" in names
        else ""
    )
    rep.text(
        f"Pool: {n_cuts} cuts, {pool_s / 3600:.2f} h (seed {seed}) from "
        + ", ".join(str(p) for p in cuts)
        + f". k-means k = {k}.{per_frame} Config: `config.yaml`."
    )
    rep.table(
        ["run", "step", "layer", *names],
        [[r["run"], _dash(r["step"]), r["layer"], *[r.get(n) for n in names]] for r in rows],
    )
    for name in names:
        png = plot_indicator(rows, name, run_dir / f"{name}.png")
        rep.image(png, name)
    return rep.write()


def _dash(x):
    return "-" if x is None else x


def plot_indicator(rows: list[dict], name: str, path: Path) -> Path:
    """Left: ``name`` against step, a line per (run, layer); right: against layer, a line per
    checkpoint."""
    plt = pyplot()
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
