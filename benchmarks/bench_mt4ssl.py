"""MT4SSL's claim at our scale: do k-means + EMA-teacher targets beat either alone?

Pre-trains the `tiny` Transformer with each target configuration (hubert-tiny: k-means only,
data2vec-tiny: teacher only, mt4ssl-tiny: both) for the same number of steps and batch size on
the pooled real speech of ../shared/data (fsdd + ravdess + librispeech-10spk, ~1.8 h), with
MFCC k-means targets (k=100, as in HuBERT's first iteration). Every kept checkpoint is probed
on fsdd-digit, ravdess-speaker and ravdess-emotion (linear probe, learnable layer weights),
next to the no-pretraining floor (random `tiny`) and `fbank`.

Caveat written into the result: the pretraining pool contains the probe tasks' audio (no
labels are used in pretraining), as is common for small-scale SSL studies.

    python benchmarks/bench_mt4ssl.py --steps 600 --out benchmarks/results/mt4ssl.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import DATA_ROOT, RESULTS, header, load_average, write_result

from speechssl.config import build
from speechssl.data.manifest import save_cuts
from speechssl.evaluation.tasks import preset_cuts
from speechssl.recipes.pretrain import PretrainConfig, run_pretrain
from speechssl.recipes.probe import ProbeConfig, run_probe
from speechssl.training import read_metrics

CONFIGS = ("hubert-tiny", "data2vec-tiny", "mt4ssl-tiny")
TASKS = ("fsdd-digit", "ravdess-speaker", "ravdess-emotion")
CORPORA = ("fsdd", "ravdess", "librispeech-10spk")


def pooled_cuts(work: Path, data_root: Path, cache: Path) -> Path:
    path = work / "pool.jsonl.gz"
    if not path.is_file():
        cuts = None
        for name in CORPORA:
            part = preset_cuts(name, data_root, cache)
            cuts = part if cuts is None else cuts + part
        save_cuts(cuts.to_eager(), path)
    return path


def kmeans_labels(work: Path, pool: Path, k: int, seed: int) -> Path:
    from speechssl.recipes.kmeans_jobs import KmeansFitConfig, KmeansLabelConfig, fit, label

    km, labels = work / "kmeans-mfcc", work / "labels-mfcc"
    if not (km / "kmeans.json").is_file():
        fit(KmeansFitConfig(cuts=pool, upstream="mfcc", k=k, seed=seed, out=km))
    if not (labels / "labels.json").is_file():
        label(KmeansLabelConfig(kmeans=km, cuts=pool, out=labels))
    return labels


def probe(upstream: str, task: str, out: Path, cache: Path, data_root: Path, epochs: int) -> float:
    done = out / "results.json"
    if done.is_file():  # resumable: a probe that finished is not run again
        result = json.loads(done.read_text())
        if result.get("upstream") == upstream:
            return 100 * result["summary"]["accuracy"]["mean"]
    cfg = ProbeConfig(
        upstream=upstream,
        out=out,
        task=task,
        seeds=[0],
        epochs=epochs,
        cache_dir=cache / "probe",
        data_root=data_root,
    )
    result = run_probe(cfg)
    return 100 * result["summary"]["accuracy"]["mean"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600, help="optimizer steps per configuration")
    ap.add_argument("--probe-every", type=int, default=200, help="probe every this many steps")
    ap.add_argument("--batch-duration", type=float, default=80.0, help="seconds of audio per step")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--probe-epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: report the (config, seed) runs that already reached --steps",
    )
    ap.add_argument("--data-root", type=Path, default=DATA_ROOT)
    ap.add_argument("--work", type=Path, default=Path("runs/evidence-mt4ssl"))
    ap.add_argument("--out", type=Path, default=RESULTS / "mt4ssl.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work, cache = args.work, args.work / "cache"
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = args.configs.split(",")

    t0 = time.perf_counter()
    pool = pooled_cuts(work, args.data_root, cache / "probe")
    labels = kmeans_labels(work, pool, args.k, seeds[0])
    prep_s = time.perf_counter() - t0

    rows, curves, timing = [], {}, {}
    for upstream in ("fbank", "tiny"):
        accs = [probe(upstream, t, work / "probes" / f"{upstream}-{t}", cache, args.data_root,
                      args.probe_epochs) for t in TASKS]  # fmt: skip
        rows.append([upstream, "-", "-", *accs])
    for name in configs:
        for seed in seeds:
            run = work / f"{name}-seed{seed}"
            if args.report_only and not (run / "checkpoints" / f"step-{args.steps:06d}").is_dir():
                continue
            cfg = build(PretrainConfig, yaml_file=name)
            cfg = dataclasses.replace(
                cfg,
                out=run,
                resume=(run / "checkpoints" / "latest").is_file(),
                data=dataclasses.replace(cfg.data, train=[pool], seed=seed),
                targets=dataclasses.replace(
                    cfg.targets, kmeans_labels=labels if cfg.targets.kmeans_weight else None
                ),
                train=dataclasses.replace(
                    cfg.train,
                    max_steps=args.steps,
                    batch_duration=args.batch_duration,
                    ckpt_every=args.probe_every,
                    keep_every=args.probe_every,
                    seed=seed,
                    num_workers=1,
                    log_every=10,
                ),
            )
            run_pretrain(cfg)
            metrics = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
            losses = {r["step"]: r["loss"] for r in metrics}
            timing[(name, seed)] = metrics[-1].get("seconds", float("nan"))  # the run's own clock
            for step in range(args.probe_every, args.steps + 1, args.probe_every):
                ckpt = run / "checkpoints" / f"step-{step:06d}"
                accs = [probe(str(ckpt), t, work / "probes" / f"{name}-s{seed}-{step}-{t}", cache,
                              args.data_root, args.probe_epochs) for t in TASKS]  # fmt: skip
                rows.append([name, seed, step, *accs, losses.get(step, float("nan"))])
                curves.setdefault(name, []).append((step, accs))
    plot = plot_curves(curves, rows, args.out.with_suffix(".png"))

    lines = [
        *header("MT4SSL at our scale: k-means, teacher, both", args.threads),
        f"- Load average at the end: {load_average()}",
        f"- Pool: {pool} (fsdd + ravdess + librispeech-10spk); MFCC k-means k={args.k}; "
        f"prep {prep_s:.0f} s",
        f"- Pretraining: `tiny`, {args.steps} steps x {args.batch_duration:.0f} s of audio "
        f"(crops of the shipped configs), seeds {seeds}; checkpoints probed every "
        f"{args.probe_every} steps",
        "- Probes: linear, learnable layer weights, mean+std pooling, seed 0, "
        f"{args.probe_epochs} epochs; test accuracy (%). fsdd-digit: official split; "
        "ravdess-speaker: utterances within speakers; ravdess-emotion: unseen speakers.",
        "- Caveat: the pretraining pool includes the probe tasks' audio (no labels).",
        "- Wall time per run: "
        + ", ".join(f"{n} seed {s}: {t / 60:.1f} min" for (n, s), t in timing.items()),
        "",
        "| upstream | seed | step | " + " | ".join(TASKS) + " | pretrain loss |",
        "|---|---|---:|" + "---:|" * len(TASKS) + "---:|",
    ]
    for r in rows:
        cells = [f"{x:.1f}" if isinstance(x, float) else str(x) for x in r]
        if len(cells) == 3 + len(TASKS):
            cells.append("-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"![curves]({plot.name})", ""]
    (work / "rows.json").write_text(json.dumps(rows, indent=1))
    write_result(args.out, lines)


def plot_curves(curves: dict, rows: list, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(4.2 * len(TASKS), 3.3))
    floors = {r[0]: r[3:] for r in rows if r[1] == "-"}
    for i, (ax, task) in enumerate(zip(axes, TASKS, strict=True)):
        for name, points in curves.items():  # line: mean over seeds; dots: each seed
            steps = sorted({p[0] for p in points})
            mean = [np.mean([p[1][i] for p in points if p[0] == s]) for s in steps]
            (line,) = ax.plot(steps, mean, label=name)
            ax.scatter([p[0] for p in points], [p[1][i] for p in points], color=line.get_color(),
                       s=14)  # fmt: skip
        for base, style in (("tiny", ":"), ("fbank", "--")):
            if base in floors:
                ax.axhline(
                    floors[base][i], color="grey", ls=style, label=f"{base} (no pretraining)"
                )
        ax.set_title(task)
        ax.set_xlabel("pretraining step")
        ax.set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
