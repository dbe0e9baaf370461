"""Method D at our scale: the shipped DINO recipe vs a random ECAPA and a supervised AAM
baseline of the same shape, frozen and transferred, over seeds.

Frozen: each encoder's utterance embedding, cosine-scored on held-out speakers (the RAVDESS
speakers of the emotion task's dev and test splits, speaker split seed 0, and all of
librispeech-10spk) -> ``dino.json``, rows {encoder, seed, eval_set, eer, min_dcf}. Transfer
(the paper's study): emotion (ravdess-emotion, unseen speakers) with staged vs all-at-once
fine-tuning, 2 s vs 4 s chunks, with and without augmentation; speaker verification after
fine-tuning on the RAVDESS training speakers' labels -> ``dino-transfer.json``.

Training pool (DINO without labels, the supervised baseline with speaker labels): RAVDESS
training speakers + speechocean762, the pool ``speech`` of ``bench_dino_recipe.py``. Every
run is resumable and finished ones are reused; the report is rewritten after each stage.

    python benchmarks/bench_dino.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from bench_dino_recipe import POOL_NOTE, prepare, random_twin, score, train_run
from common import DATA_ROOT, RESULTS, header, load_average, write_result

from speechssl.audio.augment_config import AugmentConfig
from speechssl.data.manifest import load_cuts, save_cuts
from speechssl.evaluation.tasks import preset_cuts
from speechssl.recipes.finetune import FinetuneConfig, run_finetune

# (name, task kwargs, fine-tuning kwargs, encoders it runs on)
EMO = {"task": "ravdess-emotion"}
TRANSFER = [
    ("emotion staged 2 s", EMO, {"strategy": "staged", "chunk_seconds": 2.0}, "all"),
    ("emotion all-at-once 2 s", EMO, {"strategy": "all", "chunk_seconds": 2.0}, "dino"),
    ("emotion staged 4 s", EMO, {"strategy": "staged", "chunk_seconds": 4.0}, "dino"),
    (
        "emotion staged 2 s + aug",
        EMO,
        {"strategy": "staged", "chunk_seconds": 2.0, "augment": AugmentConfig()},
        "dino",
    ),  # fmt: skip
    ("SV staged", {}, {"strategy": "staged"}, "all"),
    ("SV all-at-once", {}, {"strategy": "all"}, "dino"),
]


def finetune(args, name: str, upstream: Path, seed: int, task: dict, ft: dict) -> float:
    """Accuracy % (emotion) or EER % (SV) of one fine-tuning run, reused when finished."""
    out = args.work / "ft" / f"{name.replace(' ', '-').replace('+', 'aug')}-seed{seed}"
    if not task:  # SV: train on the RAVDESS training speakers' labels, score held-out ones
        task = {"cuts": args.work / "ravdess.jsonl.gz", "label": "speaker",
                "split_by": "speaker", "eval": "verify"}  # fmt: skip
    if not (out / "results.json").is_file():
        cfg = FinetuneConfig(
            upstream=str(upstream), out=out, epochs=args.ft_epochs, batch_size=32, lr=2e-3,
            seed=seed, data_root=args.data_root, cache_dir=args.work / "cache", num_workers=1,
            resume=True, **task, **ft,
        )  # fmt: skip
        run_finetune(cfg)
    r = json.loads((out / "results.json").read_text())
    return 100 * (r["eer"] if "eer" in r else r["accuracy"])


def mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}" if values else "-"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--dino-steps", type=int, default=None, help="default: the config's")
    ap.add_argument("--sup-steps", type=int, default=400)
    ap.add_argument("--ft-epochs", type=int, default=3, help="epochs per fine-tuning stage")
    ap.add_argument("--no-transfer", action="store_true", help="frozen evaluation only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("runs/evidence-dino"))
    ap.add_argument("--data-root", type=Path, default=DATA_ROOT)
    ap.add_argument("--out", type=Path, default=RESULTS / "dino.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    train, evals, held = prepare(args.work, args.data_root, "speech")
    if not (args.work / "ravdess.jsonl.gz").is_file():
        ravdess = preset_cuts("ravdess", args.data_root, args.work / "cache")
        save_cuts(ravdess.to_eager(), args.work / "ravdess.jsonl.gz")
    t0 = time.perf_counter()
    frozen, transfer, minutes = [], [], {}
    encoders = {}
    for seed in args.seeds:
        dino = args.work / f"dino-seed{seed}"
        minutes[("dino", seed)] = train_run("dino", dino, train, {}, args.dino_steps, seed)
        sup = args.work / f"supervised-seed{seed}"
        minutes[("supervised", seed)] = train_run(
            "supervised", sup, train, {"train.warmup-steps": 30}, args.sup_steps, seed
        )
        encoders[seed] = {"random": random_twin(dino, seed), "dino": dino, "supervised": sup}
        for encoder, up in encoders[seed].items():
            for eval_set, r in score(up, evals).items():
                frozen.append({"encoder": encoder, "seed": seed, "eval_set": eval_set,
                               "eer": r["eer"], "min_dcf": r["min_dcf"],
                               "trials": r["trials"]})  # fmt: skip
        report(args, frozen, transfer, minutes, len(load_cuts(train)), held, t0)
    if not args.no_transfer:
        for seed in args.seeds:
            for name, task, ft, which in TRANSFER:
                for encoder, up in encoders[seed].items():
                    if which != "all" and encoder != which:
                        continue
                    value = finetune(args, f"{encoder}-{name}", up, seed, task, ft)
                    metric = "eer" if "SV" in name else "accuracy"
                    transfer.append({"encoder": encoder, "seed": seed, "study": name,
                                     "metric": metric, "value": value})  # fmt: skip
                    report(args, frozen, transfer, minutes, len(load_cuts(train)), held, t0)


def report(args, frozen, transfer, minutes, n_train, held, t0) -> None:
    seeds = sorted({r["seed"] for r in frozen})
    lines = [
        *header("DINO vs random and supervised ECAPA at our scale", args.threads),
        f"- Load average at the end: {load_average()}; wall time so far "
        f"{(time.perf_counter() - t0) / 60:.0f} min (finished runs reused)",
        f"- Training pool: {n_train} cuts ({POOL_NOTE}; pool `speech`); held out: RAVDESS "
        f"speakers {sorted(held)} (240 utterances) and librispeech-10spk (100 utterances, "
        "10 speakers)",
        "- DINO: shipped `dino-ecapa-tiny` (ECAPA 128 ch, 1024 prototypes, 2 x 2 s + 2 x 1 s "
        f"crops), {args.dino_steps or 1500} steps x 16; supervised: shipped "
        f"`supervised-ecapa-tiny` (same encoder, AAM s 30 m 0.2, speaker labels of the pool), "
        f"{args.sup_steps} steps x 32; random: the DINO architecture, seeded",
        "- Training minutes: "
        + ", ".join(f"{k} seed {s}: {v:.0f}" for (k, s), v in minutes.items()),  # fmt: skip
        "- Frozen scoring: whole-utterance embedding, centred, cosine; balanced trials; chance "
        "EER 50 %; minDCF at p_target 0.05",
        "",
        "## Frozen speaker verification (EER %, minDCF)",
        "",
        "| encoder | eval set | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | EER mean ± sd | EER / random |",
        "|---|---|" + "---:|" * (len(seeds) + 2),
    ]
    by = {(r["encoder"], r["eval_set"], r["seed"]): r for r in frozen}
    for encoder in ("random", "dino", "supervised"):
        for eval_set in sorted({r["eval_set"] for r in frozen}):
            got = [by.get((encoder, eval_set, s)) for s in seeds]
            cells = [f"{r['eer']:.1f} ({r['min_dcf']:.3f})" if r else "-" for r in got]
            ratios = [r["eer"] / by[("random", eval_set, r["seed"])]["eer"] for r in got if r]
            lines.append(
                f"| {encoder} | {eval_set} | "
                + " | ".join(cells)
                + f" | {mean_sd([r['eer'] for r in got if r])} | "
                + ", ".join(f"{x:.2f}" for x in ratios)
                + " |"
            )
    if transfer:
        lines += ["", f"## Transfer ({args.ft_epochs} epochs per stage, all-at-once: twice; "
                  "batch 32, lr 2e-3, stage 2 x0.1; weights of the best dev epoch)", "",
                  "Emotion: ravdess-emotion accuracy % (8 classes, test speakers unseen, chance "
                  "12.5 %). SV: EER % on the held-out RAVDESS speakers after fine-tuning on the "
                  "training speakers' labels.", "",
                  "| study | encoder | " + " | ".join(f"seed {s}" for s in seeds)
                  + " | mean ± sd |", "|---|---|" + "---:|" * (len(seeds) + 1)]  # fmt: skip
        tb = {(r["study"], r["encoder"], r["seed"]): r["value"] for r in transfer}
        for study, encoder in dict.fromkeys((r["study"], r["encoder"]) for r in transfer):
            got = [tb.get((study, encoder, s)) for s in seeds]
            lines.append(
                f"| {study} | {encoder} | "
                + " | ".join("-" if v is None else f"{v:.1f}" for v in got)
                + f" | {mean_sd([v for v in got if v is not None])} |"
            )
    write_result(args.out, [*lines, ""])
    args.out.with_suffix(".json").write_text(json.dumps(frozen, indent=1) + "\n")
    (args.out.parent / "dino-transfer.json").write_text(json.dumps(transfer, indent=1) + "\n")


if __name__ == "__main__":
    main()
