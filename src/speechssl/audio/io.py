"""Reading audio: every waveform in speechssl is mono float32 at 16 kHz.

Manifests keep files as they are on disk; the resampling to 16 kHz is recorded in the
manifest as a lhotse ``Resample`` transform (so ``cut.load_audio()`` already returns 16 kHz),
and stereo is down-mixed here, on load, by averaging the channels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse import Recording
from lhotse.array import Array
from lhotse.cut import Cut

from speechssl.errors import UserError

SAMPLE_RATE = 16000


class AudioFileError(Exception):
    """A file that cannot be used as audio; the message says why in a few words."""


def inspect_file(path: str | Path) -> sf._SoundFileInfo:
    """Open ``path``, decode it completely and return its header info.

    Raises :class:`AudioFileError` for a file that is unreadable, empty (no samples) or
    truncated (fewer samples, or fewer bytes, than its header promises).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioFileError("file does not exist")
    if path.stat().st_size == 0:
        raise AudioFileError("empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile's error types differ between versions
        raise AudioFileError(f"unreadable ({_first_line(exc)})") from None
    if info.frames == 0:
        raise AudioFileError("no audio samples")
    if info.format == "WAV":
        _check_wav_data_size(path, info)
    try:
        data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioFileError(f"truncated or corrupt ({_first_line(exc)})") from None
    if len(data) != info.frames:
        raise AudioFileError(f"truncated: {len(data)} of {info.frames} samples decoded")
    if not np.isfinite(data).all():
        raise AudioFileError("contains NaN or infinite samples")
    return info


def recording(path: str | Path, recording_id: str | None = None) -> Recording:
    """A lhotse Recording of ``path`` that loads at 16 kHz (resampling recorded as a transform)."""
    rec = Recording.from_file(str(path), recording_id=recording_id)
    if rec.sampling_rate != SAMPLE_RATE:
        rec = rec.resample(SAMPLE_RATE)
    return rec


def load_cut(cut: Cut, sample_rate: int | None = None) -> np.ndarray:
    """The cut's samples as a 1-D float32 array, channels averaged, at ``sample_rate`` (the
    cut's own rate when ``None``).

    A file that cannot be read any more (deleted, truncated or overwritten since ``speechssl
    data prepare`` checked it) raises :class:`UserError` naming the cut and the file.
    """
    if sample_rate is not None and cut.sampling_rate != sample_rate:
        cut = cut.resample(sample_rate)
    try:
        audio = cut.load_audio()
    except Exception as exc:  # lhotse wraps soundfile/audioread errors in its own types
        rec = getattr(cut, "recording", None)
        source = rec.sources[0].source if rec is not None and rec.sources else "?"
        if rec is not None and rec.sources and rec.sources[0].type == "file":
            if not Path(source).is_file():
                raise UserError(
                    f"cannot read the audio of cut {cut.id!r}: no file at {source} (relative "
                    "paths in a manifest are resolved against the manifest's folder)"
                ) from exc
        reason = _first_reason(exc)
        raise UserError(
            f"cannot read the audio of cut {cut.id!r} ({source}): {reason}; has the file "
            "changed since the manifest was prepared?"
        ) from exc
    if audio.ndim == 2:
        audio = audio.mean(axis=0)
    return np.ascontiguousarray(audio, dtype=np.float32)


def anchor_paths(cut: Cut, folder: str | Path) -> Cut:
    """Make the cut's relative file paths absolute against ``folder``, in place.

    ``speechssl data prepare`` writes absolute paths; older and hand-written manifests may
    hold relative ones. Reading every manifest through this, with ``folder`` the manifest's
    own folder, gives relative paths one meaning whatever the working directory (a path
    found only from the working directory, as older manifests were written, is kept so).
    Covers audio sources, features and arrays in custom fields (e.g. phoneme alignments).
    """
    folder = os.path.abspath(folder)

    def anchored(p: str) -> str:
        if not p or os.path.isabs(p):
            return p
        there = os.path.normpath(os.path.join(folder, p))
        if not os.path.exists(there) and os.path.exists(p):
            return os.path.abspath(p)  # an old manifest read from the folder it was made in
        return there

    rec = getattr(cut, "recording", None)
    for src in rec.sources if rec is not None else ():
        if src.type == "file":
            src.source = anchored(src.source)
    feats = getattr(cut, "features", None)
    if feats is not None and feats.storage_path:
        feats.storage_path = anchored(feats.storage_path)
    for value in (getattr(cut, "custom", None) or {}).values():
        array = getattr(value, "array", value)  # a TemporalArray wraps an Array
        if isinstance(array, Array) and array.storage_path:
            array.storage_path = anchored(array.storage_path)
    return cut


def _first_reason(exc: Exception) -> str:
    """One line from lhotse's multi-backend report: the first backend's own message."""
    lines = str(exc).splitlines() or [type(exc).__name__]
    tried = [ln for ln in lines if ln.startswith("Exception #")]
    return (tried[0].rsplit(">: ", 1)[-1] if tried else lines[0]).strip()


def load_file(path: str | Path) -> np.ndarray:
    """A whole file as a 1-D float32 array at 16 kHz, channels averaged."""
    return load_cut(recording(path).to_cut())


def _check_wav_data_size(path: Path, info: sf._SoundFileInfo) -> None:
    """libsndfile silently clips a WAV whose data chunk is shorter than its header says."""
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        size = path.stat().st_size
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return
            ident, length = chunk[:4], int.from_bytes(chunk[4:], "little")
            if ident == b"data":
                available = size - f.tell()
                if length != 0xFFFFFFFF and length > available:
                    raise AudioFileError(
                        f"truncated: header promises {length} bytes of samples, file holds {available}"
                    )
                return
            f.seek(length + (length & 1), 1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
