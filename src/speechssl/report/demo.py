"""Tables and figures of ``speechssl demo``'s report (the recipe computes, these draw)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from speechssl.data.manifest import labels_of
from speechssl.report.markdown import Report
from speechssl.report.plots import pyplot

__all__ = ["LogMelExample", "corpus_tables", "dino_figure", "logmel_figure", "pretrain_figure"]


def corpus_tables(report: Report, cuts) -> None:
    """Utterances and minutes per voice (with the languages it speaks and its gender), then
    minutes per language, summed over the cuts (a voice speaks several languages)."""
    seconds: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    languages: dict[str, set[str]] = defaultdict(set)
    gender: dict[str, str] = {}
    per_lang: dict[str, float] = defaultdict(float)
    for c in cuts:
        lab = labels_of(c)
        spk = lab["speaker"]
        seconds[spk] += c.duration
        count[spk] += 1
        languages[spk].add(lab["language"])
        gender[spk] = lab["gender"]
        per_lang[lab["language"]] += c.duration
    rows = [
        [spk, ",".join(sorted(languages[spk])), gender[spk], count[spk], f"{seconds[spk] / 60:.2f}"]
        for spk in sorted(seconds)
    ]
    report.table(["voice", "languages", "gender", "utterances", "minutes"], rows)
    report.table(
        ["language", "minutes"], [[k, f"{v / 60:.2f}"] for k, v in sorted(per_lang.items())]
    )


class LogMelExample(NamedTuple):
    """One utterance to picture: a title, its log-mel ``[F, mels]`` and phoneme boundaries."""

    title: str
    logmel: np.ndarray
    boundaries: np.ndarray  # frame indices where the phoneme changes (may be empty)


def logmel_figure(examples: Sequence[LogMelExample], path: Path) -> Path:
    """A log-mel picture per example, one above the other, phoneme boundaries in white."""
    plt = pyplot()
    fig, axes = plt.subplots(len(examples), 1, figsize=(10, 2.3 * len(examples)), squeeze=False)
    for ax, ex in zip(axes[:, 0], examples, strict=True):
        ax.imshow(ex.logmel.T, origin="lower", aspect="auto", cmap="magma", interpolation="nearest")
        ax.set_title(ex.title, fontsize=9)
        ax.set_ylabel("mel bin")
        for x in ex.boundaries:
            ax.axvline(x, color="white", lw=0.3, alpha=0.6)
    axes[-1, 0].set_xlabel("frame (10 ms); white lines: phoneme boundaries from espeak")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def pretrain_figure(records: list[dict], path: Path) -> Path:
    """Losses against step, and the live indicators (RankMe, Davies-Bouldin) per layer."""
    plt = pyplot()
    train = [r for r in records if "loss" in r]
    live = [r for r in records if "monitor_seconds" in r]
    fig, axes = plt.subplots(1, 3 if live else 1, figsize=(13 if live else 6, 3), squeeze=False)
    ax = axes[0][0]
    for k in ("loss", "loss_kmeans", "loss_teacher"):
        if train and k in train[0]:
            ax.plot([r["step"] for r in train], [r[k] for r in train], label=k)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    for ax, name in zip(axes[0][1:], ("rankme", "davies_bouldin"), strict=False):
        keys = sorted({k for r in live for k in r if k.endswith("/" + name)})
        for k in keys:
            ax.plot([r["step"] for r in live], [r.get(k) for r in live], marker="o", ms=3,
                    label=k.split("/")[1])  # fmt: skip
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def dino_figure(records: list[dict], path: Path) -> Path:
    """DINO loss, teacher and student entropies, and the embedding std against step."""
    plt = pyplot()
    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    axes[0].plot(steps, [r["dino_loss"] for r in records])
    axes[0].set_ylabel("DINO loss")
    for k in ("teacher_entropy", "student_entropy"):
        axes[1].plot(steps, [r[k] for r in records], label=k)
    axes[1].legend(fontsize=7)
    axes[1].set_ylabel("entropy (nats)")
    axes[2].plot(steps, [r["embedding_std"] for r in records])
    axes[2].set_ylabel("std of L2-normalised embeddings")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
