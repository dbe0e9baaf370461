"""Method D on a laptop: which DINO recipe makes the frozen teacher beat a random ECAPA?

Trains ``dino-ecapa-tiny`` with overrides (``--set key=value``, dotted as on the command
line) on every seed of ``--seeds``, then scores the frozen teacher and a randomly initialised
encoder of the same architecture and seed by cosine on held-out speakers: the RAVDESS speakers
of the emotion task's dev and test splits (speaker split, seed 0) and all of
librispeech-10spk. The training pool is ``../shared/data`` without those speakers (RAVDESS
training speakers; with ``--pool speech`` also speechocean762, with ``all`` also FSDD, whose
0.3-0.8 s digits are tiled up to the crop length). Runs are resumable and
finished ones reused; every recipe's rows go to ``<work>/rows.jsonl`` and the report lists
all recipes tried in that folder.

    python benchmarks/bench_dino_recipe.py --name c128-k1024 --set model.ecapa.channels=128 \\
        --set dino.out-dim=1024 --steps 1500 --seeds 0 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import yaml
from common import DATA_ROOT, RESULTS, header, load_average, write_result
from lhotse import CutSet

from speechssl.audio.noise import FRAME, active_frames, frame_energies
from speechssl.config import build
from speechssl.data.batching import get_label
from speechssl.data.manifest import load_cuts, save_cuts
from speechssl.evaluation.tasks import build_task, preset_cuts
from speechssl.evaluation.verification import embed_cuts, score_speakers
from speechssl.models.registry import build_model, load_upstream, save_upstream
from speechssl.recipes.dino import DinoConfig, run_dino
from speechssl.recipes.supervised import SupervisedConfig, run_supervised
from speechssl.training import read_metrics
from speechssl.training.checkpoint import find_latest

POOLS = {
    "ravdess": ("ravdess",),
    "speech": ("ravdess", "speechocean762-train"),
    "all": ("ravdess", "speechocean762-train", "fsdd"),
}


def trim_silence(cut, range_db: float, pad: float = 0.1):
    """``cut`` without its leading and trailing silence: from the first to the last 20 ms frame
    within ``range_db`` of the loudest, ``pad`` seconds kept either side (RAVDESS clips are
    ~37 % edge silence, so 1-2 s crops often hold no speech)."""
    x = torch.from_numpy(cut.load_audio()[0])
    sr, frame = cut.sampling_rate, FRAME
    energy, count = frame_energies(x, frame)
    active = torch.nonzero(active_frames(energy / count, range_db)).flatten()
    if active.numel() == 0:
        return cut
    start = max(0.0, int(active[0]) * frame / sr - pad)
    end = min(cut.duration, (int(active[-1]) + 1) * frame / sr + pad)
    return cut.truncate(offset=start, duration=end - start, preserve_id=True)


def prepare(
    work: Path, data_root: Path, pool: str, trim_db: float | None = None
) -> tuple[Path, dict[str, list], set[str]]:
    """(training cuts, evaluation cuts by set name, held-out RAVDESS speakers); with
    ``trim_db`` the training cuts lose their edge silence (:func:`trim_silence`) and every
    evaluation set is also scored trimmed (``<set>-trimmed``)."""
    cache = work / "cache"
    emo = build_task("ravdess-emotion", data_root=data_root, cache_dir=cache, seed=0)
    held = {str(get_label(c, "speaker")) for n in ("dev", "test") for c in emo.splits[n]}
    ravdess = preset_cuts("ravdess", data_root, cache).to_eager()
    evals = {
        "librispeech-10spk": list(preset_cuts("librispeech-10spk", data_root, cache)),
        "ravdess-heldout": [c for c in ravdess if str(get_label(c, "speaker")) in held],
    }
    if trim_db is not None:
        evals |= {f"{k}-trimmed": [trim_silence(c, trim_db) for c in v] for k, v in evals.items()}
    tag = "" if trim_db is None else f"-trim{trim_db:g}"
    train = work / f"train-{pool}{tag}.jsonl.gz"
    if not train.is_file():
        keep = []
        for folder in POOLS[pool]:
            cuts = ravdess if folder == "ravdess" else preset_cuts(folder, data_root, cache)
            keep += [c for c in cuts if str(get_label(c, "speaker")) not in held]
        if trim_db is not None:
            keep = [trim_silence(c, trim_db) for c in keep]
        save_cuts(CutSet.from_cuts(keep), train)
    return train, evals, held


def parse_sets(pairs: list[str]) -> dict[str, object]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set wants key=value, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


POOL_NOTE = "ravdess = RAVDESS training speakers, speech = + speechocean762, all = + FSDD"
RECIPES = {"dino": (DinoConfig, "dino-ecapa-tiny", run_dino),
           "supervised": (SupervisedConfig, "supervised-ecapa-tiny", run_supervised)}  # fmt: skip


def train_run(
    kind: str, run: Path, train: Path, overrides: dict, steps: int | None, seed: int
) -> float:
    """Train (or finish) one run of the shipped ``*-ecapa-tiny`` config of ``kind`` with
    ``overrides`` (``steps`` None: the config's); returns its training minutes so far."""
    cls, yaml_file, fit = RECIPES[kind]
    cli = {"data.train": [str(train)], "train.seed": seed, "train.num-workers": 1,
           "train.ckpt-every": 250, "train.keep-every": 250, "out": str(run)} | overrides  # fmt: skip
    if steps is not None:
        cli["train.max-steps"] = steps
    cfg = build(cls, cli=cli, yaml_file=yaml_file)
    latest = find_latest(run / "checkpoints")
    if latest is None or int(latest.name.split("-")[1]) < cfg.train.max_steps:
        t0 = time.perf_counter()
        fit(dataclasses.replace(cfg, resume=latest is not None))
        spent = (time.perf_counter() - t0) / 60
        note = run / "minutes.json"
        before = json.loads(note.read_text())["minutes"] if note.is_file() else 0.0
        note.write_text(json.dumps({"minutes": before + spent}))
    return json.loads((run / "minutes.json").read_text())["minutes"]


def random_twin(dino_run: Path, seed: int) -> Path:
    """A randomly initialised encoder with the DINO run's architecture, seeded by ``seed``."""
    out = dino_run.parent / f"{dino_run.name}-random"
    if not (out / "model.json").is_file():
        ref = load_upstream(str(dino_run))
        torch.manual_seed(seed)
        save_upstream(build_model("ecapa", dataclasses.asdict(ref.config)), out)
    return out


def score(upstream: Path, evals: dict[str, list]) -> dict[str, dict]:
    model = load_upstream(str(upstream))
    out = {}
    for name, cuts in evals.items():
        spk = [str(get_label(c, "speaker")) for c in cuts]
        r = score_speakers(embed_cuts(model, cuts), spk, seed=0)
        out[name] = {"eer": 100 * r["eer"], "min_dcf": r["min_dcf_0.05"], "trials": r["trials"]}
    return out


def last_metrics(run: Path) -> dict:
    recs = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    return recs[-1] if recs else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="recipe name (run folders <name>-seed<N>)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override of dino-ecapa-tiny, e.g. dino.out-dim=1024")  # fmt: skip
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--pool", choices=sorted(POOLS), default="speech")
    ap.add_argument("--trim-db", type=float, default=None,
                    help="cut the pool's edge silence (frames this many dB under the loudest); "
                    "also scores every evaluation set trimmed")  # fmt: skip
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("runs/dino-recipe"))
    ap.add_argument("--data-root", type=Path, default=DATA_ROOT)
    ap.add_argument("--out", type=Path, default=RESULTS / "dino-recipe.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    overrides = parse_sets(args.set)
    train, evals, held = prepare(args.work, args.data_root, args.pool, args.trim_db)
    rows_file = args.work / "rows.jsonl"
    rows = (
        [json.loads(x) for x in rows_file.read_text().splitlines()] if rows_file.is_file() else []
    )
    for seed in args.seeds:
        run = args.work / f"{args.name}-seed{seed}"
        minutes = train_run("dino", run, train, overrides, args.steps, seed)
        m = last_metrics(run)
        common = {"recipe": args.name, "seed": seed, "steps": args.steps, "pool": args.pool,
                  "trim_db": args.trim_db,
                  "overrides": overrides, "train_minutes": round(minutes, 1),
                  "loss": m.get("loss"), "teacher_entropy": m.get("teacher_entropy")}  # fmt: skip
        rows = [r for r in rows if not (r["recipe"] == args.name and r["seed"] == seed)]
        # the run's checkpoints, oldest first (the last one is the run itself): the curve
        ups = [("random", 0, random_twin(run, seed))]
        ups += [
            ("dino", int(c.name.split("-")[1]), c) for c in sorted(run.glob("checkpoints/step-*"))
        ]
        for encoder, step, up in ups:
            for eval_set, r in score(up, evals).items():
                rows.append(common | {"encoder": encoder, "step": step, "eval_set": eval_set} | r)
        rows_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(json.dumps([r for r in rows if r["recipe"] == args.name and r["seed"] == seed]))
    report(args, rows, len(load_cuts(train)), held)


def report(args, rows: list[dict], n_train: int, held: set[str]) -> None:
    lines = [
        *header(
            "DINO recipes on CPU: frozen teacher vs a random ECAPA of the same shape", args.threads
        ),  # fmt: skip
        f"- Load average at the end: {load_average()}",
        f"- Held out of training: RAVDESS speakers {sorted(held)} (240 utterances) and all of "
        f"librispeech-10spk (100 utterances, 10 speakers); training pools (column `pool`): "
        f"{POOL_NOTE}; this command's pool `{args.pool}`: {n_train} cuts",
        "- Scoring: teacher embedding of the whole utterance, centred, cosine; balanced trials "
        "(every same-speaker pair, as many different-speaker pairs); chance EER 50 %",
        "- ratio = DINO EER / random EER on the same seed (goal: <= 0.6 on both sets)",
        "",
        "| recipe | pool | overrides | seed | steps | train min | loss | teacher H | eval set "
        "| random EER % | DINO EER % | ratio | DINO minDCF (p 0.05) |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    final = [r for r in rows if r["encoder"] == "random" or r["step"] == r["steps"]]
    by = {(r["recipe"], r["seed"], r["eval_set"], r["encoder"]): r for r in final}
    for (recipe, seed, eval_set, encoder), r in by.items():
        if encoder != "dino":
            continue
        rnd = by.get((recipe, seed, eval_set, "random"))
        ratio = f"{r['eer'] / rnd['eer']:.2f}" if rnd else "-"
        sets = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "-"
        trim = f", trimmed {r['trim_db']:g} dB" if r.get("trim_db") is not None else ""
        lines.append(
            f"| {recipe} | {r.get('pool', 'speech')}{trim} | {sets} | {seed} | {r['steps']} | {r['train_minutes']} "
            f"| {r['loss']:.3f} | {r['teacher_entropy']:.2f} | {eval_set} "
            f"| {rnd['eer'] if rnd else float('nan'):.1f} | {r['eer']:.1f} | {ratio} "
            f"| {r['min_dcf']:.3f} |"
        )
    lines += ["", "EER % of the teacher at each kept checkpoint (the curve; same rows in the JSON):",
              "", "| recipe | seed | eval set | step: EER % |", "|---|---:|---|---|"]  # fmt: skip
    curves: dict[tuple, list[str]] = {}
    for r in rows:
        if r["encoder"] == "dino":
            key = (r["recipe"], r["seed"], r["eval_set"])
            curves.setdefault(key, []).append(f"{r['step']}: {r['eer']:.1f}")
    lines += [f"| {a} | {b} | {c} | {', '.join(v)} |" for (a, b, c), v in curves.items()]
    write_result(args.out, [*lines, ""])
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
