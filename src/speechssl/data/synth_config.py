"""The options of ``speechssl data synth`` and the voices it draws from, apart from the
synthesiser so that the command lists them without lhotse or scipy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from speechssl.config import opt

__all__ = ["LANGUAGES", "VOICE_VARIANTS", "SynthConfig"]


# The espeak-ng voice variant of each synthetic speaker, with its gender: ten male, ten female.
# Every variant speaks every language, so a variant's timbre says nothing about the language
# (and a probe split by variant tests language on voices it has never heard).
VOICE_VARIANTS: dict[str, str] = {
    **{f"m{i}": "male" for i in range(1, 9)},
    "sandro": "male",
    "robert": "male",
    **{f"f{i}": "female" for i in range(1, 6)},
    "Alicia": "female",
    "Andrea": "female",
    "anika": "female",
    "linda": "female",
    "steph": "female",
}


LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es")


@dataclass
class SynthConfig:
    """Synthesise the embedded labelled corpus (20 espeak-ng voices, each speaking every
    language; speaker, variant, gender, language, text and 100 frames/s phoneme alignments).
    The same seed gives byte-identical files."""

    out: Path = opt(help="output folder (audio/, alignments/, phonemes.txt, cuts.jsonl.gz)")
    minutes: float = opt(30.0, "minutes of audio (the last utterance may overshoot)", gt=0)
    seed: int = opt(0, "seed of texts, voice order, prosody, pauses and noise", ge=0)
    languages: tuple[str, ...] = opt(LANGUAGES, "languages every voice speaks")
    min_words: int = opt(3, "shortest sentence, in words", ge=1)
    max_words: int = opt(10, "longest sentence, in words", ge=1)
    noise_floor_db: float | None = opt(
        -70.0, "white-noise floor in dBFS, so that pauses are not digital zero", le=0
    )
    workers: int = opt(1, "synthesis processes; the output does not depend on it", ge=1)
    progress: bool = opt(True, "progress bar on an interactive terminal")
