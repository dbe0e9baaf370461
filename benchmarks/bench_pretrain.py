"""Pretraining throughput and peak memory of each shipped config on CPU.

Each config runs in its own subprocess (so peak RSS is its own): the shipped YAML with
``--steps`` optimizer steps on the real-speech pool, batches of ``--batch-duration`` seconds,
no checkpoints in the timed part. Throughput counts the audio the model actually saw (after
cropping), per wall second of the timed steps (the first ``--warmup`` steps excluded).

    python benchmarks/bench_pretrain.py --out benchmarks/results/pretrain.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import DATA_ROOT, RESULTS, header, load_average, write_result

CONFIGS = (
    "hubert-tiny",
    "data2vec-tiny",
    "mt4ssl-tiny",
    "hubert-base",
    "data2vec-base",
    "mt4ssl-base",
)


def one(
    name: str, pool: Path, labels: Path, steps: int, warmup: int, batch: float, threads: int
) -> dict:
    from speechssl.config import build
    from speechssl.recipes.pretrain import PretrainConfig, build_trainer

    torch.set_num_threads(threads)
    cfg = build(PretrainConfig, yaml_file=name)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = dataclasses.replace(
            cfg,
            out=Path(tmp) / "run",
            data=dataclasses.replace(cfg.data, train=[pool]),
            targets=dataclasses.replace(
                cfg.targets, kmeans_labels=labels if cfg.targets.kmeans_weight else None
            ),
            train=dataclasses.replace(
                cfg.train,
                max_steps=steps + warmup,
                batch_duration=batch,
                num_workers=0,
                ckpt_every=10**9,
                warmup_steps=1,
                precision="fp32",
            ),  # fmt: skip
        )
        trainer = build_trainer(cfg)
        for _ in range(warmup):
            trainer.train_step()
        audio, t0 = 0.0, time.perf_counter()
        for _ in range(steps):
            audio += trainer.train_step()["_audio_s"]
        wall = time.perf_counter() - t0
    params = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "config": name,
        "params_m": params / 1e6,
        "audio_s": audio,
        "wall_s": wall,
        "peak_mib": peak_mib,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-duration", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("runs/evidence-mt4ssl"),
                    help="folder of bench_mt4ssl.py (its pool and MFCC labels are reused)")  # fmt: skip
    ap.add_argument("--one", nargs=1, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS / "pretrain.md")
    args = ap.parse_args()
    pool, labels = args.work / "pool.jsonl.gz", args.work / "labels-mfcc"
    if args.one:
        result = one(
            args.one[0], pool, labels, args.steps, args.warmup, args.batch_duration, args.threads
        )
        print(json.dumps(result))
        return
    if not pool.is_file() or not (labels / "index.json").is_file():
        sys.exit(
            f"error: run benchmarks/bench_mt4ssl.py first (needs {pool} and {labels}); data: {DATA_ROOT}"
        )
    rows = []
    for name in args.configs.split(","):
        cmd = [sys.executable, __file__, "--one", name, "--steps", str(args.steps), "--warmup",
               str(args.warmup), "--batch-duration", str(args.batch_duration), "--threads",
               str(args.threads), "--work", str(args.work)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            rows.append(f"| {name} | failed: {out.stderr.strip().splitlines()[-1][:120]} |||||")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(
            f"| {name} | {r['params_m']:.1f} | {r['audio_s'] / args.steps:.1f} | "
            f"{r['wall_s'] / args.steps:.2f} | {r['audio_s'] / r['wall_s']:.1f} | {r['peak_mib']:.0f} |"
        )
    lines = [
        *header("Pretraining throughput and peak memory on CPU", args.threads),
        f"- Load average at the end: {load_average()}",
        f"- Each config: shipped YAML, batches of {args.batch_duration:.0f} s of cuts (cropped as "
        f"the config says), {args.warmup} warm-up + {args.steps} timed steps, fp32, one process.",
        "- Peak memory: the subprocess' peak RSS (weights, optimizer, activations, data).",
        "",
        "| config | trained params (M) | audio s / step | s / step | audio s / wall s | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
    ]
    write_result(args.out, lines)


if __name__ == "__main__":
    main()
