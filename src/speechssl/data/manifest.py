"""From labelled audio files to a lhotse CutSet, checking every file on the way.

Every recipe (folder + CSV, fsdd, ravdess, librispeech, voxceleb) finds its files and
labels in its own way and hands a list of :class:`Row` to :func:`build_cutset`, so that the
checks and the report are the same everywhere. Nothing is dropped silently: a bad row is
either an error (the default) or skipped and counted (``skip_bad``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lhotse import CutSet, SupervisionSegment

from speechssl.audio.io import (
    SAMPLE_RATE,
    AudioFileError,
    anchor_paths,
    inspect_file,
    recording,
)
from speechssl.errors import UserError
from speechssl.progress import Progress

# Columns of a labels CSV that describe the file rather than label it.
METADATA_COLUMNS = ("path", "duration", "duration_s", "sample_rate", "num_samples", "channels")


@dataclass
class Row:
    """One utterance to be: its audio file, its labels and where it came from."""

    path: Path
    labels: dict[str, str]
    origin: str = ""  # e.g. "labels.csv line 7"; empty when found by walking a folder
    cut_id: str = ""
    text: str | None = None
    error: str = ""  # set by a recipe that already knows the row is unusable


@dataclass
class Problem:
    origin: str
    file: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.origin}: " if self.origin else ""
        return f"{where}{self.file}: {self.reason}"


@dataclass
class PrepareReport:
    """What happened to every row: kept, or which problem it had; and what loading will change."""

    rows: int = 0
    kept: int = 0
    problems: list[Problem] = field(default_factory=list)
    resampled: Counter = field(default_factory=Counter)  # native rate -> number of files
    downmixed: int = 0
    skipped: bool = False

    def render(self) -> str:
        lines = [f"{self.rows} rows, {self.kept} utterances kept"]
        if self.resampled:
            rates = ", ".join(f"{n} at {sr} Hz" for sr, n in sorted(self.resampled.items()))
            lines.append(f"resampled to {SAMPLE_RATE} Hz on load: {rates}")
        if self.downmixed:
            lines.append(f"down-mixed to mono on load: {self.downmixed} multi-channel files")
        if self.problems:
            verb = "skipped" if self.skipped else "bad"
            reasons = Counter(p.reason.split(" (")[0].split(":")[0] for p in self.problems)
            summary = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
            lines.append(f"{len(self.problems)} rows {verb} ({summary}):")
            lines.extend(f"  {p}" for p in self.problems)
        return "\n".join(lines)


class BadInputError(UserError):
    """Some rows are unusable; the report names every one."""

    def __init__(self, report: PrepareReport):
        self.report = report
        n = len(report.problems)
        super().__init__(
            f"{n} of {report.rows} rows are unusable (listed above); fix them or pass --skip-bad"
        )


def build_cutset(
    rows: list[Row], skip_bad: bool = False, progress: bool = True, workers: int = 2
) -> tuple[CutSet, PrepareReport]:
    """Check every row and make one cut per good row, labels in the supervision's custom fields.

    Args:
        rows: the utterances a recipe found.
        skip_bad: go on without bad rows (counted in the report) instead of raising.
        progress: show a progress bar while files are decoded.
        workers: threads decoding files (libsndfile releases the GIL).

    Raises:
        BadInputError: some rows are bad and ``skip_bad`` is false.
    """
    report = PrepareReport(rows=len(rows), skipped=skip_bad)
    if not rows:
        raise UserError("no audio files found")
    problems: dict[int, Problem] = {}
    seen_ids: dict[str, int] = {}
    for i, row in enumerate(rows):
        if row.error:
            problems[i] = Problem(row.origin, str(row.path), row.error)
            continue
        empty = [k for k, v in row.labels.items() if v is None or str(v).strip() == ""]
        if empty:
            problems[i] = Problem(
                row.origin, str(row.path), f"empty label value in {', '.join(empty)}"
            )
            continue
        cut_id = row.cut_id or row.path.with_suffix("").name
        if cut_id in seen_ids:
            problems[i] = Problem(
                row.origin,
                str(row.path),
                f"duplicate id '{cut_id}' (also {rows[seen_ids[cut_id]].path})",
            )
            continue
        seen_ids[cut_id] = i
        row.cut_id = cut_id

    todo = [i for i in range(len(rows)) if i not in problems]

    def check(i: int):
        try:
            return i, inspect_file(rows[i].path), None
        except AudioFileError as exc:
            return i, None, str(exc)

    infos = {}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        bar = Progress(len(todo), "checking audio", "file", enabled=progress, leave=False)
        for i, info, error in pool.map(check, todo):
            if error is not None:
                problems[i] = Problem(rows[i].origin, str(rows[i].path), error)
            else:
                infos[i] = info
            bar.update()
        bar.close()

    report.problems = [problems[i] for i in sorted(problems)]
    if report.problems and not skip_bad:
        raise BadInputError(report)

    cuts = []
    for i in sorted(infos):
        row, info = rows[i], infos[i]
        # Absolute, so that the manifest works from any working directory.
        rec = recording(os.path.abspath(row.path), recording_id=row.cut_id)
        if info.samplerate != SAMPLE_RATE:
            report.resampled[info.samplerate] += 1
        if info.channels > 1:
            report.downmixed += 1
        labels = {k: str(v).strip() for k, v in row.labels.items()}
        sup = SupervisionSegment(
            id=row.cut_id,
            recording_id=rec.id,
            start=0.0,
            duration=rec.duration,
            channel=rec.channel_ids if len(rec.channel_ids) > 1 else 0,
            speaker=labels.get("speaker"),
            gender=labels.get("gender"),
            language=labels.get("language"),
            text=row.text if row.text is not None else labels.get("text"),
            custom=labels,
        )
        cut = rec.to_cut()
        cut.supervisions = [sup]
        cuts.append(cut)
    report.kept = len(cuts)
    if not cuts:
        raise UserError("no usable audio left after skipping bad rows:\n" + report.render())
    return CutSet.from_cuts(cuts), report


def load_cut_sets(paths: Sequence[str | Path]) -> CutSet:
    """Several manifests or Shar directories as one CutSet (cut ids must be unique across
    them; checked only when all are manifests, a Shar directory is chained unread)."""
    if not paths:
        raise UserError("no cut manifest given")
    sets = [load_cuts(p) for p in paths]
    if len(sets) == 1:
        return sets[0]
    if any(s.is_lazy for s in sets):  # a Shar directory: chain, read nothing now
        from lhotse.lazy import LazyIteratorChain

        return CutSet(LazyIteratorChain(*sets))
    try:
        return CutSet.from_cuts(c for s in sets for c in s)
    except AssertionError as exc:  # lhotse asserts unique ids
        raise UserError(
            f"the manifests {', '.join(map(str, paths))} share cut ids: {exc}"
        ) from None


def load_cuts(path: str | Path) -> CutSet:
    """Read a CutSet manifest, with a clear error when it is missing or not a CutSet.

    Relative file paths in it are taken relative to the manifest's own folder
    (:func:`~speechssl.audio.io.anchor_paths`), so it reads the same from any directory.
    A folder is read as a lhotse Shar directory (:func:`speechssl.data.shar.load_shar`): a
    lazy CutSet whose cuts carry their audio.
    """
    path = Path(path)
    if path.is_dir():
        from speechssl.data.shar import load_shar

        return load_shar(path)
    if not path.is_file():
        raise UserError(f"cut manifest not found: {path}")
    try:
        cuts = CutSet.from_file(path)  # None for an empty file
        if cuts is None:
            raise UserError(f"cut manifest is empty (no cuts in it): {path}")
        cuts = cuts.to_eager()
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path} is not a lhotse CutSet manifest ({exc})") from None
    for cut in cuts:
        anchor_paths(cut, path.parent)
    if len(cuts) == 0:
        raise UserError(f"cut manifest is empty: {path}")
    return cuts


def save_cuts(cuts: CutSet, path: str | Path) -> Path:
    """Write a CutSet (``.jsonl.gz`` recommended), creating the parent folder."""
    path = Path(path)
    if not (path.name.endswith(".jsonl.gz") or path.name.endswith(".jsonl")):
        raise UserError(f"output must end in .jsonl.gz or .jsonl: {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {path.parent}: {exc.strerror}") from None
    try:
        cuts.to_file(path)
    except TypeError as exc:  # bytes in a cut: audio held in memory, as a Shar reader gives it
        if "bytes" not in str(exc):
            raise
        path.unlink(missing_ok=True)
        raise UserError(
            f"cannot write {path}: its cuts hold their audio in memory (read from a lhotse Shar "
            "directory), which a manifest cannot store; split or filter the manifest before "
            "`speechssl data export-shar`"
        ) from None
    return path


def labels_of(cut) -> dict[str, str]:
    """The label fields of a cut (its first supervision's custom fields)."""
    if not cut.supervisions:
        return {}
    return dict(cut.supervisions[0].custom or {})
