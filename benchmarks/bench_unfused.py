"""Method E evidence (LAPE-style, low-resource): UnFuSeD against its parts, at 100 % and 10 %
of the training labels.

Systems, each fine-tuned in full on the labels with the same options and selected on dev
(:func:`speechssl.recipes.unfused.finetune_student`):

- ``scratch``: the student architecture from its random initial weights;
- ``teacher``: the teacher itself (its encoder, a new linear classifier);
- ``unfused``: teacher -> pseudo-labels -> student by deep self-distillation -> fine-tune;
- ``unfused-ce``: the same without self-distillation (only the final classifier's
  cross-entropy on the pseudo-labels: alpha = beta = gamma = 0).

Stages 1-3 read no labels and are shared by the label fractions; the labelled share is
stratified and drawn with the seed. Every stage is resumable (run folders under ``--work``).

    python benchmarks/bench_unfused.py --teacher runs/evidence-dino/dino-seed0 \\
        --tasks fsdd-digit ravdess-emotion --seeds 0 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
from common import DATA_ROOT, RESULTS, header, load_average, write_result

from speechssl.evaluation.tasks import build_task
from speechssl.models.registry import load_upstream, save_upstream
from speechssl.models.student import build_student, count_parameters
from speechssl.models.student_config import ByolaCnnConfig, StudentSection
from speechssl.recipes.demo import corpus_cuts
from speechssl.recipes.unfused import (
    ClusterSection,
    DistillSection,
    FinetuneSection,
    UnfusedConfig,
    finetune_student,
    run_unfused,
)
from speechssl.training import seed_everything

TASKS = ["fsdd-digit", "ravdess-emotion", "ravdess-speaker", "ravdess-gender", "synth-language"]
SYSTEMS = ["scratch", "teacher", "unfused", "unfused-ce"]
NO_DISTILL = {"alpha": 0.0, "beta": 0.0, "gamma": 0.0}


def config(args, task: str, cuts: Path | None, out: Path, seed: int, **distill) -> UnfusedConfig:
    cfg = UnfusedConfig(
        out=out, teacher=args.teacher, task=task, cuts=cuts, data_root=args.data_root,
        cache_dir=args.work / "cache", device="cpu",
        cluster=ClusterSection(k=args.k, seed=seed),
        student=StudentSection(kind="byola", byola=ByolaCnnConfig(channels=args.student_channels,
                                                                  dim=args.student_dim)),
        distill=DistillSection(epochs=args.distill_epochs, **distill),
        finetune=FinetuneSection(mode="full", epochs=args.ft_epochs),
    )  # fmt: skip
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))


def with_fraction(cfg: UnfusedConfig, fraction: float) -> UnfusedConfig:
    return dataclasses.replace(
        cfg, finetune=dataclasses.replace(cfg.finetune, label_fraction=fraction)
    )


def run_task(args, task_name: str, seed: int) -> list[dict]:
    cuts = None
    if task_name.startswith("synth-"):
        _, folder, _ = corpus_cuts(args.synth_minutes, 0, args.work / "cache")
        cuts = folder / "cuts.jsonl.gz"
    base = args.work / task_name / f"seed{seed}"
    cfg = config(args, task_name, cuts, base / "unfused", seed)
    task = build_task(task_name, cuts=cuts, data_root=args.data_root,
                      cache_dir=args.work / "cache", seed=0)  # fmt: skip
    students = {}
    for system in SYSTEMS:
        if system == "scratch":  # the very weights stage 3 starts from (seeded, then built)
            init = base / "scratch-init"
            if not (init / "model.json").is_file():
                with torch.random.fork_rng(devices=[]):
                    seed_everything(seed)
                    save_upstream(build_student(cfg.student), init)
            students[system] = (cfg, init)
        elif system == "teacher":
            students[system] = (cfg, Path(args.teacher))
        else:
            distill = NO_DISTILL if system == "unfused-ce" else {}
            scfg = config(args, task_name, cuts, base / system, seed, **distill)
            scfg = dataclasses.replace(
                scfg, finetune=dataclasses.replace(scfg.finetune, mode="none")
            )
            run_unfused(scfg)
            students[system] = (cfg, base / system / "student")
    rows = []
    for fraction in args.fractions:
        for system, (scfg, upstream) in students.items():
            folder = base / f"{system}-ft-{fraction:g}"
            r = finetune_student(with_fraction(scfg, fraction), task, upstream, folder)
            rows.append({
                "task": task_name, "label_fraction": fraction, "system": system, "seed": seed,
                "params": count_parameters(load_upstream(str(upstream))),
                "metric": "accuracy", "value": 100 * r["test_accuracy"],
                "dev_accuracy": 100 * r.get("dev_accuracy", float("nan")),
                "labelled": r["labelled"], "test_size": r["split_sizes"]["test"],
                "classes": r["classes"],
            })  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True, help="teacher upstream (e.g. a DINO run)")
    ap.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.1])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--k", type=int, default=32, help="pseudo-label clusters")
    ap.add_argument("--distill-epochs", type=int, default=20)
    ap.add_argument("--ft-epochs", type=int, default=20)
    ap.add_argument("--student-channels", type=int, default=32)
    ap.add_argument("--student-dim", type=int, default=256)
    ap.add_argument("--synth-minutes", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("runs/evidence-unfused"))
    ap.add_argument("--data-root", type=Path, default=DATA_ROOT)
    ap.add_argument("--out", type=Path, default=RESULTS / "unfused.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows_file = args.work / "rows.json"
    rows = json.loads(rows_file.read_text()) if rows_file.is_file() else []
    for task_name in args.tasks:
        for seed in args.seeds:
            new = run_task(args, task_name, seed)
            keys = {(r["task"], r["label_fraction"], r["system"], r["seed"]) for r in new}
            rows = [r for r in rows if (r["task"], r["label_fraction"], r["system"], r["seed"])
                    not in keys] + new  # fmt: skip
            rows_file.parent.mkdir(parents=True, exist_ok=True)
            rows_file.write_text(json.dumps(rows, indent=1))
    report(args, rows, time.perf_counter() - t0)


def report(args, rows: list[dict], seconds: float) -> None:
    teacher_params = next((r["params"] for r in rows if r["system"] == "teacher"), None)
    lines = [
        *header("UnFuSeD (method E) at low resource: test accuracy %", args.threads),
        f"- Load average at the end: {load_average()}; wall time {seconds / 60:.0f} min",
        f"- Teacher: `{args.teacher}` ({teacher_params:,} parameters); pseudo-labels: its "
        f"utterance embeddings of the training split, PCA-whitened to 128 dims, L2, k-means "
        f"k = {args.k}, 20 iterations",
        f"- Student: BYOL-A CNN, {args.student_channels} channels, {args.student_dim}-dim; "
        f"self-distillation {args.distill_epochs} epochs, SGD lr 0.03 momentum 0.9 wd 1e-4, "
        "0.95 s crops, released loss weights (0.7 / 1 / 0.3 / 0.003), temperature 1, no "
        "detach (the released behaviour)",
        f"- Fine-tuning: full, Adam lr 1e-3, {args.ft_epochs} epochs on 1 s crops; weights of "
        "the best dev epoch, tested once (selection on dev, never on test); labelled share "
        "stratified per class, drawn with the seed",
        "- mean ± sd over seeds; per-seed values in unfused.json",
        "",
        "| task | labels | test size | classes (chance %) | system | params | accuracy % | seeds |",
        "|---|---:|---:|---|---|---:|---:|---:|",
    ]
    keys = dict.fromkeys((r["task"], r["label_fraction"], r["system"]) for r in rows)
    for task, frac, system in keys:
        rs = [
            r for r in rows if (r["task"], r["label_fraction"], r["system"]) == (task, frac, system)
        ]
        vs = [r["value"] for r in rs]
        sd = f" ± {statistics.stdev(vs):.1f}" if len(vs) > 1 else ""
        first = rs[0]
        lines.append(
            f"| {task} | {100 * frac:g} % ({first['labelled']}) | {first['test_size']} "
            f"| {first['classes']} ({100 / first['classes']:.1f}) | {system} "
            f"| {first['params']:,} | {statistics.mean(vs):.1f}{sd} | {len(vs)} |"
        )
    write_result(args.out, [*lines, ""])
    keep = ("task", "label_fraction", "system", "seed", "params", "metric", "value")
    args.out.with_suffix(".json").write_text(
        json.dumps([{k: r[k] for k in keep} for r in rows], indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
