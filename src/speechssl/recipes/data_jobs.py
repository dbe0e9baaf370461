"""The data jobs of the CLI: prepare a corpus, split it by speaker, describe it, shard it.

Each job takes a typed config, writes its result and a run folder beside it, and returns
what the CLI shows. Python users can call the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from speechssl.config import opt
from speechssl.runs import run_dir_for, start_run

if TYPE_CHECKING:
    from speechssl.data.info import CutSetInfo
    from speechssl.data.manifest import PrepareReport
    from speechssl.data.shar import ExportReport

# The configs import nothing heavy (a command's --help reads them); the jobs below import
# lhotse and the library where they run.


@dataclass
class FolderPrepare:
    """Your own data: a folder of audio plus a CSV with a 'path' column and label columns
    (without a CSV, every audio file under the folder, unlabelled: noise or RIR folders)."""

    audio_dir: Path = opt(help="folder holding the audio files")
    out: Path = opt(help="output CutSet, e.g. cuts.jsonl.gz")
    labels: Path | None = opt(
        None,
        "CSV with a 'path' column (relative to --audio-dir) and label columns; without it, "
        "every audio file under --audio-dir is taken, unlabelled",
    )
    label_columns: list[str] | None = opt(
        None, "label columns to keep (default: all but path and file metadata such as duration_s)"
    )
    skip_bad: bool = opt(False, "go on without unusable rows, reporting how many and why")


@dataclass
class FsddPrepare:
    """Free Spoken Digit Dataset: labels parsed from <digit>_<speaker>_<index> file names."""

    root: Path = opt(help="FSDD folder (its recordings/ or any folder holding the files)")
    out: Path = opt(help="output CutSet, e.g. fsdd.jsonl.gz")
    skip_bad: bool = opt(False, "go on without unusable files, reporting how many and why")


@dataclass
class RavdessPrepare:
    """RAVDESS speech: labels parsed from its MM-VV-EE-II-SS-RR-AA file names."""

    root: Path = opt(help="RAVDESS folder holding Actor_XX/ folders")
    out: Path = opt(help="output CutSet, e.g. ravdess.jsonl.gz")
    skip_bad: bool = opt(False, "go on without unusable files, reporting how many and why")


@dataclass
class LibrispeechPrepare:
    """LibriSpeech parts in their original layout (found by lhotse's recipe)."""

    root: Path = opt(help="folder holding the parts, e.g. LibriSpeech/ with dev-clean/ inside")
    out: Path = opt(help="output CutSet, e.g. librispeech.jsonl.gz")
    parts: list[str] | None = opt(
        None, "parts to take, e.g. dev-clean,test-clean (default: all found)"
    )
    skip_bad: bool = opt(False, "go on without unusable files, reporting how many and why")


@dataclass
class VoxcelebPrepare:
    """VoxCeleb1 (wav/ + vox1_meta.csv, via lhotse's recipe) and/or VoxCeleb2 converted to wav."""

    out: Path = opt(help="output CutSet, e.g. voxceleb.jsonl.gz")
    vox1: Path | None = opt(None, "VoxCeleb1 root (holding wav/ and vox1_meta.csv)")
    vox2: Path | None = opt(None, "VoxCeleb2 root converted to wav/flac (with vox2_meta.csv)")
    skip_bad: bool = opt(False, "go on without unusable files, reporting how many and why")


PREPARE_CONFIGS = {
    "folder": FolderPrepare,
    "fsdd": FsddPrepare,
    "ravdess": RavdessPrepare,
    "librispeech": LibrispeechPrepare,
    "voxceleb": VoxcelebPrepare,
}


def prepare(recipe: str, cfg) -> tuple[Path, PrepareReport]:
    """Find, check and write the cuts of a corpus; returns the output path and the report."""
    from speechssl.data import corpora
    from speechssl.data.manifest import build_cutset, save_cuts

    if recipe == "folder":
        rows = corpora.folder_rows(cfg.audio_dir, cfg.labels, cfg.label_columns)
    elif recipe == "fsdd":
        rows = corpora.fsdd_rows(cfg.root)
    elif recipe == "ravdess":
        rows = corpora.ravdess_rows(cfg.root)
    elif recipe == "librispeech":
        rows = corpora.librispeech_rows(cfg.root, cfg.parts)
    elif recipe == "voxceleb":
        rows = corpora.voxceleb_rows(cfg.vox1, cfg.vox2)
    else:
        raise ValueError(recipe)
    cuts, report = build_cutset(rows, skip_bad=cfg.skip_bad)
    out = save_cuts(cuts, cfg.out)
    run = start_run(run_dir_for(out), f"data prepare {recipe}", cfg)
    (run / "report.txt").write_text(report.render() + "\n")
    return out, report


@dataclass
class SplitConfig:
    """Split a CutSet by speaker (seeded); no speaker is ever in two splits."""

    cuts: Path = opt(help="input CutSet")
    out: Path = opt(help="folder for <split>.jsonl.gz files")
    ratios: str = opt("train=0.8,dev=0.1,test=0.1", "NAME=SHARE pairs of utterance shares")
    seed: int = opt(0, "shuffling seed", ge=0)
    by: str = opt("speaker", "label that identifies a speaker")


def split(cfg: SplitConfig) -> dict[str, tuple[Path, int, int]]:
    """Write one CutSet per split; returns split -> (path, utterances, speakers)."""
    from speechssl.data.manifest import load_cuts, save_cuts
    from speechssl.data.split import parse_ratios, split_by_speaker

    cuts = load_cuts(cfg.cuts)
    parts = split_by_speaker(cuts, parse_ratios(cfg.ratios), seed=cfg.seed, field=cfg.by)
    out = {}
    for name, part in parts.items():
        path = save_cuts(part, Path(cfg.out) / f"{name}.jsonl.gz")
        speakers = {c.supervisions[0].custom[cfg.by] for c in part}
        out[name] = (path, len(part), len(speakers))
    start_run(Path(cfg.out) / "split.run", "data split", cfg, seed=cfg.seed)
    return out


@dataclass
class InfoConfig:
    """Describe a CutSet: hours, utterances, label counts, sample rates, durations."""

    cuts: Path = opt(help="CutSet to describe")
    plot: Path | None = opt(None, "also write a PNG (duration histogram, label counts) here")


def info(cfg: InfoConfig) -> CutSetInfo:
    from speechssl.data.info import describe
    from speechssl.data.manifest import load_cuts
    from speechssl.report.cutset_info import plot_info

    summary = describe(load_cuts(cfg.cuts))
    if cfg.plot is not None:
        plot_info(summary, cfg.plot, title=Path(cfg.cuts).name)
    return summary


@dataclass
class ExportSharConfig:
    """Write a CutSet as lhotse Shar shards (cut manifests + FLAC audio in tars), which every
    job reads like a manifest (pass the folder as --cuts / --data.train); rerunning an
    interrupted export finishes it."""

    cuts: Path = opt(help="input CutSet (a manifest, or a Shar directory to re-shard)")
    out: Path = opt(help="output folder for cuts.NNNNNN.jsonl.gz + recording.NNNNNN.tar")
    shard_size: int = opt(1000, "cuts per shard", ge=1)
    shuffle: bool = opt(
        True, "shuffle the cuts (seeded) before sharding, so every shard samples the whole corpus"
    )
    seed: int = opt(0, "shuffling seed", ge=0)


def export_shar(cfg: ExportSharConfig) -> ExportReport:
    """Export ``cfg.cuts`` to the Shar directory ``cfg.out``; its run folder is beside it."""
    from speechssl.data.manifest import load_cuts
    from speechssl.data.shar import export_shar as write_shar

    cuts = load_cuts(cfg.cuts)
    start_run(run_dir_for(Path(cfg.out)), "data export-shar", cfg, seed=cfg.seed)
    return write_shar(cuts, cfg.out, cfg.shard_size, cfg.shuffle, cfg.seed)
