"""Method B at our scale: do label-free indicators rank checkpoints like the probes do, and
better than the pretraining loss?

Assesses every checkpoint of the MT4SSL evidence runs (``bench_mt4ssl.py``: three target
configurations x seeds x probed steps) on one hour of unlabelled audio, joins them with the
probe results that benchmark already wrote, and prints Spearman/Kendall with bootstrap
intervals per task, indicator and layer (``speechssl assess`` + ``speechssl correlate``).

    python benchmarks/bench_indicator_evidence.py --work runs/evidence-long
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from common import RESULTS, header, load_average, write_result

from speechssl.indicators import IndicatorConfig
from speechssl.indicators.correlation import best_per_measure
from speechssl.recipes.assess import AssessConfig, run_assess
from speechssl.recipes.correlate import CorrelateConfig, run_correlate
from speechssl.report.correlation import bootstrap_sentence, result_cells

TASKS = ("fsdd-digit", "ravdess-speaker", "ravdess-emotion")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/evidence-long"))
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--k", type=int, default=256, help="k-means clusters of the cluster measures")
    ap.add_argument("--kmeans-frames", type=int, default=50_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=RESULTS / "indicator-evidence.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = sorted(p for p in args.work.glob("*-seed*") if (p / "checkpoints").is_dir())
    if not runs:
        raise SystemExit(f"no runs in {args.work}: run bench_mt4ssl.py first")
    icfg = IndicatorConfig(k=args.k, kmeans_frames=args.kmeans_frames)
    t0 = time.perf_counter()
    rows = run_assess(
        AssessConfig(
            upstream=[str(r) for r in runs],
            cuts=[args.work / "pool.jsonl.gz"],
            out=args.work / "assess",
            hours=args.hours,
            indicators=icfg,
            cache_dir=args.work / "cache",
        )
    )
    assess_s = time.perf_counter() - t0
    corr = run_correlate(
        CorrelateConfig(
            assess=[args.work / "assess"],
            probes=[args.work / "probes"],
            out=args.work / "correlate",
            bootstrap=args.bootstrap,
        )
    )
    ckpts = sorted({r["upstream"] for r in rows})
    per_ckpt = sum(r["seconds"] for r in rows) / max(len(ckpts), 1)
    lines = [
        *header("Label-free indicators vs probes across MT4SSL checkpoints", args.threads),
        f"- Load average at the end: {load_average()}",
        f"- Checkpoints: {len(corr['checkpoints'])} ({', '.join(r.name for r in runs)}; "
        "steps 300/600/900), `tiny` (7 hidden states: 0 = after the front-end, 1-6 = blocks)",
        f"- Pool: {args.hours:g} h seeded subset of {args.work / 'pool.jsonl.gz'} (unlabelled); "
        f"k-means k={args.k} on {args.kmeans_frames} frames; silhouette on "
        f"{icfg.silhouette_frames} frames",
        f"- Assess time: {assess_s / 60:.1f} min in all, {per_ckpt:.0f} s per checkpoint "
        "(extraction + every indicator of every layer)",
        "- Probe scores: from bench_mt4ssl.py (linear probe on learnable layer weights, seed 0).",
        f"- Intervals: {bootstrap_sentence(corr)}",
        "- Pretraining loss: mean of the logged loss over the 50 steps up to the checkpoint. "
        "The three configurations optimise different losses (CE, MSE, their sum), so the "
        "loss is not comparable across them: its pooled coefficient is the baseline the paper "
        "compares against, and it is at a disadvantage by construction; see the per-run note.",
        "",
    ]
    for task in corr["tasks"]:
        lines += [f"### {task}", "", "| measure | layer | rho | 95% CI | p | tau | 95% CI | n |",
                  "|---|---:|---:|---|---:|---:|---|---:|"]  # fmt: skip
        for r in best_per_measure(corr["results"], task):
            lines.append("| " + " | ".join(str(c) for c in result_cells(r)) + " |")
        png = args.work / "correlate" / f"scatter-{task}.png"
        if png.is_file():
            target = args.out.with_name(f"{args.out.stem}-{task}.png")
            shutil.copy(png, target)
            lines += ["", f"![{task}]({target.name})"]
        lines.append("")
    lines += [
        "Best layer per measure shown (largest |rho| of 7 layers: selection inflates |rho|; "
        "every layer is in correlations.json of the correlate run).",
        "",
    ]
    (args.work / "correlate" / "evidence-rows.json").write_text(json.dumps(corr["results"]))
    write_result(args.out, lines)


if __name__ == "__main__":
    main()
