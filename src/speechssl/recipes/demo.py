"""`speechssl demo`: the whole pipeline, as it exists, on the embedded synthetic corpus.

The corpus is synthesised on first use and cached (``--cache-dir``, default ``$SPEECHSSL_CACHE`` or
``~/.cache/speechssl``), keyed by its layout version, minutes and seed. Each method adds its stage here; today's stages:
(1) corpus synthesis and a summary with one log-mel picture per language, then a training-free
ranking of pseudo-labels for speaker and language, (2) MFCC k-means and a short MT4SSL pretraining
of ``tiny`` with live label-free indicators, (3) probes of the baselines and of the pretrained model
on speaker, language and frame-level phonemes, (4) a short DINO run and speaker verification on
held-out voices, (5) UnFuSeD on ``synth-speaker``: the DINO teacher's (else fbank's) clusters
distilled into a small fresh student, fine-tuned on the labels and compared with the same
student fine-tuned from its random init. The report is ``OUT/report.md`` with its PNG plots beside it. Each stage announces
itself as it starts, on stderr and in ``OUT/log.txt`` (the stages' own runs log to their folders).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from speechssl.config import opt
from speechssl.progress import console_logger
from speechssl.runs import cache_root, start_run

if TYPE_CHECKING:
    from speechssl.report.markdown import Report

# The config imports nothing heavy (a command's --help reads it); the stages below import
# torch, lhotse and the library where they run.

# stage headings go to stderr and, through the handler run_demo adds, to the demo's own
# log.txt (the run log proper follows each stage into its own run folder)
stages = console_logger("demo")


@dataclass
class DemoConfig:
    """Run every stage of the toolkit on the embedded synthetic corpus and write a report."""

    out: Path = opt(Path("runs/demo"), "report folder (report.md and PNG plots)")
    minutes: float = opt(20.0, "minutes of synthetic speech in the corpus", gt=0)
    seed: int = opt(0, "seed of the corpus and of every stage", ge=0)
    cache_dir: Path | None = opt(
        None, "cache for the corpus and features (default ~/.cache/speechssl)"
    )
    probe_epochs: int = opt(20, "training epochs of each probe", ge=1)
    pretrain_steps: int = opt(150, "steps of the MT4SSL pretraining stage (0: skip it)", ge=0)
    dino_steps: int = opt(300, "steps of the DINO stage (0: skip it)", ge=0)
    unfused_epochs: int = opt(
        8, "epochs of the UnFuSeD stage's distillation and of each fine-tuning (0: skip it)", ge=0
    )
    select: bool = opt(True, "rank pseudo-labels for speaker and language (method A)")


# The version of the corpus layout in the cache key: bump it when synthesize_corpus changes
# what it writes, so that a corpus cached by an older version is not loaded (v2: every voice
# speaks every language, and each cut has a ``variant`` label).
CORPUS_LAYOUT = "v2"


def corpus_cuts(minutes: float, seed: int, cache_dir: Path | None = None):
    """The cached synthetic corpus for (minutes, seed), synthesised if it is not there yet.

    The manifest holds absolute paths, so the corpus is written in place and a marker file
    is written last: an interrupted synthesis is never mistaken for a corpus.
    """
    from speechssl.data.manifest import load_cuts
    from speechssl.data.synth import synthesize_corpus

    cache = Path(cache_dir) if cache_dir is not None else cache_root()
    folder = cache / f"synth-{CORPUS_LAYOUT}-{minutes:g}min-seed{seed}"
    marker = folder / ".complete"
    if marker.is_file():
        return load_cuts(folder / "cuts.jsonl.gz"), folder, False
    shutil.rmtree(folder, ignore_errors=True)
    synthesize_corpus(folder, minutes, seed)
    marker.write_text("synthesised by speechssl\n")
    return load_cuts(folder / "cuts.jsonl.gz"), folder, True


def run_demo(cfg: DemoConfig) -> Path:
    """Run the demo stages and return the path of the report."""
    out = start_run(cfg.out, "demo", cfg, seed=cfg.seed)
    handler = logging.FileHandler(out / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    stages.addHandler(handler)
    try:
        path = _run_stages(cfg, out)
        stages.info("demo: report written to %s", path)
    finally:
        stages.removeHandler(handler)
        handler.close()
    return path


def _stage(number: str, what: str) -> None:
    stages.info("demo stage %s: %s", number, what)


def _run_stages(cfg: DemoConfig, out: Path) -> Path:
    from speechssl.report.markdown import Report

    report = Report(out, "speechssl demo")
    report.text(
        f"Embedded synthetic corpus: {cfg.minutes:g} minutes, seed {cfg.seed}. "
        "Every number below comes from this run; its config is `config.yaml` beside this report."
    )

    _stage("1/5", f"corpus, {cfg.minutes:g} minutes of synthetic speech (cached once made)")
    t0 = time.perf_counter()
    cuts, folder, made = corpus_cuts(cfg.minutes, cfg.seed, cfg.cache_dir)
    took = time.perf_counter() - t0
    report.heading("1. Corpus")
    report.text(f"{'Synthesised' if made else 'Loaded from cache'} in {took:.1f} s: `{folder}`.")
    _corpus_summary(report, cuts, out)
    _logmel_pictures(report, cuts, out)
    if cfg.select:
        _select_stage(report, folder / "cuts.jsonl.gz", out, cfg)
    upstreams = dict.fromkeys(DEMO_UPSTREAMS, None)
    if cfg.pretrain_steps > 0:
        upstreams["mt4ssl-tiny"] = _pretrain_stage(report, folder / "cuts.jsonl.gz", out, cfg)
    _probes(report, folder / "cuts.jsonl.gz", out, cfg, upstreams)
    teacher = None
    if cfg.dino_steps > 0:
        teacher = _dino_stage(report, cuts, out, cfg)
    if cfg.unfused_epochs > 0:
        _unfused_stage(report, folder / "cuts.jsonl.gz", out, cfg, teacher)
    return report.write()


DEMO_UPSTREAMS = ("fbank", "mfcc", "tiny")
DEMO_TASKS = ("synth-speaker", "synth-language", "synth-phoneme")


def _pretrain_stage(report: Report, cuts_path: Path, out: Path, cfg: DemoConfig) -> str:
    """Stage 2: MFCC k-means targets, then a short MT4SSL pretraining of ``tiny``."""
    import dataclasses

    from speechssl.config import build
    from speechssl.recipes.kmeans_jobs import KmeansFitConfig, KmeansLabelConfig, fit, label
    from speechssl.recipes.pretrain import PretrainConfig, run_pretrain
    from speechssl.report.demo import pretrain_figure
    from speechssl.training import read_metrics

    _stage("2/5", f"MFCC k-means, then MT4SSL pretraining of tiny for {cfg.pretrain_steps} steps")
    t0 = time.perf_counter()
    km = fit(
        KmeansFitConfig(cuts=cuts_path, upstream="mfcc", k=50, seed=cfg.seed, out=out / "kmeans")
    )
    labels = label(KmeansLabelConfig(kmeans=out / "kmeans", cuts=cuts_path, out=out / "labels"))
    base = build(PretrainConfig, yaml_file="mt4ssl-tiny")
    run = out / "pretrain"
    pcfg = dataclasses.replace(
        base,
        out=run,
        data=dataclasses.replace(base.data, train=[cuts_path], seed=cfg.seed),
        targets=dataclasses.replace(base.targets, kmeans_labels=out / "labels"),
        train=dataclasses.replace(
            base.train,
            max_steps=cfg.pretrain_steps,
            batch_duration=min(base.train.batch_duration, 60 * cfg.minutes / 4),
            warmup_steps=max(1, cfg.pretrain_steps // 10),
            ckpt_every=cfg.pretrain_steps,
            log_every=5,
            seed=cfg.seed,
            num_workers=0,
        ),
        monitor=dataclasses.replace(
            base.monitor, every=max(1, cfg.pretrain_steps // 5), minutes=3.0, seed=cfg.seed
        ),
    )
    run_pretrain(pcfg)
    took = time.perf_counter() - t0
    records = read_metrics(run / "metrics.jsonl")
    last = [r for r in records if "loss" in r][-1]
    pretrain_figure(records, out / "pretrain.png")
    report.heading("2. MT4SSL pretraining")
    report.text(
        f"k-means (k={km['k']}) on MFCC of the corpus, {len(labels)} cuts labelled at "
        f"{labels.info.label_rate:g} Hz; then `tiny` pretrained for {cfg.pretrain_steps} steps "
        f"with k-means + EMA-teacher targets (1:1, config `mt4ssl-tiny`) in {took:.0f} s. "
        f"Run folder: `pretrain/`. Final loss {last['loss']:.3f} "
        f"(k-means accuracy on masked frames {last.get('kmeans_acc', float('nan')):.2f})."
    )
    live = [r for r in records if "monitor_seconds" in r]
    share = live[-1].get("monitor_share", float("nan")) if live else float("nan")
    report.text(
        f"Label-free indicators (method B) were computed live on a fixed 3-minute pool every "
        f"{pcfg.monitor.every} steps, for {100 * share:.1f}% of the training time: RankMe "
        "(exp of the entropy of the normalised singular values of the uncentred frame "
        "embeddings: a smooth count of the directions they use; collapse shows as a fall) and "
        "Davies-Bouldin (k-means cluster separation; lower is better), per layer, next to the "
        "loss. "
        "`speechssl assess` computes them for any checkpoint, `speechssl correlate` checks "
        "them against probe results."
    )
    report.image(out / "pretrain.png", "pretraining losses and live indicators")
    return str(run)


def _probes(report: Report, cuts_path: Path, out: Path, cfg: DemoConfig, upstreams: dict) -> None:
    """Probe every upstream (baselines, and the pretrained model if there is one)."""
    from speechssl.recipes.probe import ProbeConfig, run_probe

    _stage("3/5", f"probes of {', '.join(upstreams)} on {', '.join(DEMO_TASKS)}")
    report.heading("3. Probes")
    report.text(
        "Frozen upstreams; `fbank`, `mfcc` and a randomly initialised `tiny` Transformer are "
        "the floor every pretraining method must beat. Linear probes on the learnable weighted "
        "sum of layers; utterance tasks on mean+std pooling; speakers in `synth-language` and "
        f"`synth-phoneme` are unseen in training. Test accuracy, seed {cfg.seed}."
    )
    rows = []
    for name, spec in upstreams.items():
        row = [name]
        for task in DEMO_TASKS:
            stages.info("demo probe: %s on %s", name, task)
            probe_cfg = ProbeConfig(
                upstream=spec or name,
                out=out / "probes" / f"{name}-{task}",
                task=task,
                cuts=cuts_path,
                seeds=[cfg.seed],
                split_seed=cfg.seed,
                epochs=cfg.probe_epochs,
                cache_dir=(cfg.cache_dir or cache_root()) / "probe",
            )
            summary = run_probe(probe_cfg)["summary"]
            metric = "frame_accuracy" if "frame_accuracy" in summary else "accuracy"
            row.append(f"{100 * summary[metric]['mean']:.1f}")
        rows.append(row)
    report.table(["upstream", *(f"{t} (%)" for t in DEMO_TASKS)], rows)
    report.text(
        "Each probe's results, config and log: `probes/<upstream>-<task>/`. Reading the "
        "language column: every voice speaks every language, so the timbre says nothing "
        "about the language, and `synth-language` splits by voice variant, so the test voices "
        "are unseen in training; chance is 25 % (4 languages, dealt evenly)."
    )


def _corpus_summary(report: Report, cuts, out: Path) -> None:
    from speechssl.data.info import describe
    from speechssl.report.cutset_info import plot_info
    from speechssl.report.demo import corpus_tables

    info = describe(cuts)
    report.text(
        f"{info.utterances} utterances, {info.hours * 60:.1f} minutes, "
        f"{len(info.labels['speaker'])} voices in {len(info.labels['language'])} languages."
    )
    corpus_tables(report, cuts)
    path = plot_info(info, out / "corpus.png", title="synthetic corpus")
    report.image(path, "durations and label counts")


def _logmel_pictures(report: Report, cuts, out: Path) -> None:
    """One log-mel picture per language, with its phoneme alignment underneath."""
    import numpy as np
    import torch

    from speechssl.audio.features import LogMel
    from speechssl.audio.io import load_cut
    from speechssl.data.manifest import labels_of
    from speechssl.report.demo import LogMelExample, logmel_figure

    first = {}
    for c in cuts:
        first.setdefault(labels_of(c)["language"], c)
    logmel = LogMel()
    examples = []
    for lang in sorted(first):
        cut = first[lang]
        feats = logmel(torch.from_numpy(load_cut(cut))[None]).features[0].numpy()
        lab = labels_of(cut)
        change = np.array([], dtype=np.int64)
        if cut.has_custom("phonemes"):
            change = np.flatnonzero(np.diff(cut.load_phonemes())) + 1
        examples.append(LogMelExample(f'{lang} - {lab["speaker"]}: "{lab["text"]}"', feats, change))
    path = logmel_figure(examples, out / "logmel.png")
    report.heading("Log-mel, one utterance per language", level=3)
    report.image(path, "log-mel per language")


def _dino_stage(report: Report, cuts, out: Path, cfg: DemoConfig) -> str:
    """Stage 4: DINO on 15 voices without labels; verification EER on the 5 voices left out.
    Returns the DINO run folder (an upstream: its teacher)."""
    import dataclasses

    import numpy as np
    import torch
    from lhotse import CutSet

    from speechssl.config import build
    from speechssl.data.batching import get_label
    from speechssl.data.manifest import save_cuts
    from speechssl.errors import UserError
    from speechssl.evaluation.verification import embed_cuts, score_speakers
    from speechssl.models.registry import build_model, load_upstream
    from speechssl.recipes.dino import DinoConfig, run_dino
    from speechssl.report.demo import dino_figure
    from speechssl.training import read_metrics

    _stage("4/5", f"DINO for {cfg.dino_steps} steps, then speaker verification")
    t0 = time.perf_counter()
    cuts = list(cuts)
    voices = sorted({str(get_label(c, "speaker")) for c in cuts})
    rng = np.random.default_rng(cfg.seed)
    held = set(rng.permutation(voices)[:5].tolist())
    train = [c for c in cuts if str(get_label(c, "speaker")) not in held]
    test = [c for c in cuts if str(get_label(c, "speaker")) in held]
    save_cuts(CutSet.from_cuts(train), out / "dino-train.jsonl.gz")
    base = build(DinoConfig, yaml_file="dino-ecapa-tiny")
    ecapa = dataclasses.replace(base.model.ecapa, channels=64, mfa_dim=192, emb_dim=64)
    dcfg = dataclasses.replace(
        base,
        out=out / "dino",
        model=dataclasses.replace(base.model, ecapa=ecapa),
        crops=dataclasses.replace(base.crops, global_seconds=2.0, local_crops=2, local_seconds=1.0),
        dino=dataclasses.replace(
            base.dino, out_dim=1024, hidden_dim=512, bottleneck_dim=64, freeze_last_layer_epochs=0.2
        ),
        data=dataclasses.replace(
            base.data, train=[out / "dino-train.jsonl.gz"], batch_size=16, seed=cfg.seed
        ),
        train=dataclasses.replace(
            base.train,
            max_steps=cfg.dino_steps,
            warmup_steps=max(1, cfg.dino_steps // 8),
            ckpt_every=cfg.dino_steps,
            log_every=5,
            seed=cfg.seed,
            num_workers=0,
        ),
    )
    run = run_dino(dcfg)
    teacher = load_upstream(run)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        random = build_model("ecapa", dataclasses.asdict(ecapa)).eval()
    speakers = [str(get_label(c, "speaker")) for c in test]
    eers, n_trials = {}, 0
    try:
        for name, model in (("random ECAPA", random), ("DINO teacher", teacher)):
            scored = score_speakers(embed_cuts(model, test), speakers, seed=cfg.seed)
            eers[name], n_trials = 100 * scored["eer"], scored["trials"]
    except UserError:  # a tiny corpus: no held-out voice with two utterances
        eers = {}
    took = time.perf_counter() - t0
    records = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    dino_figure(records, out / "dino.png")
    report.heading("4. DINO and speaker verification on held-out voices")
    report.text(
        f"A small ECAPA-TDNN (64 channels) trained by DINO for {cfg.dino_steps} steps on the "
        f"{len(train)} utterances of {len(voices) - len(held)} voices, without labels "
        f"(2x2 s + 2x1 s crops, noise and reverberation), in {took:.0f} s. Verification on the "
        f"{len(test)} utterances of the 5 voices left out ({', '.join(sorted(held))}), "
        f"{n_trials} balanced trials, cosine scoring:"
    )
    if eers:
        report.table(["encoder", "EER %"], [[k, f"{v:.1f}"] for k, v in eers.items()])
    else:
        report.text("(too few utterances per held-out voice for target trials; use more minutes)")
    report.text(
        "Collapse monitors (logged every step): a teacher entropy falling to 0 (one-hot) or "
        "staying at log K (uniform) with the embedding std near 0 would mean collapse."
    )
    report.image(out / "dino.png", "DINO loss and collapse monitors")
    return str(run)


# UnFuSeD stage: the task, the largest k, and the student (the smallest BYOL-A CNN that still
# learns the speakers of the demo corpus in a few epochs)
UNFUSED_TASK = "synth-speaker"
UNFUSED_K = 16
UNFUSED_STUDENT = {"channels": 16, "blocks": 3, "dim": 128}


def _unfused_stage(
    report: Report, cuts_path: Path, out: Path, cfg: DemoConfig, teacher: str | None
) -> None:
    """Stage 5: UnFuSeD on synth-speaker, and the same student fine-tuned from its random init.

    The teacher is the DINO run of stage 4, else fbank. k is ``min(UNFUSED_K, train // 3)``
    so that a tiny corpus still has clusters of about three utterances. Both stage folders
    are made afresh (``unfused/``, ``unfused-scratch/``): every number is of this run.
    """
    import dataclasses

    import torch

    from speechssl.data.batching import get_label
    from speechssl.errors import UserError
    from speechssl.evaluation.tasks import build_task
    from speechssl.models.registry import save_upstream
    from speechssl.models.student import build_student
    from speechssl.models.student_config import ByolaCnnConfig, StudentSection
    from speechssl.recipes.unfused import (
        ClusterSection,
        DistillSection,
        FinetuneSection,
        UnfusedConfig,
        finetune_student,
        run_unfused,
    )
    from speechssl.training import seed_everything

    teacher_name = "the DINO teacher of stage 4 (`dino/`)" if teacher else "`fbank` (no DINO stage)"
    teacher = teacher or "fbank"
    epochs = cfg.unfused_epochs
    _stage("5/5", f"UnFuSeD on {UNFUSED_TASK}: teacher {teacher}, {epochs} epochs per training")
    report.heading("5. UnFuSeD: a teacher's clusters distilled into a small student")
    t0 = time.perf_counter()
    cache = (cfg.cache_dir or cache_root()) / "probe"
    for name in ("unfused", "unfused-scratch"):
        shutil.rmtree(out / name, ignore_errors=True)
    try:
        task = build_task(UNFUSED_TASK, cuts=cuts_path, cache_dir=cache, seed=cfg.seed)
        n_train = len(task.splits["train"])
        k = max(2, min(UNFUSED_K, n_train // 3))
        ucfg = UnfusedConfig(
            out=out / "unfused", teacher=teacher, task=UNFUSED_TASK, cuts=cuts_path,
            split_seed=cfg.seed, cache_dir=cache,
            cluster=ClusterSection(k=k, seed=cfg.seed),
            student=StudentSection(kind="byola", byola=ByolaCnnConfig(**UNFUSED_STUDENT)),
            distill=DistillSection(epochs=epochs, batch_size=32),
            finetune=FinetuneSection(mode="full", epochs=epochs, batch_size=32),
        )  # fmt: skip
        ucfg = dataclasses.replace(
            ucfg, train=dataclasses.replace(ucfg.train, seed=cfg.seed, log_every=5)
        )
        results = run_unfused(ucfg)
        # the baseline: the very weights stage 3 started from (it seeds, then builds the
        # student), fine-tuned with the same options, steps and crops
        with torch.random.fork_rng(devices=[]):
            seed_everything(ucfg.train.seed)
            init = save_upstream(build_student(ucfg.student), out / "unfused-scratch" / "init")
        scratch = finetune_student(ucfg, task, init, out / "unfused-scratch" / "finetune")
    except UserError as exc:  # a corpus too small for the task's splits or for a batch
        report.text(f"Not run: {exc}; use more minutes.")
        return
    took = time.perf_counter() - t0
    clusters, student, tuned = results["clusters"], results["student"], results["finetune"]
    agreement = clusters["agreement"]
    sizes = clusters["sizes"]
    voices = len({str(get_label(c, "speaker")) for c in task.splits["train"]})
    params = results["teacher"]["parameters"]
    report.text(
        f"Teacher: {teacher_name}; its utterance embeddings of the {clusters['utterances']} "
        f"training utterances of `{UNFUSED_TASK}` (no labels read) PCA-whitened to "
        f"{clusters['dims']} dims, L2-normalised and clustered by k-means with k = {k} "
        f"(min({UNFUSED_K}, training utterances // 3) = min({UNFUSED_K}, {n_train} // 3): "
        "about three utterances a cluster or more, even on a tiny corpus). "
        f"Cluster sizes: {', '.join(str(x) for x in sizes)} (sum {sum(sizes)}). Against the "
        f"speaker ({voices} voices in training), reported only: NMI {agreement['nmi']:.3f}, purity "
        f"{agreement['purity']:.3f}."
    )
    report.text(
        f"Student: a fresh BYOL-A CNN ({UNFUSED_STUDENT['channels']} channels, "
        f"{UNFUSED_STUDENT['blocks']} blocks, {UNFUSED_STUDENT['dim']}-dim embedding, "
        f"{student['parameters']:,} parameters"
        + (f"; the teacher has {params:,}" if params else "")
        + f"), distilled on the pseudo-labels for {epochs} epochs ({student['steps']} SGD "
        f"steps, deep self-distillation through {student['heads']} block heads), then "
        f"fine-tuned in full with a new linear classifier on the {tuned['classes']} speakers for "
        f"{epochs} epochs ({tuned['steps']} Adam steps), selected on dev "
        f"({tuned['split_sizes'].get('dev', 0)} utterances; the last step without any) and "
        f"tested once on {tuned['split_sizes']['test']}. Baseline: the same student from the "
        "same random initial weights, fine-tuned alike (same steps, crops and selection) "
        f"without the distillation. Both in {took:.0f} s; run folders `unfused/`, "
        "`unfused-scratch/`."
    )

    def row(name: str, r: dict) -> list[str]:
        dev = r.get("dev_accuracy")
        return [name, str(r["selected_step"]), "-" if dev is None else f"{100 * dev:.1f}",
                f"{100 * r['test_accuracy']:.1f}"]  # fmt: skip

    report.table(
        ["student", "selected step", "dev accuracy (%)", "test accuracy (%)"],
        [row("UnFuSeD: distilled, then fine-tuned", tuned),
         row("random init, fine-tuned alike", scratch)],
    )  # fmt: skip
    report.text(f"Chance is {100 / tuned['classes']:.0f} % ({tuned['classes']} speakers).")


def _select_stage(report: Report, cuts_path: Path, out: Path, cfg: DemoConfig) -> None:
    """Stage 1b: which pseudo-labels would make good pretext targets for speaker / language."""
    from speechssl.errors import UserError
    from speechssl.recipes.select import SelectConfig, run_select

    _stage("1b/5", "ranking pseudo-labels for speaker and language (no training)")
    report.heading("1b. Choosing pseudo-labels without training")
    report.text(
        "Conditional-independence utility (HSIC inside each class, standard mode; lower = the "
        "pseudo-label is more independent of the speech given the label = better pretext "
        "target), with jackknife intervals and permutation p-values."
    )
    for label in ("speaker", "language"):
        t0 = time.perf_counter()
        try:
            r = run_select(
                SelectConfig(
                    cuts=cuts_path, label=label, out=out / f"select-{label}", permutations=100,
                    seed=cfg.seed,
                )
            )  # fmt: skip
        except UserError as exc:  # a tiny corpus: no class large enough to score
            report.text(f"**{label}**: not scored, {exc}; use more minutes.")
            continue
        scored = [row["name"] for row in r["ranking"] if row["utility"] is not None]
        best = ", ".join(scored[:3]) or "none (classes too small to score; use more minutes)"
        report.text(
            f"**{label}** ({r['counts']['items']} utterances, {r['counts']['classes']} classes, "
            f"{time.perf_counter() - t0:.0f} s with feature extraction): best three {best}. "
            f"Table: `select-{label}/selection.md`."
        )
        report.image(out / f"select-{label}" / "selection.png", f"pseudo-label utility, {label}")
