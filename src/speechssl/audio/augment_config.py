"""What waveform augmentation applies and how often (:class:`AugmentConfig`), apart from the
:class:`~speechssl.audio.augment.Augmenter` so that a command lists it without torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from speechssl.config import opt

__all__ = ["NOISE_KINDS", "AugmentConfig"]


NOISE_KINDS = ("coloured", "babble", "recorded")


@dataclass
class AugmentConfig:
    """Waveform augmentation of each crop (defaults: the DINO paper's noise and reverb)."""

    noise_prob: float = opt(0.7, "probability of adding noise to a crop", ge=0, le=1)
    noise_kinds: list[str] = opt(
        factory=lambda: list(NOISE_KINDS),
        help="noise sources drawn uniformly among those available: coloured; babble (needs a "
        "pool of utterances); recorded (needs noise-manifest)",
    )
    noise_snr: tuple[float, float] = opt(
        (0.0, 18.0), "SNR range (dB) of coloured and recorded noise"
    )
    coloured_beta: tuple[float, float] = opt(
        (0.0, 2.0), "exponent range of coloured noise's 1/f^beta spectrum (0 white, 2 brown)"
    )
    babble_snr: tuple[float, float] = opt((3.0, 18.0), "SNR range (dB) of babble")
    babble_speakers: tuple[int, int] = opt((3, 7), "number of utterances mixed into babble", ge=1)
    noise_manifest: Path | None = opt(
        None, "CutSet manifest of noise recordings, e.g. MUSAN (`speechssl data prepare folder`)"
    )
    reverb_prob: float = opt(0.45, "probability of reverberating a crop", ge=0, le=1)
    rir_manifest: Path | None = opt(None, "CutSet manifest of recorded RIRs (none: synthetic RIRs)")
    rt60: tuple[float, float] = opt((0.2, 1.0), "RT60 range (s) of synthetic RIRs", gt=0)
    drr_db: tuple[float, float] = opt(
        (-3.0, 12.0), "direct-to-reverberant ratio range (dB) of synthetic RIRs"
    )
    speed_prob: float = opt(0.0, "probability of speed perturbation", ge=0, le=1)
    speeds: tuple[float, ...] = opt((0.9, 1.0, 1.1), "speed factors drawn uniformly", gt=0)
    gain_prob: float = opt(0.0, "probability of a random gain", ge=0, le=1)
    gain_db: tuple[float, float] = opt((-6.0, 6.0), "gain range (dB); samples are not clipped")
    cache_mb: float = opt(256.0, "memory per process for cached noise and RIR audio (MB)", ge=0)
