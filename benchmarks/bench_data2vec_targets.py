"""data2vec targets before/after: pretrain `data2vec-tiny` briefly, probe it on fsdd-digit.

One condition per call (run it with each code version or ``--teacher-target``), each appending
a row to ``WORK/rows.jsonl``; ``--report`` writes the table. Pool: fsdd + ravdess +
librispeech-10spk of ../shared/data (unlabelled; includes the probe task's audio).

    python benchmarks/bench_data2vec_targets.py --tag ffn --teacher-target ffn
    python benchmarks/bench_data2vec_targets.py --tag residual --teacher-target residual
    python benchmarks/bench_data2vec_targets.py --report --out benchmarks/results/data2vec-targets.md

``--step-time logmel|waveform`` instead times one data2vec step (forward + backward, 5 x 4 s
of noise, 1 thread, median of 6 after a warm-up): run it under each code version (e.g. with
``PYTHONPATH`` on a ``git archive`` of the old commit's ``src``) to compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from bench_mt4ssl import pooled_cuts  # the same pretraining pool
from common import DATA_ROOT, RESULTS, header, write_result

from speechssl.config import build
from speechssl.recipes.pretrain import PretrainConfig, run_pretrain
from speechssl.recipes.probe import ProbeConfig, run_probe
from speechssl.training import read_metrics


def probe(upstream: str, out: Path, cache: Path, data_root: Path, epochs: int) -> float:
    cfg = ProbeConfig(
        upstream=upstream,
        out=out,
        task="fsdd-digit",
        seeds=[0],
        epochs=epochs,
        cache_dir=cache,
        data_root=data_root,
    )
    return 100 * run_probe(cfg)["summary"]["accuracy"]["mean"]


def step_time(frontend: str) -> float:
    from speechssl.data.pretrain import PretrainBatch
    from speechssl.models.pretrain import PretrainModel
    from speechssl.models.transformer import FrameTransformer
    from speechssl.models.transformer_config import preset
    from speechssl.objectives.base import Step
    from speechssl.objectives.masked_prediction import TeacherRegression

    torch.set_num_threads(1)
    torch.manual_seed(0)
    encoder = FrameTransformer(preset("tiny", frontend=frontend))
    model = PretrainModel(encoder, teacher_top_k=4).train()
    lengths = torch.full((5,), 64000)
    audio = 0.1 * torch.randn(5, 64000)
    valid = torch.ones_like(audio, dtype=torch.bool)
    batch = PretrainBatch(audio, lengths, valid, frames=encoder.num_frames(lengths))
    objective, times = TeacherRegression(), []
    for i in range(7):
        t = time.perf_counter()
        objective(model, batch, Step(i))[0].backward()
        times.append(time.perf_counter() - t)
    return sorted(times[1:])[3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tag", default="ffn", help="name of this condition in the table")
    ap.add_argument("--teacher-target", default=None, help="ffn|residual (none: the default)")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-duration", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probe-epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--floor", action="store_true", help="also probe random `tiny`")
    ap.add_argument("--report", action="store_true", help="write the table of the rows so far")
    ap.add_argument("--step-time", choices=("logmel", "waveform"), help="time one step only")
    ap.add_argument("--data-root", type=Path, default=DATA_ROOT)
    ap.add_argument("--work", type=Path, default=Path("runs/data2vec-targets"))
    ap.add_argument("--out", type=Path, default=RESULTS / "data2vec-targets.md")
    args = ap.parse_args()
    if args.step_time:
        print(f"{args.step_time}: {step_time(args.step_time):.3f} s/step")
        return
    rows_file = args.work / "rows.jsonl"
    if args.report:
        rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
        lines = [
            "| condition | steps | fsdd-digit acc (%) | final loss | target std | wall (min) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['tag']} | {r['steps']} | {r['acc']:.1f} | {r['loss']:.3f} | "
                f"{r['target_std']:.3f} | {r['minutes']:.1f} |"
            )
        write_result(args.out, header("data2vec targets before/after", args.threads) + lines)
        return
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    cache = args.work / "cache"
    pool = pooled_cuts(args.work, args.data_root, cache)
    if args.floor:
        acc = probe("tiny", args.work / "probe-tiny", cache, args.data_root, args.probe_epochs)
        row = dict(tag="random tiny", steps=0, acc=acc, loss=float("nan"))
        row |= dict(target_std=float("nan"), minutes=0.0)
        with rows_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
    t0 = time.perf_counter()
    run = args.work / f"{args.tag}-seed{args.seed}"
    cfg = build(PretrainConfig, yaml_file="data2vec-tiny")
    targets = cfg.targets
    if args.teacher_target is not None:
        targets = dataclasses.replace(targets, teacher_target=args.teacher_target)
    cfg = dataclasses.replace(
        cfg,
        out=run,
        targets=targets,
        monitor=dataclasses.replace(cfg.monitor, every=0),
        data=dataclasses.replace(cfg.data, train=[pool], seed=args.seed),
        train=dataclasses.replace(
            cfg.train,
            max_steps=args.steps,
            batch_duration=args.batch_duration,
            ckpt_every=args.steps,
            seed=args.seed,
            num_workers=1,
            log_every=10,
        ),
    )
    last = run_pretrain(cfg)
    minutes = (time.perf_counter() - t0) / 60
    metrics = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    acc = probe(
        str(last), args.work / f"probe-{args.tag}", cache, args.data_root, args.probe_epochs
    )
    row = dict(tag=args.tag, steps=args.steps, acc=acc, loss=metrics[-1]["loss"])
    row |= dict(target_std=metrics[-1].get("teacher_target_std", float("nan")), minutes=minutes)
    with rows_file.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(row)


if __name__ == "__main__":
    main()
