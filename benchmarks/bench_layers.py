"""Layer by layer: what does pretraining change in each layer of `tiny`?

Probes one layer at a time (``--layer N``; 0 is the front-end's output) of the randomly
initialised `tiny` and of pretraining checkpoints, on phone recognition (so762-phones, CTC
context head, PER), digits (fsdd-digit) and speakers (ravdess-speaker), next to each
checkpoint's pretext loss and masked accuracy from its run's metrics. Same probes and
settings as bench_mt4ssl.py (its ``probe``), so the numbers compare with its table.

    python benchmarks/bench_layers.py --upstreams tiny,runs/x/checkpoints/step-001000 \
        --labels random,hubert-1000 --out benchmarks/results/layers.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from bench_mt4ssl import metric_of, probe
from common import DATA_ROOT, RESULTS, header, load_average, write_result

from speechssl.evaluation.ctc_probe import CtcTraining
from speechssl.training import read_metrics


def pretext_stats(upstream: str) -> str:
    """The logged metrics nearest the checkpoint's step (empty for a random network)."""
    ckpt = Path(upstream)
    if not ckpt.is_dir() or not ckpt.name.startswith("step-"):
        return "-"
    step = int(ckpt.name.split("-")[1])
    rows = [r for r in read_metrics(ckpt.parent.parent / "metrics.jsonl") if "loss" in r]
    if not rows:
        return "-"
    r = min(rows, key=lambda r: abs(r["step"] - step))
    keep = {k: v for k, v in r.items() if "acc" in k or k == "loss"}
    return ", ".join(f"{k} {v:.3g}" for k, v in keep.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstreams", required=True, help="comma-separated upstreams")
    ap.add_argument("--labels", default=None, help="comma-separated names for the table")
    ap.add_argument("--layers", default="0,1,2,3,4,5,6")
    ap.add_argument("--tasks", default="so762-phones,fsdd-digit,ravdess-speaker")
    ap.add_argument("--probe-epochs", type=int, default=20)
    ap.add_argument("--ctc-epochs", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-root", type=Path, default=DATA_ROOT)
    ap.add_argument("--work", type=Path, default=Path("runs/evidence-layers"))
    ap.add_argument("--out", type=Path, default=RESULTS / "layers.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ups = args.upstreams.split(",")
    labels = args.labels.split(",") if args.labels else ups
    layers = [int(x) for x in args.layers.split(",")]
    tasks = args.tasks.split(",")
    cache = args.work / "cache"
    rows, table = [], []
    for up, name in zip(ups, labels, strict=True):
        for layer in layers:
            values = [
                probe(up, t, args.work / "probes" / f"{name}-L{layer}-{t}", cache, args.data_root,
                      args.probe_epochs, args.ctc_epochs, layer=layer)
                for t in tasks
            ]  # fmt: skip
            table.append([name, layer, *values, pretext_stats(up) if layer == layers[0] else ""])
            rows += [
                {"upstream": name, "layer": layer, "task": t, "metric": metric_of(t), "value": v}
                for t, v in zip(tasks, values, strict=True)
            ]
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        *header("Layer-by-layer probes: random vs pretrained tiny", args.threads),
        f"- Load average at the end: {load_average()}",
        f"- Upstreams: {', '.join(f'{n} = {u}' for u, n in zip(ups, labels, strict=True))}",
        f"- Probes (seed 0, one layer each): so762-phones CTC context head {args.ctc_epochs} "
        f"epochs, batch {CtcTraining.batch_size}, lr {CtcTraining.lr:g} (PER %, lower is "
        f"better); utterance tasks linear on mean+std pooling, {args.probe_epochs} epochs "
        "(accuracy %)",
        "",
        "| upstream | layer | " + " | ".join(tasks) + " | pretext (nearest logged step) |",
        "|---|---:|" + "---:|" * len(tasks) + "---|",
    ]
    for r in table:
        cells = [f"{x:.1f}" if isinstance(x, float) else str(x) for x in r]
        lines.append("| " + " | ".join(cells) + " |")
    write_result(args.out, lines)


if __name__ == "__main__":
    main()
