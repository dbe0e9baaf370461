"""`speechssl demo`: the whole pipeline, as it exists, on the embedded synthetic corpus.

The corpus is synthesised on first use and cached (``--cache-dir``, default
``$SPEECHSSL_CACHE`` or ``~/.cache/speechssl``), keyed by minutes and seed. Each method adds
its stage here; today's stages: (1) corpus synthesis and a summary with one log-mel picture per
language, (2) MFCC k-means and a short MT4SSL pretraining of ``tiny``, (3) probes of the
baselines and of the pretrained model on speaker, language and frame-level phonemes.
The report is ``OUT/report.md`` with its PNG plots beside it.
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from speechssl.audio.features import LogMel
from speechssl.audio.io import load_cut
from speechssl.config import opt
from speechssl.data.info import describe, plot_info
from speechssl.data.manifest import labels_of, load_cuts
from speechssl.data.synth import synthesize_corpus
from speechssl.report.markdown import Report
from speechssl.runs import cache_root, start_run


@dataclass
class DemoConfig:
    """Run every stage of the toolkit on the embedded synthetic corpus and write a report."""

    out: Path = opt(Path("runs/demo"), "report folder (report.md and PNG plots)")
    minutes: float = opt(20.0, "minutes of synthetic speech in the corpus")
    seed: int = opt(0, "seed of the corpus and of every stage")
    cache_dir: Path | None = opt(
        None, "cache for the corpus and features (default ~/.cache/speechssl)"
    )
    probe_epochs: int = opt(20, "training epochs of each probe")
    pretrain_steps: int = opt(150, "steps of the MT4SSL pretraining stage (0: skip it)")


def corpus_cuts(minutes: float, seed: int, cache_dir: Path | None = None):
    """The cached synthetic corpus for (minutes, seed), synthesised if it is not there yet.

    The manifest holds absolute paths, so the corpus is written in place and a marker file
    is written last: an interrupted synthesis is never mistaken for a corpus.
    """
    cache = Path(cache_dir) if cache_dir is not None else cache_root()
    folder = cache / f"synth-{minutes:g}min-seed{seed}"
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
    report = Report(out, "speechssl demo")
    report.text(
        f"Embedded synthetic corpus: {cfg.minutes:g} minutes, seed {cfg.seed}. "
        "Every number below comes from this run; its config is `config.yaml` beside this report."
    )

    t0 = time.perf_counter()
    cuts, folder, made = corpus_cuts(cfg.minutes, cfg.seed, cfg.cache_dir)
    took = time.perf_counter() - t0
    report.heading("1. Corpus")
    report.text(f"{'Synthesised' if made else 'Loaded from cache'} in {took:.1f} s: `{folder}`.")
    _corpus_summary(report, cuts, out)
    _logmel_pictures(report, cuts, out)
    upstreams = dict.fromkeys(DEMO_UPSTREAMS, None)
    if cfg.pretrain_steps > 0:
        upstreams["mt4ssl-tiny"] = _pretrain_stage(report, folder / "cuts.jsonl.gz", out, cfg)
    _probes(report, folder / "cuts.jsonl.gz", out, cfg, upstreams)
    return report.write()


DEMO_UPSTREAMS = ("fbank", "mfcc", "tiny")
DEMO_TASKS = ("synth-speaker", "synth-language", "synth-phoneme")


def _pretrain_stage(report: Report, cuts_path: Path, out: Path, cfg: DemoConfig) -> str:
    """Stage 2: MFCC k-means targets, then a short MT4SSL pretraining of ``tiny``."""
    import dataclasses

    from speechssl.config import build
    from speechssl.recipes.kmeans_jobs import KmeansFitConfig, KmeansLabelConfig, fit, label
    from speechssl.recipes.pretrain import PretrainConfig, run_pretrain
    from speechssl.training import read_metrics

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
    )
    run_pretrain(pcfg)
    took = time.perf_counter() - t0
    records = read_metrics(run / "metrics.jsonl")
    _loss_plot(records, out / "pretrain.png")
    report.heading("2. MT4SSL pretraining")
    report.text(
        f"k-means (k={km['k']}) on MFCC of the corpus, {len(labels)} cuts labelled at "
        f"{labels.info.label_rate:g} Hz; then `tiny` pretrained for {cfg.pretrain_steps} steps "
        f"with k-means + EMA-teacher targets (1:1, config `mt4ssl-tiny`) in {took:.0f} s. "
        f"Run folder: `pretrain/`. Final loss {records[-1]['loss']:.3f} "
        f"(k-means accuracy on masked frames {records[-1].get('kmeans_acc', float('nan')):.2f})."
    )
    report.image(out / "pretrain.png", "pretraining losses")
    return str(run)


def _loss_plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    keys = [k for k in ("loss", "loss_kmeans", "loss_teacher") if k in records[0]]
    fig, ax = plt.subplots(figsize=(6, 3))
    for k in keys:
        ax.plot(steps, [r[k] for r in records], label=k)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _probes(report: Report, cuts_path: Path, out: Path, cfg: DemoConfig, upstreams: dict) -> None:
    """Probe every upstream (baselines, and the pretrained model if there is one)."""
    from speechssl.recipes.probe import ProbeConfig, run_probe

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
        "language column: the espeak voice variants (m1, f2, ...) recur across languages, so "
        "pooled spectral statistics of an unseen voice resemble the same variant in another "
        "language; frozen features therefore transfer language poorly to unseen speakers."
    )


def _corpus_summary(report: Report, cuts, out: Path) -> None:
    info = describe(cuts)
    report.text(
        f"{info.utterances} utterances, {info.hours * 60:.1f} minutes, "
        f"{len(info.labels['speaker'])} voices in {len(info.labels['language'])} languages."
    )
    seconds = defaultdict(float)
    count = defaultdict(int)
    meta = {}
    for c in cuts:
        lab = labels_of(c)
        seconds[lab["speaker"]] += c.duration
        count[lab["speaker"]] += 1
        meta[lab["speaker"]] = (lab["language"], lab["gender"])
    rows = [
        [spk, meta[spk][0], meta[spk][1], count[spk], f"{seconds[spk] / 60:.2f}"]
        for spk in sorted(seconds)
    ]
    report.table(["voice", "language", "gender", "utterances", "minutes"], rows)
    per_lang = defaultdict(float)
    for spk, (lang, _) in meta.items():
        per_lang[lang] += seconds[spk]
    report.table(
        ["language", "minutes"], [[k, f"{v / 60:.2f}"] for k, v in sorted(per_lang.items())]
    )
    path = plot_info(info, out / "corpus.png", title="synthetic corpus")
    report.image(path, "durations and label counts")


def _logmel_pictures(report: Report, cuts, out: Path) -> None:
    """One log-mel picture per language, with its phoneme alignment underneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = {}
    for c in cuts:
        first.setdefault(labels_of(c)["language"], c)
    langs = sorted(first)
    logmel = LogMel()
    fig, axes = plt.subplots(len(langs), 1, figsize=(10, 2.3 * len(langs)), squeeze=False)
    for ax, lang in zip(axes[:, 0], langs, strict=True):
        cut = first[lang]
        wave = torch.from_numpy(load_cut(cut))[None]
        feats = logmel(wave).features[0].numpy()
        ax.imshow(feats.T, origin="lower", aspect="auto", cmap="magma", interpolation="nearest")
        text = labels_of(cut)["text"]
        ax.set_title(f'{lang} - {labels_of(cut)["speaker"]}: "{text}"', fontsize=9)
        ax.set_ylabel("mel bin")
        if cut.has_custom("phonemes"):
            ali = cut.load_phonemes()
            change = np.flatnonzero(np.diff(ali)) + 1
            for x in change:
                ax.axvline(x, color="white", lw=0.3, alpha=0.6)
    axes[-1, 0].set_xlabel("frame (10 ms); white lines: phoneme boundaries from espeak")
    fig.tight_layout()
    path = out / "logmel.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    report.heading("Log-mel, one utterance per language", level=3)
    report.image(path, "log-mel per language")
