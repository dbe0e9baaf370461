"""Baseline probe table: fbank, mfcc (and tiny, a random FrameTransformer) on every real-speech preset.

Utterance tasks: linear probe on mean+std pooled features, accuracy and macro-F1 as mean ±
std over 3 probe seeds (the split is fixed, seed 0). librispeech-sv: cosine scoring of
centred mean-pooled features, EER and minDCF (no training, so no seed spread).
Features and prepared CutSets are cached under ``--cache-dir``.

    python benchmarks/bench_baselines.py --out benchmarks/results/baselines.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import DATA_ROOT, RESULTS, header, load_average, write_result

from speechssl.evaluation.features import extract_features
from speechssl.evaluation.probe_task import run_probe_on
from speechssl.evaluation.probes import ProbeTraining
from speechssl.evaluation.tasks import build_task
from speechssl.models.upstream import FbankUpstream, MfccUpstream
from speechssl.runs import probe_cache_dir

TASKS = (
    "fsdd-digit",
    "fsdd-speaker",
    "ravdess-emotion",
    "ravdess-speaker",
    "ravdess-gender",
    "librispeech-sv",
)


def upstream_factory(name: str):
    """(factory, id) of an upstream; the registry when it exists, else the two built-ins."""
    try:
        from speechssl.models.registry import load_upstream, upstream_id
    except ImportError:
        if name in ("fbank", "mfcc"):
            return (FbankUpstream if name == "fbank" else MfccUpstream), name
        return None, name
    return (lambda: load_upstream(name)), upstream_id(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstreams", default="fbank,mfcc,tiny")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--data-root", type=Path, default=DATA_ROOT)
    ap.add_argument("--cache-dir", type=Path, default=probe_cache_dir())
    ap.add_argument("--classifier", default="linear", choices=("linear", "mlp"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "baselines.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows, missing, timings = [], [], []
    for up in args.upstreams.split(","):
        factory, uid = upstream_factory(up)
        if factory is None:
            missing.append(up)
            continue
        t_up = time.perf_counter()
        for name in args.tasks.split(","):
            t0 = time.perf_counter()
            task = build_task(name, data_root=args.data_root, cache_dir=args.cache_dir, seed=0)
            feats = extract_features(
                factory, task.all_cuts(), args.cache_dir / "features", uid, progress=False
            )
            r = run_probe_on(
                task,
                feats,
                classifier=args.classifier,
                seeds=[0, 1, 2],
                training=ProbeTraining(epochs=args.epochs),
            )
            sizes = "/".join(str(v) for v in r["split_sizes"].values())
            if r["kind"] == "verification":
                m = r["metrics"]
                result = f"EER {100 * m['eer']:.2f} %; minDCF(0.01) {m['min_dcf_0.01']:.3f}; minDCF(0.05) {m['min_dcf_0.05']:.3f}"
                extra = f"{r['trials']} trials, layer {r['scored_layer']}"
            else:
                s = r["summary"]
                acc, f1 = s["accuracy"], s["macro_f1"]
                result = (
                    f"acc {100 * acc['mean']:.1f} ± {100 * acc['std']:.1f}; "
                    f"macro-F1 {100 * f1['mean']:.1f} ± {100 * f1['std']:.1f}"
                )
                extra = f"{len(r['classes'])} classes"
            rows.append(f"| {up} | {name} | {sizes} | {result} | {extra} |")
            print(rows[-1], f"({time.perf_counter() - t0:.1f} s)", flush=True)
        timings.append(f"{up}: {time.perf_counter() - t_up:.0f} s")

    lines = header("Baseline probes: frozen features on the real-speech presets", args.threads)
    lines += [
        f"- Load average at the end: {load_average()}; wall time per upstream (features cached after the first run): "
        + ", ".join(timings),
        f"- Probe: {args.classifier} on mean+std pooled features, Adam lr 1e-3, batch 64, up to {args.epochs} epochs, "
        "early stopping on dev (patience 5); seeds 0,1,2 (mean ± sample std); splits fixed with seed 0.",
        "- Verification: every same-speaker pair of librispeech-10spk as targets plus as many random "
        "different-speaker pairs; cosine of mean-pooled features centred on the set's mean; minDCF with "
        "C_miss = C_fa = 1, normalised.",
        "",
        "| upstream | task | split sizes (train/dev/test) | result (%; test) | notes |",
        "|---|---|---|---|---|",
        *rows,
    ]
    if missing:
        lines += [
            "",
            f"Not run (no `speechssl.models.registry.load_upstream` yet): {', '.join(missing)}.",
        ]
    write_result(args.out, lines)


if __name__ == "__main__":
    main()
