"""MT4SSL's claim at our scale: do k-means + EMA-teacher targets beat either alone?

Pre-trains the `tiny` Transformer with each target configuration (hubert-tiny: k-means only,
data2vec-tiny: teacher only, mt4ssl-tiny: both, or any YAML given to ``--configs``) with the
shipped recipe's steps and batch on the pooled real speech of ../shared/data (fsdd, ravdess,
librispeech-10spk and speechocean762 without the speakers of so762-phones' test split,
~3.2 h), with MFCC k-means targets (k=100, HuBERT's first iteration). Every kept checkpoint is
probed on so762-phones (CTC, context head, PER), fsdd-digit, ravdess-speaker and
ravdess-emotion (linear probe, learnable layer weights), next to the floors: fbank, mfcc and
the randomly initialised `tiny`.

Writes the Markdown table, a PNG of the curves and, beside them, a JSON list of rows
{config, seed, step, task, metric, value} (floors: step null). Resumable: finished runs and
probes are not redone.

Caveat written into the result: the pool contains the utterance tasks' audio and the PR
task's train/dev audio (no labels are used in pretraining), as is common for small-scale SSL
studies; the PR test speakers are excluded.

    python benchmarks/bench_mt4ssl.py --seeds 0,1 --out benchmarks/results/mt4ssl.md
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

from speechssl.config import build, to_dict
from speechssl.data.batching import get_label
from speechssl.data.manifest import save_cuts
from speechssl.evaluation.ctc_probe import CtcTraining
from speechssl.evaluation.tasks import build_task, preset_cuts
from speechssl.recipes.pretrain import PretrainConfig, run_pretrain
from speechssl.recipes.probe import ProbeConfig, run_probe
from speechssl.training import read_metrics

CONFIGS = ("hubert-tiny", "data2vec-tiny", "mt4ssl-tiny")
TASKS = ("so762-phones", "fsdd-digit", "ravdess-speaker", "ravdess-emotion")
FLOORS = ("fbank", "mfcc", "tiny")
CORPORA = ("fsdd", "ravdess", "librispeech-10spk", "speechocean762-train")
PR_TASK = "so762-phones"


def pooled_cuts(work: Path, data_root: Path, cache: Path) -> Path:
    """The unlabelled pool: every corpus, less the speakers of the PR task's test split."""
    path = work / "pool.jsonl.gz"
    if not path.is_file():
        held = build_task(PR_TASK, data_root=data_root, cache_dir=cache).splits["test"]
        held_out = {str(get_label(c, "speaker")) for c in held}
        cuts = []
        for name in CORPORA:
            part = list(preset_cuts(name, data_root, cache))
            if name == "speechocean762-train":
                part = [c for c in part if str(get_label(c, "speaker")) not in held_out]
            cuts += part
        from lhotse import CutSet

        save_cuts(CutSet.from_cuts(cuts), path)
    return path


def kmeans_labels(work: Path, pool: Path, k: int, seed: int) -> Path:
    from speechssl.recipes.kmeans_jobs import KmeansFitConfig, KmeansLabelConfig, fit, label

    km, labels = work / "kmeans-mfcc", work / "labels-mfcc"
    if not (km / "kmeans.json").is_file():
        fit(KmeansFitConfig(cuts=pool, upstream="mfcc", k=k, seed=seed, out=km))
    if not (labels / "labels.json").is_file():
        label(KmeansLabelConfig(kmeans=km, cuts=pool, out=labels))
    return labels


def metric_of(task: str) -> str:
    return "per" if task == PR_TASK else "accuracy"


def probe(
    upstream: str,
    task: str,
    out: Path,
    cache: Path,
    data_root: Path,
    epochs: int,
    ctc_epochs: int,
    layer: int | None = None,
) -> float:
    """Test accuracy or PER (%) of one probe (seed 0); a finished probe with the same
    options and CTC training settings is read back (resumable)."""
    key, ctc = metric_of(task), task == PR_TASK
    cfg = ProbeConfig(
        upstream=upstream,
        out=out,
        task=task,
        seeds=[0],
        layer=layer,
        epochs=ctc_epochs if ctc else epochs,
        ctc_head="context",
        cache_dir=cache / "probe",
        data_root=data_root,
    )
    done = out / "results.json"
    if done.is_file():
        result = json.loads(done.read_text())
        # the library's CTC defaults are not options: a changed default must re-probe too
        training = vars(CtcTraining(epochs=ctc_epochs)) if ctc else None
        if result["config"] == json.loads(json.dumps(to_dict(cfg))) and (
            result.get("training") == training
        ):
            value = result["summary"][key]["mean"]
            return value if ctc else 100 * value
    result = run_probe(cfg)
    value = result["summary"][key]["mean"]
    return value if ctc else 100 * value


def train_run(name: str, seed: int, run: Path, pool: Path, labels: Path, args) -> PretrainConfig:
    """Pretrain ``name`` (a shipped config or a YAML) with its own steps and batch unless the
    command line gives them; checkpoints kept every ``--probe-every`` steps."""
    cfg = build(PretrainConfig, yaml_file=name)
    steps = args.steps or cfg.train.max_steps
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
            max_steps=steps,
            batch_duration=args.batch_duration or cfg.train.batch_duration,
            ckpt_every=args.probe_every,
            keep_every=args.probe_every,
            seed=seed,
            num_workers=1,
        ),
    )
    if not (run / "checkpoints" / f"step-{steps:06d}").is_dir():
        run_pretrain(cfg)
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: config's)")
    ap.add_argument("--probe-every", type=int, default=1000, help="probe every this many steps")
    ap.add_argument("--batch-duration", type=float, default=None, help="audio s per step")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="shipped names or YAML paths")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--probe-epochs", type=int, default=20)
    ap.add_argument("--ctc-epochs", type=int, default=40, help="epochs of the PR probe")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: report the (config, seed) runs that already finished",
    )
    ap.add_argument("--data-root", type=Path, default=DATA_ROOT)
    ap.add_argument("--work", type=Path, default=Path("runs/evidence-mt4ssl"))
    ap.add_argument("--out", type=Path, default=RESULTS / "mt4ssl.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work, cache = args.work, args.work / "cache"
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    configs, tasks = args.configs.split(","), args.tasks.split(",")

    def probe_all(upstream: str, tag: str) -> list[float]:
        return [
            probe(upstream, t, work / "probes" / f"{tag}-{t}", cache, args.data_root,
                  args.probe_epochs, args.ctc_epochs)
            for t in tasks
        ]  # fmt: skip

    t0 = time.perf_counter()
    pool = pooled_cuts(work, args.data_root, cache / "probe")
    labels = kmeans_labels(work, pool, args.k, seeds[0])
    prep_s = time.perf_counter() - t0

    rows, table, curves, timing = [], [], {}, {}
    for upstream in FLOORS:
        values = probe_all(upstream, upstream)
        table.append([upstream, "-", "-", *values, None])
        rows += [_row(upstream, None, None, t, v) for t, v in zip(tasks, values, strict=True)]
    for name in configs:
        label = Path(name).stem
        for seed in seeds:
            run = work / f"{label}-seed{seed}"
            if args.report_only and not (run / "checkpoints" / "latest").is_file():
                continue
            cfg = train_run(name, seed, run, pool, labels, args) if not args.report_only else (
                build(PretrainConfig, yaml_file=name))  # fmt: skip
            steps = args.steps or cfg.train.max_steps
            metrics = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
            losses = {r["step"]: r["loss"] for r in metrics}
            timing[(label, seed)] = metrics[-1].get("seconds", float("nan"))  # the run's clock
            for step in range(args.probe_every, steps + 1, args.probe_every):
                ckpt = run / "checkpoints" / f"step-{step:06d}"
                if not ckpt.is_dir():
                    continue
                values = probe_all(str(ckpt), f"{label}-s{seed}-{step}")
                loss = losses.get(step, float("nan"))
                table.append([label, seed, step, *values, loss])
                rows += [_row(label, seed, step, t, v) for t, v in zip(tasks, values, strict=True)]
                rows.append(_row(label, seed, step, "pretext", loss, "loss"))
                curves.setdefault(label, []).append((step, values))
    plot = plot_curves(curves, table, tasks, args.out.with_suffix(".png"))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")

    units = ", ".join(f"{t}: {'PER %, lower is better' if metric_of(t) == 'per' else 'acc %'}"
                      for t in tasks)  # fmt: skip
    lines = [
        *header("MT4SSL at our scale: k-means, teacher, both", args.threads),
        f"- Load average at the end: {load_average()}",
        f"- Pool: {pool} ({', '.join(CORPORA)}; the {PR_TASK} test speakers excluded); "
        f"MFCC k-means k={args.k}; prep {prep_s:.0f} s",
        f"- Pretraining: configs {', '.join(configs)} (their steps and batch unless "
        f"overridden: steps {args.steps or 'config'}, batch {args.batch_duration or 'config'} s),"
        f" seeds {seeds}; checkpoints probed every {args.probe_every} steps",
        f"- Probes (probe seed 0): {PR_TASK}: CTC, context head, {args.ctc_epochs} epochs, "
        f"batch {CtcTraining.batch_size}, lr {CtcTraining.lr:g}, dev-selected epoch; utterance "
        f"tasks: linear on mean+std pooling, {args.probe_epochs} epochs; learnable layer "
        "weights; test split. fsdd-digit: official split; ravdess-speaker: utterances within "
        "speakers; ravdess-emotion and so762-phones: unseen speakers.",
        f"- Units: {units}",
        "- Caveat: the pool includes the utterance tasks' audio and the PR train/dev audio "
        "(no labels).",
        "- Wall time per run: "
        + ", ".join(f"{n} seed {s}: {t / 60:.1f} min" for (n, s), t in timing.items()),
        f"- Machine-readable rows: `{args.out.with_suffix('.json').name}`",
        "",
        "| upstream | seed | step | " + " | ".join(tasks) + " | pretrain loss |",
        "|---|---|---:|" + "---:|" * len(tasks) + "---:|",
    ]
    for r in table:
        cells = ["-" if x is None else f"{x:.1f}" if isinstance(x, float) else str(x) for x in r]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"![curves]({plot.name})", ""]
    write_result(args.out, lines)


def _row(config, seed, step, task, value, metric=None) -> dict:
    metric = metric or metric_of(task)
    v = None if value is None or not np.isfinite(value) else round(float(value), 3)
    return {"config": config, "seed": seed, "step": step, "task": task, "metric": metric,
            "value": v}  # fmt: skip


def plot_curves(curves: dict, table: list, tasks: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.3), squeeze=False)
    floors = {r[0]: r[3:] for r in table if r[1] == "-"}
    for i, (ax, task) in enumerate(zip(axes[0], tasks, strict=True)):
        for name, points in curves.items():  # line: mean over seeds; dots: each seed
            steps = sorted({p[0] for p in points})
            mean = [np.mean([p[1][i] for p in points if p[0] == s]) for s in steps]
            (line,) = ax.plot(steps, mean, label=name)
            ax.scatter([p[0] for p in points], [p[1][i] for p in points], color=line.get_color(),
                       s=14)  # fmt: skip
        for base, style in (("tiny", ":"), ("fbank", "--"), ("mfcc", "-.")):
            if base in floors:
                ax.axhline(floors[base][i], color="grey", ls=style, label=f"{base} (no training)")
        ax.set_title(task)
        ax.set_xlabel("pretraining step")
        ax.set_ylabel("test PER (%)" if metric_of(task) == "per" else "test accuracy (%)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
