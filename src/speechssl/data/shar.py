"""Corpora too large for one manifest: lhotse Shar directories (cut shards + FLAC audio in tars).

A Shar directory holds numbered shards, each one cut manifest and one tar of the cuts' audio::

    cuts.000000.jsonl.gz       the cuts of shard 0 (labels in the supervisions, as in a manifest)
    recording.000000.tar       their audio, one FLAC per cut, in the same order
    cuts.000001.jsonl.gz ...

Reading is sequential (a tar is streamed along its manifest), so a reader needs no random
access to thousands of small files. :func:`load_shar` gives a *lazy* CutSet whose cuts carry
their audio in memory; :func:`speechssl.data.manifest.load_cuts` calls it for a directory, so
every job that takes ``--cuts`` / ``--data.train`` reads a Shar directory as it reads a
manifest. Jobs that need the whole list (features, k-means, probes) hold the FLAC bytes of
every cut in memory; training streams them through the sampler's buffer.

:func:`export_shar` writes one: cuts shuffled (seeded) so that every shard is a sample of the
whole corpus (a streaming shuffle then mixes speakers within the sampler's buffer), each shard
written into a work folder beside the output and moved in by rename, audio first and its cut
manifest last. The work folder ``.<out>.partial/`` holds the export's plan while it runs; an
interrupted export leaves it behind, rerunning the same export finishes the missing shards, and
:func:`load_shar` refuses a directory whose export has not finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lhotse import CutSet
from lhotse.cut import Cut

from speechssl.audio.io import load_cut
from speechssl.errors import UserError
from speechssl.progress import Progress

__all__ = ["SHAR_FIELDS", "ExportReport", "export_shar", "is_shar_dir", "load_shar", "shar_shards"]

# Audio as FLAC (lossless for 16-bit audio, about half the size of WAV).
SHAR_FIELDS = {"recording": "flac"}
_CUTS_PREFIX, _CUTS_SUFFIX = "cuts.", ".jsonl.gz"


def partial_dir(out: str | Path) -> Path:
    """The work folder of an export to ``out`` (beside it: files inside a Shar directory
    would be taken for fields by lhotse's own reader)."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def is_shar_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding Shar cut shards (``cuts.NNNNNN.jsonl.gz``)."""
    path = Path(path)
    return path.is_dir() and any(path.glob(f"{_CUTS_PREFIX}*{_CUTS_SUFFIX}"))


def shar_shards(folder: str | Path) -> dict[str, list[str]]:
    """The shard files of a finished Shar directory: ``{"cuts": [...], "recording": [...]}``.

    Raises:
        UserError: not a Shar directory, an export to it still running or interrupted, or a
            shard without its audio (or audio without its cuts).
    """
    folder = Path(folder)
    partial = partial_dir(folder)
    if partial.exists():
        raise UserError(
            f"the Shar export to {folder} has not finished ({partial} is still there): run the "
            "same `speechssl data export-shar` again to complete it"
        )
    cuts = sorted(folder.glob(f"{_CUTS_PREFIX}*{_CUTS_SUFFIX}"))
    if not cuts:
        raise UserError(
            f"{folder} is a folder but not a lhotse Shar directory (no cuts.NNNNNN.jsonl.gz "
            "in it); pass a cut manifest (.jsonl.gz) or a folder made by `speechssl data "
            "export-shar`"
        )
    indices = [c.name[len(_CUTS_PREFIX) : -len(_CUTS_SUFFIX)] for c in cuts]
    recordings = [folder / f"recording.{i}.tar" for i in indices]
    missing = [r.name for r in recordings if not r.is_file()]
    extra = sorted(
        p.name for p in folder.glob("recording.*.tar") if p.name[10:-4] not in set(indices)
    )
    if missing or extra:
        what = f"no {', '.join(missing[:3])}" if missing else f"{', '.join(extra[:3])} without cuts"
        raise UserError(
            f"the Shar directory {folder} is incomplete ({what}); export it again into an "
            "empty folder"
        )
    return {"cuts": [str(c) for c in cuts], "recording": [str(r) for r in recordings]}


def _drop_reader_fields(cut: Cut) -> Cut:
    """Remove the reader's bookkeeping (``shard_origin``, ``shar_epoch``) from ``cut.custom``:
    not labels, and a path would not survive saving the cuts as a manifest."""
    custom = cut.custom
    if custom:
        custom.pop("shard_origin", None)
        custom.pop("shar_epoch", None)
        if not custom:
            cut.custom = None
    return cut


def load_shar(folder: str | Path) -> CutSet:
    """A lazy CutSet over a Shar directory, its cuts carrying their audio (in memory).

    Shards are read in their order, every pass the same, so every rank of a distributed run
    sees the same cut sequence (the samplers shuffle it, seeded by epoch). ``len()`` counts
    the cut manifests' lines without reading any audio.
    """
    from lhotse.shar import LazySharIterator

    fields = shar_shards(folder)
    n = len(fields["cuts"])
    try:
        cuts = CutSet(LazySharIterator(fields=fields, cut_map_fns=[_drop_reader_fields] * n))
        empty = len(cuts) == 0
    except Exception as exc:
        raise UserError(f"{folder} is not a readable Shar directory ({exc})") from None
    if empty:
        raise UserError(f"the Shar directory {folder} holds no cuts")
    return cuts


@dataclass
class ExportReport:
    """What an export did: shards written now and found already done (a resumed export)."""

    out: Path
    cuts: int
    shards: int
    written: int
    resumed: int
    seconds: float
    bytes: int


def _plan(ids: list[str], shard_size: int, shuffle: bool, seed: int) -> dict:
    digest = hashlib.sha1("\n".join(ids).encode()).hexdigest()
    return {"cuts": len(ids), "ids_sha1": digest, "shard_size": shard_size, "shuffle": shuffle,
            "seed": seed}  # fmt: skip


def _write_shard(cuts: list[Cut], work: Path) -> None:
    from lhotse.shar import SharWriter

    with SharWriter(str(work), fields=SHAR_FIELDS, shard_size=None) as writer:
        for cut in cuts:
            try:
                writer.write(cut)
            except Exception:
                load_cut(cut)  # a UserError that names the cut and its file, if unreadable
                raise


def export_shar(
    cuts: Iterable[Cut],
    out: str | Path,
    shard_size: int = 1000,
    shuffle: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> ExportReport:
    """Write ``cuts`` as a Shar directory ``out`` (audio as FLAC), resuming an interrupted export.

    Args:
        cuts: the cuts (read once into a list; their order, or the seeded shuffle of it, is the
            shards' order).
        out: the output folder: new, empty, or an interrupted export of the same cuts with the
            same options.
        shard_size: cuts per shard.
        shuffle: shuffle the cuts (``seed``) before cutting them into shards.
        progress: show a progress bar.

    Raises:
        UserError: ``out`` holds other files, a finished export, or an interrupted export of
            other cuts or options.
    """
    import numpy as np

    if shard_size < 1:
        raise UserError(f"shard size must be at least 1, got {shard_size}")
    out = Path(out)
    cuts = list(cuts)
    if not cuts:
        raise UserError("no cuts to export")
    if shuffle:
        cuts = [cuts[i] for i in np.random.default_rng(seed).permutation(len(cuts))]
    plan = _plan([c.id for c in cuts], shard_size, shuffle, seed)
    partial = partial_dir(out)
    plan_file = partial / "plan.json"
    if partial.exists():
        try:
            old = json.loads(plan_file.read_text())
        except (OSError, ValueError):
            old = None
        if old != plan:
            raise UserError(
                f"{out} holds an unfinished Shar export of other cuts or with other options "
                f"(see {plan_file}); rerun it with the same ones, or delete {out} and {partial}"
            )
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        if is_shar_dir(out):
            raise UserError(
                f"{out} already holds a finished Shar export; delete it to export again"
            )
        raise UserError(f"{out} exists and is not an empty folder; choose a new output folder")
    else:
        try:
            partial.mkdir(parents=True)
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {out}: {exc.strerror}") from None
        plan_file.write_text(json.dumps(plan, indent=1) + "\n")
    out.mkdir(parents=True, exist_ok=True)  # a resumed export whose folder was removed

    shards = [cuts[i : i + shard_size] for i in range(0, len(cuts), shard_size)]
    done = [(out / f"{_CUTS_PREFIX}{i:06d}{_CUTS_SUFFIX}").is_file() for i in range(len(shards))]
    bar = Progress(len(cuts), "exporting to Shar", "cut", enabled=progress)
    bar.update(sum(len(s) for s, d in zip(shards, done, strict=True) if d))
    for i, (shard, finished) in enumerate(zip(shards, done, strict=True)):
        if finished:
            continue
        work = partial / f"shard.{i:06d}"
        shutil.rmtree(work, ignore_errors=True)  # left by an interrupted run
        work.mkdir()
        _write_shard(shard, work)
        # Audio first, manifest last: a shard counts as done once its manifest is in place.
        os.replace(work / "recording.tar", out / f"recording.{i:06d}.tar")
        os.replace(work / "cuts.jsonl.gz", out / f"{_CUTS_PREFIX}{i:06d}{_CUTS_SUFFIX}")
        work.rmdir()
        bar.update(len(shard))
    bar.close()
    shutil.rmtree(partial)
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return ExportReport(
        out=out,
        cuts=len(cuts),
        shards=len(shards),
        written=len(shards) - sum(done),
        resumed=sum(done),
        seconds=sum(c.duration for c in cuts),
        bytes=size,
    )
