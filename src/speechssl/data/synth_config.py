"""The options of ``speechssl data synth`` and the voices it draws from, apart from the
synthesiser so that the command lists them without lhotse or scipy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from speechssl.config import opt

__all__ = ["LANGUAGES", "VOICE_VARIANTS", "SynthConfig"]


# espeak variant per speaker, chosen so that every language has both genders.
VOICE_VARIANTS: dict[str, tuple[str, ...]] = {
    "en": ("m1", "m3", "m7", "f1", "f4"),
    "de": ("m2", "m4", "m6", "f2", "f3"),
    "fr": ("m1", "m5", "f2", "f3", "f5"),
    "es": ("m3", "m4", "m7", "f1", "f5"),
}


LANGUAGES: tuple[str, ...] = tuple(VOICE_VARIANTS)


@dataclass
class SynthConfig:
    """Synthesise the embedded labelled corpus (espeak-ng voices; speaker, gender, language,
    text and 100 frames/s phoneme alignments). The same seed gives byte-identical files."""

    out: Path = opt(help="output folder (audio/, alignments/, phonemes.txt, cuts.jsonl.gz)")
    minutes: float = opt(30.0, "minutes of audio (the last utterance may overshoot)", gt=0)
    seed: int = opt(0, "seed of texts, voice order, prosody, pauses and noise", ge=0)
    languages: tuple[str, ...] = opt(LANGUAGES, "languages whose voices are used")
    min_words: int = opt(3, "shortest sentence, in words", ge=1)
    max_words: int = opt(10, "longest sentence, in words", ge=1)
    noise_floor_db: float | None = opt(
        -70.0, "white-noise floor in dBFS, so that pauses are not digital zero", le=0
    )
    workers: int = opt(1, "synthesis processes; the output does not depend on it", ge=1)
    progress: bool = opt(True, "progress bar on an interactive terminal")
