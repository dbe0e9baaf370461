"""Method A at our scale: does the conditional-independence utility of a pseudo-label predict
how good it is as a pretext target?

For each candidate pseudo-label (and the best and worst groups), pretrain ``tiny`` by masked
regression of that pseudo-label plus log-mel and MFCC reconstruction (the paper's setup), all
for the same steps and audio; probe fsdd-digit, ravdess-speaker, ravdess-emotion and the
synthetic corpus' frame-level phonemes; compute the utility of every candidate for each task
(``speechssl select``, both modes; phonemes on phone segments of the synthetic corpus) and
report Spearman's rho between utility (lower = better) and downstream accuracy. A negative rho
is the paper's claim. Every stage is resumable.

    python benchmarks/bench_pseudolabel_evidence.py --work runs/evidence-pseudo
    python benchmarks/bench_pseudolabel_evidence.py --work runs/evidence-pseudo --seed 1 \
        --out benchmarks/results/pseudolabel-evidence-seed1.md
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from common import DATA_ROOT, RESULTS, header, load_average, write_result
from lhotse import CutSet
from lhotse.supervision import SupervisionSegment
from scipy import stats

from speechssl.config import build
from speechssl.data.manifest import load_cuts, save_cuts
from speechssl.evaluation.tasks import preset_cuts
from speechssl.recipes.demo import corpus_cuts
from speechssl.recipes.pretrain import PretrainConfig, run_pretrain
from speechssl.recipes.probe import ProbeConfig, run_probe
from speechssl.recipes.select import SelectConfig, run_select
from speechssl.training.checkpoint import find_latest

CANDIDATES = ("f0", "voicing", "loudness", "rms", "zcr", "alpha_ratio", "hammarberg",
              "spectral_flux", "log_hnr", "jitter_local", "shimmer_local")  # fmt: skip
TASKS = {  # probe task -> (cuts key, label) for the utility
    "fsdd-digit": ("fsdd", "digit"),
    "ravdess-speaker": ("ravdess", "speaker"),
    "ravdess-emotion": ("ravdess", "emotion"),
    "synth-phoneme": ("phones", "phoneme"),
}


def phone_segments(cuts_path: Path, out: Path, per_cut: int = 12) -> Path:
    """Cuts of single phone segments (>= 50 ms, at most ``per_cut`` per utterance)."""
    if out.is_file():
        return out
    segs = []
    inventory = (cuts_path.parent / "phonemes.txt").read_text().split()
    for cut in load_cuts(cuts_path):
        ids = cut.load_phonemes()  # 100 fps phoneme ids
        start, taken = 0, 0
        for t in range(1, len(ids) + 1):
            if t == len(ids) or ids[t] != ids[start]:
                if t - start >= 5 and inventory[ids[start]] not in ("_", "sil") and taken < per_cut:
                    seg = cut.truncate(offset=start / 100, duration=(t - start) / 100,
                                       preserve_id=False)  # fmt: skip
                    seg.supervisions = [SupervisionSegment(
                        f"{seg.id}-ph", seg.recording_id, seg.start, seg.duration,
                        custom={"phoneme": inventory[ids[start]]},
                    )]  # fmt: skip
                    segs.append(seg)
                    taken += 1
                start = t
    save_cuts(CutSet.from_cuts(segs), out)
    return out


def pretext_runs(worst: list[str], speaker_selection: Path) -> dict[str, dict]:
    """Each run's ``targets.*`` options, as a user would pass them to ``speechssl pretrain``.

    The best-3 group is ``--targets.pretext-from`` the speaker selection (no group fitted, so
    its 3 lowest utilities at weight 1), whose defaults add log-mel and MFCC. The other runs
    name their pseudo-labels and ask for the same baselines with ``--targets.baselines``.
    """
    named = {n: [n] for n in CANDIDATES} | {"worst-3": worst, "mel+mfcc only": []}
    runs = {n: {"targets.pretext": p, "targets.baselines": True} for n, p in named.items()}
    runs["best-3"] = {"targets.pretext_from": str(speaker_selection)}
    order = [*CANDIDATES, "best-3", "worst-3", "mel+mfcc only"]
    return {n: runs[n] for n in order}


def pretrain_config(run: Path, targets: dict, args: argparse.Namespace) -> PretrainConfig:
    """``speechssl pretrain --config data2vec-tiny`` without the teacher, through the same
    :func:`speechssl.config.build` the CLI calls; ``targets`` holds the run's own options."""
    cli = {
        "targets.teacher_weight": 0.0,
        **targets,
        "data.train": [str(args.pool)],
        "data.seed": args.seed,
        "train.max_steps": args.steps,
        "train.ema_start": None,
        "train.batch_duration": args.batch_duration,
        "train.warmup_steps": min(15, args.steps),
        "train.ckpt_every": args.steps,
        "train.num_workers": 1,
        "train.seed": args.seed,
        "monitor.every": 0,
        "out": str(run),
        "resume": find_latest(run / "checkpoints") is not None,
    }
    return build(PretrainConfig, cli, "data2vec-tiny")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/evidence-pseudo"))
    ap.add_argument("--pool", type=Path, default=Path("runs/evidence-long/pool.jsonl.gz"))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument(
        "--seed", type=int, default=0, help="pretraining seed (runs and probes of seed N > 0 "
        "sit beside seed 0's in --work, suffixed -seedN; selection is shared)"
    )  # fmt: skip
    ap.add_argument("--batch-duration", type=float, default=40.0)
    ap.add_argument("--probe-epochs", type=int, default=15)
    ap.add_argument("--permutations", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-root", type=Path, default=DATA_ROOT)
    ap.add_argument("--out", type=Path, default=RESULTS / "pseudolabel-evidence.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work, cache = args.work, args.work / "cache"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    # -- the cuts each utility is measured on ---------------------------------------------
    _, synth_folder, _ = corpus_cuts(20.0, 0, None)
    cuts = {"phones": phone_segments(synth_folder / "cuts.jsonl.gz", work / "phones.jsonl.gz")}
    for name in ("fsdd", "ravdess"):
        path = work / f"{name}.jsonl.gz"
        if not path.is_file():
            save_cuts(preset_cuts(name, args.data_root, cache).to_eager(), path)
        cuts[name] = path

    # -- utilities (no training) ------------------------------------------------------------
    utility: dict[tuple[str, str], dict[str, float]] = {}
    select_s = {}
    for task, (key, label) in TASKS.items():
        for mode in ("standard", "reference"):
            out = work / "select" / f"{task}-{mode}"
            if (out / "selection.json").is_file():
                sel = json.loads((out / "selection.json").read_text())
            else:
                sel = run_select(SelectConfig(
                    cuts=cuts[key], label=label, out=out, candidates=list(CANDIDATES), mode=mode,
                    permutations=args.permutations, frames=10 if key == "phones" else 30,
                ))  # fmt: skip
            utility[(task, mode)] = {r["name"]: r["utility"] for r in sel["ranking"]}
            select_s[(task, mode)] = sel.get("timings", {}).get("utility_s")

    # -- groups: the 3 best and the 3 worst singles for speaker (standard mode) --------------
    spk = sorted(utility[("ravdess-speaker", "standard")].items(), key=lambda kv: kv[1])
    groups = {"best-3": [n for n, _ in spk[:3]], "worst-3": [n for n, _ in spk[-3:]]}

    # -- pretraining: one run per pretext (+ log-mel and MFCC), same steps and audio ---------
    speaker_selection = work / "select" / "ravdess-speaker-standard" / "selection.json"
    runs = pretext_runs(groups["worst-3"], speaker_selection)
    scores: dict[str, dict[str, float]] = {}
    synth_cuts = synth_folder / "cuts.jsonl.gz"
    suffix = f"-seed{args.seed}" if args.seed else ""
    for name, targets in runs.items():
        slug = name.replace(" ", "-").replace("+", "") + suffix
        run = work / "pretrain" / slug
        cfg = pretrain_config(run, targets, args)
        last = find_latest(run / "checkpoints")
        if last is None or int(last.name.split("-")[1]) < args.steps:
            run_pretrain(cfg)
        scores[name] = {}
        for task in TASKS:
            out = work / "probes" / f"{slug}-{task}"
            if (out / "results.json").is_file():
                res = json.loads((out / "results.json").read_text())
            else:
                res = run_probe(ProbeConfig(
                    upstream=str(run), out=out, task=task, seeds=[0], epochs=args.probe_epochs,
                    cache_dir=cache / "probe", data_root=args.data_root,
                    cuts=synth_cuts if task.startswith("synth") else None,
                ))  # fmt: skip
            scores[name][task] = 100 * res["summary"]["accuracy"]["mean"]

    # -- correlation per task and mode (single pseudo-labels only) ---------------------------
    lines = [
        *header("Pseudo-label utility vs downstream accuracy after pretraining", args.threads),
        f"- Load average at the end: {load_average()}",
        f"- Pretraining: `tiny` (data2vec-tiny without teacher), {args.steps} steps x "
        f"{args.batch_duration:g} s of audio from {args.pool}; target = the pseudo-label "
        f"(L1) + log-mel + MFCC reconstruction (MSE), masked frames; seed {args.seed}. "
        "Configs are built as `speechssl pretrain` builds them: best-3 is "
        "`--targets.pretext-from` the ravdess-speaker selection (log-mel and MFCC by default), "
        "the others `--targets.pretext NAME --targets.baselines`",
        f"- Probes: linear, learnable layer weights, {args.probe_epochs} epochs, seed 0 "
        "(synth-phoneme: frame-level phonemes of the 20-min synthetic corpus, unseen voices)",
        "- Utility: `speechssl select` on the task's own cuts and label (phonemes: phone "
        f"segments of the synthetic corpus, 10 frames), {args.permutations} permutations; "
        "lower = more conditionally independent = predicted better. Groups: the 3 best and "
        "the 3 worst single pseudo-labels for ravdess-speaker (standard mode), equal weights.",
        f"- Wall time: {(time.perf_counter() - t0) / 60:.0f} min",
        "",
        "## Downstream accuracy (%) per pretext",
        "",
        "| pretext | " + " | ".join(TASKS) + " |",
        "|---|" + "---:|" * len(TASKS),
    ]
    for name, s in scores.items():
        lines.append(f"| {name} | " + " | ".join(f"{s[t]:.1f}" for t in TASKS) + " |")
    lines += ["", "## Spearman's rho: utility vs accuracy (11 single pseudo-labels)", "",
              "| task | mode | rho | p | claim holds (rho < 0, p < 0.05) |",
              "|---|---|---:|---:|---|"]  # fmt: skip
    table = {}
    for task in TASKS:
        for mode in ("standard", "reference"):
            u = utility[(task, mode)]
            names = [n for n in CANDIDATES if u.get(n) is not None and math.isfinite(u[n])]
            rho, p = stats.spearmanr([u[n] for n in names], [scores[n][task] for n in names])
            table[(task, mode)] = (float(rho), float(p))
            holds = "yes" if rho < 0 and p < 0.05 else "no"
            lines.append(f"| {task} | {mode} | {rho:+.2f} | {p:.3f} | {holds} |")
    png = plot(utility, scores, args.out.with_suffix(".png"))
    lines += ["", f"![scatter]({png.name})", ""]
    (work / f"evidence{suffix}.json").write_text(json.dumps(
        {"scores": scores, "utility": {f"{t}|{m}": v for (t, m), v in utility.items()},
         "rho": {f"{t}|{m}": v for (t, m), v in table.items()}}, indent=1))  # fmt: skip
    write_result(args.out, lines)


def plot(utility, scores, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(TASKS), figsize=(4 * len(TASKS), 6.4), squeeze=False)
    for i, mode in enumerate(("standard", "reference")):
        for j, task in enumerate(TASKS):
            ax = axes[i][j]
            u = utility[(task, mode)]
            names = [n for n in CANDIDATES if u.get(n) is not None and math.isfinite(u[n])]
            ax.scatter([u[n] for n in names], [scores[n][task] for n in names], s=14)
            for n in names:
                ax.annotate(n, (u[n], scores[n][task]), fontsize=6)
            ax.set_title(f"{task} ({mode})", fontsize=9)
            ax.set_xlabel("utility (lower = better)")
            ax.set_ylabel("accuracy %")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
