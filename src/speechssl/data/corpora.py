"""Corpus recipes: find the audio files and labels of a corpus, as :class:`Row` s.

``folder`` is the entry point for users' own data (a folder of audio plus, optionally, a CSV of
labels).
``fsdd`` and ``ravdess`` parse labels from their file names; ``librispeech`` and
``voxceleb`` let lhotse's recipes find files and transcripts. All of them end in
:func:`speechssl.data.manifest.build_cutset`, which checks every file.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from speechssl.data.manifest import METADATA_COLUMNS, Row
from speechssl.errors import UserError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".sph", ".opus")

RECIPES = ("folder", "fsdd", "ravdess", "librispeech", "voxceleb")


def folder_rows(
    audio_dir: str | Path,
    labels_csv: str | Path | None = None,
    label_columns: list[str] | None = None,
) -> list[Row]:
    """Rows of a folder of audio described by a CSV with a ``path`` column (relative to the folder).

    Every other column is a label unless it describes the file (``duration_s``,
    ``sample_rate``, ...) or ``label_columns`` names the ones to keep. Without a CSV every
    audio file under the folder is a row without labels (noise or RIR collections).
    """
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise UserError(f"audio folder not found: {audio_dir}")
    if labels_csv is None:
        if label_columns:
            raise UserError("--label-columns needs a labels CSV (--labels)")
        files = _audio_files(audio_dir, "folder")
        return [
            Row(f, {}, cut_id=f.relative_to(audio_dir).with_suffix("").as_posix()) for f in files
        ]
    labels_csv = Path(labels_csv)
    if not labels_csv.is_file():
        raise UserError(f"labels CSV not found: {labels_csv}")
    with open(labels_csv, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "path" not in header:
            found = ", ".join(header) if header else "nothing"
            raise UserError(f"{labels_csv} has no 'path' column (found: {found})")
        if label_columns:
            missing = [c for c in label_columns if c not in header]
            if missing:
                raise UserError(f"{labels_csv} has no column {', '.join(missing)}")
            keep = list(label_columns)
        else:
            keep = [h for h in header if h not in METADATA_COLUMNS]
        rows = []
        for line, record in enumerate(reader, start=2):
            record = {(k or "").strip(): v for k, v in record.items()}
            rel = (record.get("path") or "").strip()
            origin = f"{labels_csv.name} line {line}"
            labels = {c: record.get(c) for c in keep}
            if not rel:
                rows.append(Row(Path("<empty path>"), {}, origin, error="empty path"))
                continue
            cut_id = str(Path(rel).with_suffix("")).replace("\\", "/")
            rows.append(Row(audio_dir / rel, labels, origin, cut_id=cut_id))
    if not rows:
        raise UserError(f"{labels_csv} lists no files")
    return rows


# Speakers of the Free Spoken Digit Dataset (from its README): all male.
FSDD_SPEAKERS = {
    "george": ("male", "GRC"),
    "jackson": ("male", "USA"),
    "lucas": ("male", "DEU"),
    "nicolas": ("male", "BEL/French"),
    "theo": ("male", "USA"),
    "yweweler": ("male", "DEU"),
}
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")


def fsdd_rows(root: str | Path) -> list[Row]:
    """Rows of the Free Spoken Digit Dataset: ``{digit}_{speaker}_{index}.wav`` files.

    Labels: digit, speaker, gender, accent, index, split (``test`` for index 0-4, the
    dataset's official split). A file whose name does not parse becomes a bad row.
    """
    files = _audio_files(root, "fsdd")
    rows = []
    for p in files:
        m = _FSDD_NAME.match(p.stem)
        if not m:
            rows.append(Row(p, {}, error="file name is not <digit>_<speaker>_<index>"))
            continue
        digit, speaker, index = m.group(1), m.group(2), int(m.group(3))
        gender, accent = FSDD_SPEAKERS.get(speaker, ("unknown", "unknown"))
        labels = {
            "digit": digit,
            "speaker": speaker,
            "gender": gender,
            "accent": accent,
            "index": str(index),
            "split": "test" if index < 5 else "train",
        }
        rows.append(Row(p, labels, cut_id=p.stem))
    _check_some_named(rows, Path(root), "fsdd", "<digit>_<speaker>_<index>.wav")
    return rows


RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
RAVDESS_INTENSITY = {"01": "normal", "02": "strong"}
_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def ravdess_rows(root: str | Path) -> list[Row]:
    """Rows of RAVDESS speech: ``MM-VV-EE-II-SS-RR-AA`` file names under ``Actor_AA/``.

    Labels: speaker (``ravdess_AA``), gender (odd actors male, even female), emotion,
    intensity, statement, repetition. Song files (vocal channel 02) are not speech and are
    reported as bad rows rather than mixed in.
    """
    rows = []
    root = Path(root)
    for p in _audio_files(root, "ravdess"):
        m = _RAVDESS_NAME.match(p.stem)
        if not m or m.group(3) not in RAVDESS_EMOTIONS or m.group(4) not in RAVDESS_INTENSITY:
            rows.append(Row(p, {}, error="file name is not a RAVDESS identifier"))
            continue
        _, channel, emo, intensity, statement, repetition, actor = m.groups()
        if channel != "01":
            rows.append(Row(p, {}, error="song, not speech (vocal channel 02)"))
            continue
        labels = {
            "speaker": f"ravdess_{actor}",
            "gender": "male" if int(actor) % 2 else "female",
            "emotion": RAVDESS_EMOTIONS[emo],
            "intensity": RAVDESS_INTENSITY[intensity],
            "statement": statement,
            "repetition": repetition,
        }
        rows.append(Row(p, labels, cut_id=str(p.relative_to(root).with_suffix(""))))
    _check_some_named(rows, root, "ravdess", "MM-VV-EE-II-SS-RR-AA.wav")
    return rows


def librispeech_rows(root: str | Path, parts: list[str] | None = None) -> list[Row]:
    """Rows of LibriSpeech parts (``ROOT/<part>/<spk>/<chapter>/*.flac`` + ``*.trans.txt``).

    lhotse's recipe finds files and transcripts; gender comes from ``SPEAKERS.TXT`` when the
    root holds it. Labels: speaker, gender, chapter, part; the transcript is the text.
    """
    from lhotse.recipes.librispeech import prepare_librispeech

    root = _existing_dir(root, "librispeech")
    try:
        manifests = prepare_librispeech(root, dataset_parts=parts or "auto", output_dir=None)
    except (ValueError, AssertionError) as exc:
        raise UserError(f"librispeech: {exc}") from None
    genders = _librispeech_genders(root)
    rows = []
    for part in sorted(manifests):
        recs = manifests[part]["recordings"]
        for sup in manifests[part]["supervisions"]:
            rec = recs[sup.recording_id]
            speaker = str(sup.speaker)
            labels = {
                "speaker": f"libri_{speaker}",
                "gender": genders.get(speaker, "unknown"),
                "chapter": sup.id.split("-")[1],
                "part": part,
            }
            rows.append(Row(Path(rec.sources[0].source), labels, cut_id=sup.id, text=sup.text))
    if not rows:
        raise UserError(f"librispeech: no transcribed audio found under {root}")
    return rows


def voxceleb_rows(vox1: str | Path | None = None, vox2: str | Path | None = None) -> list[Row]:
    """Rows of VoxCeleb1 (lhotse's recipe: ``wav/`` + ``vox1_meta.csv``) and/or VoxCeleb2.

    VoxCeleb2 is distributed as m4a, which soundfile cannot decode: convert it to wav or flac
    first (same ``idXXXXX/<video>/<n>`` layout, ``vox2_meta.csv`` at the root).
    lhotse's public ``prepare_voxceleb`` downloads the VoxCeleb1 trial list, so the
    file-finding part of its recipe is called directly; trials are built by ``speechssl``.
    """
    if vox1 is None and vox2 is None:
        raise UserError("voxceleb: give --vox1 and/or --vox2")
    rows: list[Row] = []
    if vox1 is not None:
        from lhotse.recipes.voxceleb import _prepare_voxceleb_v1

        root = _existing_dir(vox1, "voxceleb1")
        if not (root / "vox1_meta.csv").is_file():
            raise UserError(f"voxceleb1: {root / 'vox1_meta.csv'} not found")
        for split, m in _prepare_voxceleb_v1(root, num_jobs=1).items():
            rows += _vox_rows(m["recordings"], m["supervisions"], "voxceleb1", split)
    if vox2 is not None:
        root = _existing_dir(vox2, "voxceleb2")
        meta = root / "vox2_meta.csv"
        if not meta.is_file():
            raise UserError(f"voxceleb2: {meta} not found")
        genders = {}
        for line in meta.read_text().splitlines()[1:]:
            parts = [x.strip() for x in line.split(",")]
            if len(parts) >= 3:
                genders[parts[0]] = parts[2]
        files = [p for p in root.rglob("*") if p.suffix.lower() in (".wav", ".flac")]
        if not files and any(root.rglob("*.m4a")):
            raise UserError("voxceleb2: only m4a files found; convert them to wav or flac first")
        for p in sorted(files):
            spk = p.parent.parent.name
            labels = {
                "speaker": spk,
                "gender": _vox_gender(genders.get(spk, "")),
                "video": p.parent.name,
                "corpus": "voxceleb2",
                "split": "train",
            }
            rows.append(Row(p, labels, cut_id=f"{spk}-{p.parent.name}-{p.stem}"))
    if not rows:
        raise UserError("voxceleb: no audio found")
    return rows


def _vox_rows(recs, sups, corpus: str, split: str) -> list[Row]:
    rows = []
    for sup in sups:
        rec = recs[sup.recording_id]
        custom = sup.custom or {}
        labels = {
            "speaker": str(sup.speaker),
            "gender": _vox_gender(sup.gender or custom.get("gender", "")),
            "video": sup.id.split("-")[1] if "-" in sup.id else "",
            "corpus": corpus,
            "split": split,
        }
        rows.append(Row(Path(rec.sources[0].source), labels, cut_id=sup.id))
    return rows


def _vox_gender(g: str) -> str:
    return {"m": "male", "f": "female"}.get(str(g).strip().lower()[:1], "unknown")


def _librispeech_genders(root: Path) -> dict[str, str]:
    for candidate in (root / "SPEAKERS.TXT", root.parent / "SPEAKERS.TXT"):
        if candidate.is_file():
            out = {}
            for line in candidate.read_text(errors="replace").splitlines():
                if line.startswith(";") or "|" not in line:
                    continue
                fields = [x.strip() for x in line.split("|")]
                out[fields[0]] = {"M": "male", "F": "female"}.get(fields[1], "unknown")
            return out
    return {}


def _check_some_named(rows: list[Row], root: Path, what: str, pattern: str) -> None:
    """A --root where no file is named as the corpus names them is the wrong folder: one line
    (how many files, a few of them) instead of one bad row per file."""
    if any(not r.error.startswith("file name is not") for r in rows):
        return
    shown = ", ".join(str(r.path.relative_to(root)) for r in rows[:3])
    more = ", ..." if len(rows) > 3 else ""
    raise UserError(
        f"{what}: none of the {len(rows)} audio files under {root} is named {pattern} "
        f"({shown}{more}); is --root the corpus folder?"
    )


def _existing_dir(root: str | Path, what: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{what}: folder not found: {root}")
    return root


def _audio_files(root: str | Path, what: str) -> list[Path]:
    root = _existing_dir(root, what)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise UserError(f"{what}: no audio files under {root}")
    return files
