"""Baseline probe table: fbank, mfcc (and tiny, a random FrameTransformer) on every real-speech preset.

Utterance tasks: linear probe on mean+std pooled features, accuracy and macro-F1 as mean ±
std over 3 probe seeds (the split is fixed, seed 0). librispeech-sv: cosine scoring of
centred mean-pooled features, EER and minDCF (no training, so no seed spread).
so762-phones: CTC probes (one row per ``--ctc-heads`` head), test PER with substitutions,
deletions and insertions (% of reference phones), mean ± std over ``--seeds``.
Features and prepared CutSets are cached under ``--cache-dir``.

    python benchmarks/bench_baselines.py --out benchmarks/results/baselines.md
    python benchmarks/bench_baselines.py --tasks so762-phones --append  # a section of its own
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import DATA_ROOT, RESULTS, header, load_average, write_result

from speechssl.evaluation.ctc_probe import CtcTraining
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
    "so762-phones",
)


def _pm(v: dict, scale: float = 1.0) -> str:
    std = "n/a" if v["std"] is None else f"{scale * v['std']:.1f}"
    return f"{scale * v['mean']:.1f} ± {std}"


def ctc_row(up: str, name: str, sizes: str, r: dict) -> str:
    """One PER row: PER, S/D/I as % of the test phones, dev PER, epochs, test size."""
    s, n = r["summary"], r["tokens"]["test"]
    pct = 100.0 / n
    result = (
        f"PER {_pm(s['per'])}; S {_pm(s['substitutions'], pct)}, D {_pm(s['deletions'], pct)}, "
        f"I {_pm(s['insertions'], pct)}; dev PER {_pm(s['dev_per'])}"
    )
    t = r["training"]
    extra = (
        f"head {r['head']}; {len(r['vocab'])} phones + blank at {r['frame_rate']:g} Hz; "
        f"{n} test phones; epochs {t['epochs']} (best {_pm(s['best_epoch'])}), lr {t['lr']:g}, "
        f"batch {t['batch_size']}; unseen test phones {r['unseen_tokens']['test']}, "
        f"too short {sum(r['too_short'].values())}"
    )
    return f"| {up} | {name} | {sizes} | {result} | {extra} |"


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
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ctc-heads", default="linear,context", help="heads of so762-phones rows")
    ap.add_argument("--ctc-epochs", type=int, default=40)
    ap.add_argument("--ctc-lr", type=float, default=CtcTraining.lr)
    ap.add_argument("--ctc-batch-size", type=int, default=CtcTraining.batch_size)
    ap.add_argument(
        "--append", action="store_true", help="append a section to --out instead of rewriting it"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "baselines.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(x) for x in args.seeds.split(",")]
    ctc = CtcTraining(epochs=args.ctc_epochs, lr=args.ctc_lr, batch_size=args.ctc_batch_size)

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
            if task.kind == "ctc":
                for head in args.ctc_heads.split(","):
                    r = run_probe_on(task, feats, seeds=seeds, ctc=ctc, ctc_head=head)
                    sizes = "/".join(str(v) for v in r["split_sizes"].values())
                    rows.append(ctc_row(up, name, sizes, r))
                    print(rows[-1], f"({time.perf_counter() - t0:.1f} s)", flush=True)
                continue
            r = run_probe_on(
                task,
                feats,
                classifier=args.classifier,
                seeds=seeds,
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
    if args.append:
        lines[0] = "## Baseline probes: " + args.tasks
    lines += [
        f"- Load average at the end: {load_average()}; wall time per upstream (features cached after the first run): "
        + ", ".join(timings),
        f"- Probe: {args.classifier} on mean+std pooled features, Adam lr 1e-3, batch 64, up to {args.epochs} epochs, "
        f"early stopping on dev (patience 5); seeds {args.seeds} (mean ± sample std); splits fixed with seed 0.",
        "- Phone recognition (so762-phones): CTC over the train phones + blank on every frame, "
        "learnable weighted sum of standardised layers; AdamW, 5 % linear warm-up then cosine, "
        f"up to {args.ctc_epochs} epochs, lr {args.ctc_lr:g}, batch {args.ctc_batch_size} "
        "utterances; the epoch of lowest dev PER is kept (early stop after 8 without a better "
        "one); greedy decoding; PER = (S + D + I) / test phones (jiwer); predicting nothing "
        "scores 100 %. Heads: linear (SUPERB PR), context (+-4 frames stacked, 128 ReLU "
        "units), bilstm (2 x 128 per direction).",
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
    if args.append and args.out.is_file():
        lines = [args.out.read_text().rstrip("\n"), "", *lines]
    write_result(args.out, lines)


if __name__ == "__main__":
    main()
