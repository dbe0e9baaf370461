"""The named probe tasks (``--task ravdess-emotion``): where their data is and how they split,
apart from the task builder so that a command lists them without lhotse."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["PRESETS", "Kind", "Preset", "SplitRule"]


Kind = Literal["utterance", "verification", "frame", "ctc"]


# "variant": whole values of the ``variant`` label (the espeak voice variant of the synthetic
# corpus), so that no voice variant is in two splits.
SplitRule = Literal["speaker", "utterance", "split", "all", "variant"]


@dataclass(frozen=True)
class Preset:
    folder: str  # a folder of the data root, or "synth" for a corpus given with --cuts
    label: str
    kind: Kind
    split: SplitRule
    about: str


PRESETS: dict[str, Preset] = {
    "fsdd-digit": Preset(
        "fsdd",
        "digit",
        "utterance",
        "split",
        "spoken digit; FSDD's official test split (index 0-4)",
    ),
    "fsdd-speaker": Preset(
        "fsdd",
        "speaker",
        "utterance",
        "utterance",
        "speaker id among 6; utterances split within speakers",
    ),
    "ravdess-emotion": Preset(
        "ravdess", "emotion", "utterance", "speaker", "8 acted emotions; unseen speakers"
    ),
    "ravdess-speaker": Preset(
        "ravdess",
        "speaker",
        "utterance",
        "utterance",
        "speaker id among 20; utterances split within speakers",
    ),
    "ravdess-gender": Preset(
        "ravdess", "gender", "utterance", "speaker", "gender; unseen speakers"
    ),
    "librispeech-sv": Preset(
        "librispeech-10spk",
        "speaker",
        "verification",
        "all",
        "speaker verification, 10 held-out speakers",
    ),
    "synth-speaker": Preset(
        "synth",
        "speaker",
        "utterance",
        "utterance",
        "speaker id among 20 synthetic voices, each in every language; utterances split "
        "within speakers",
    ),
    "synth-language": Preset(
        "synth",
        "language",
        "utterance",
        "variant",
        "language (4) on a synthetic corpus; unseen voice variants",
    ),
    "synth-phoneme": Preset(
        "synth",
        "phonemes",
        "frame",
        "variant",
        "frame phoneme labels at the upstream's rate; unseen voice variants",
    ),
    "so762-phones": Preset(
        "speechocean762-train",
        "phones",
        "ctc",
        "speaker",
        "phone recognition (CTC, PER) on 67 non-native speakers; unseen speakers",
    ),
}
