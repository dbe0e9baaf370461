"""A small, fully labelled synthetic speech corpus, generated with eSpeak NG.

Pretext tasks and probes need speech with known speakers, languages, genders, texts and
phoneme timings, and tests need it without downloads. eSpeak's formant synthesiser is crude but
fast (far faster than real time: benchmarks/results/synth.md) and reports when each phoneme
starts, which gives frame-level phoneme labels for free.

Layout written under ``out_dir``::

    audio/<speaker>/<utt_id>.flac        16 kHz, 16-bit mono
    alignments/<speaker>/<utt_id>.npy    int16 phoneme index per 10 ms frame
    phonemes.txt                         the inventory, one symbol a line, line 0 = "sil"
    cuts.jsonl.gz                        lhotse CutSet

Twenty voices (an espeak-ng variant each, :data:`~speechssl.data.synth_config.VOICE_VARIANTS`,
ten male and ten female) each speak every language: a speaker is a voice, not a language, so
language cannot be read off the timbre. Every cut has one supervision spanning it, with
``speaker``/``language``/``gender``/``text`` set and the labels (speaker, variant, gender,
language, text) also in ``supervision.custom``; ``variant`` is the espeak variant, the unit
that the ``synth-*`` probe tasks keep within one split. The alignment is the cut's custom
``phonemes`` TemporalArray, so ``cut.load_phonemes()`` returns it.

The corpus is a pure function of the seed: the same seed gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import itertools
import json
import math
import os
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse import CutSet, MonoCut, SupervisionSegment
from lhotse.array import Array, TemporalArray
from scipy.signal import firwin, resample_poly

from speechssl.audio.io import SAMPLE_RATE, recording
from speechssl.data import espeak
from speechssl.data.synth_config import LANGUAGES, VOICE_VARIANTS, SynthConfig
from speechssl.errors import UserError
from speechssl.progress import Progress

FRAME_SHIFT = 0.01  # seconds; alignments are at 100 frames/s
_FRAME = int(SAMPLE_RATE * FRAME_SHIFT)  # 160 samples
SILENCE = "sil"
# espeak is reloaded every SHARD_SIZE utterances (a reload leaks ~100 kB inside libespeak-ng,
# and reloading is what makes the output reproducible); changing it changes the audio.
SHARD_SIZE = 32


@dataclass(frozen=True)
class Voice:
    """A synthetic speaker: an espeak variant plus its own pitch and speaking-rate habits,
    the same in every language it speaks.

    ``pitch`` and ``pitch_range`` are espeak parameters (0-100, 50 = the variant's default),
    ``rate`` the centre of its speaking rate in words per minute.
    """

    speaker: str
    variant: str
    gender: str
    pitch: int
    pitch_range: int
    rate: int

    def espeak_name(self, language: str) -> str:
        return f"{language}+{self.variant}"


def make_voices() -> list[Voice]:
    """The speakers of the corpus, one per voice variant; each speaks every language.

    A speaker's habits are drawn from a hash of its id, not from the corpus seed, so that
    ``synth_m3`` sounds the same in every corpus.
    """
    voices = []
    for variant, gender in VOICE_VARIANTS.items():
        speaker = f"synth_{variant.lower()}"
        rng = np.random.default_rng(zlib.crc32(speaker.encode()))
        voices.append(
            Voice(
                speaker=speaker,
                variant=variant,
                gender=gender,
                pitch=int(rng.integers(30, 71)),
                pitch_range=int(rng.integers(30, 81)),
                rate=int(rng.integers(140, 191)),
            )
        )
    return voices


def _check_languages(languages: tuple[str, ...]) -> tuple[str, ...]:
    if not languages:
        raise UserError(f"give at least one language (known: {', '.join(LANGUAGES)})")
    for lang in languages:
        if lang not in LANGUAGES:
            known = ", ".join(LANGUAGES)
            raise UserError(f"no synthetic voices for language {lang!r} (known: {known})")
    return tuple(dict.fromkeys(languages))  # each once, in the order given


def load_wordlist(language: str) -> list[str]:
    """The built-in word list of ``language`` (package data ``data/wordlists/<lang>.txt``)."""
    try:
        text = (resources.files("speechssl.data") / "wordlists" / f"{language}.txt").read_text(
            encoding="utf-8"
        )
    except FileNotFoundError:
        raise UserError(f"no word list for language {language!r}") from None
    return [w.strip() for w in text.splitlines() if w.strip()]


@dataclass(frozen=True)
class _Utterance:
    """Everything needed to render one utterance (given espeak's state, see SHARD_SIZE)."""

    index: int
    utt_id: str
    voice: Voice
    language: str
    text: str
    rate: int
    pitch: int
    pitch_range: int
    espeak_seed: int
    lead: float  # seconds of silence before the speech
    trail: float  # at least this much silence after it
    noise_seed: int
    noise_floor_db: float | None


@dataclass
class _Rendered:
    """What is left of a rendered utterance once its audio is on disk."""

    utt: _Utterance
    path: Path  # the FLAC file
    num_samples: int  # at 16 kHz, a whole number of frames
    symbols: list[str]  # this utterance's own inventory, 0 = silence
    frames: np.ndarray  # int16 index into ``symbols`` per 10 ms frame


def synthesize_corpus(
    out_dir: str | Path,
    minutes: float,
    seed: int,
    *,
    languages: tuple[str, ...] | list[str] = LANGUAGES,
    workers: int = 1,
    progress: bool = True,
    noise_floor_db: float | None = -70.0,
) -> CutSet:
    """Synthesise about ``minutes`` of labelled speech into ``out_dir``; see the module doc.

    Args:
        out_dir: created if missing; existing files of the same names are overwritten.
        minutes: amount of audio, > 0.
        seed: the corpus is a deterministic function of it.
        languages: subset of :data:`LANGUAGES`.
        workers: synthesis processes (1 is usually fast enough).
        progress: a bar on a terminal, a line every 30 s elsewhere (speechssl.progress).
        noise_floor_db: see :class:`SynthConfig`.

    Returns:
        The CutSet that was also written to ``out_dir/cuts.jsonl.gz``.
    """
    config = SynthConfig(
        out=Path(out_dir),
        minutes=minutes,
        seed=seed,
        languages=tuple(languages),
        workers=workers,
        progress=progress,
        noise_floor_db=noise_floor_db,
    )
    return synthesize_from_config(config)


def synthesize_from_config(config: SynthConfig) -> CutSet:
    """:func:`synthesize_corpus` driven by a :class:`SynthConfig`."""
    minutes = float(config.minutes)
    if not math.isfinite(minutes) or minutes <= 0:
        raise UserError(f"minutes must be a positive number, got {config.minutes}")
    if config.workers < 1:
        raise UserError(f"workers must be at least 1, got {config.workers}")
    if not 1 <= config.min_words <= config.max_words:
        raise UserError(
            f"need 1 <= min_words <= max_words, got {config.min_words} and {config.max_words}"
        )
    languages = _check_languages(tuple(config.languages))
    voices = make_voices()
    words = {lang: load_wordlist(lang) for lang in languages}
    out = _prepare_out_dir(Path(config.out))
    try:
        espeak.get_engine()  # fail early, in this process, if the library is unusable
    except espeak.EspeakError as exc:
        raise UserError(f"cannot use eSpeak NG: {exc}") from None

    try:
        return _synthesize(config, languages, out, voices, words)
    except OSError as exc:
        raise UserError(f"cannot write the corpus to {out}: {exc.strerror or exc}") from None


def _synthesize(
    config: SynthConfig,
    languages: tuple[str, ...],
    out: Path,
    voices: list[Voice],
    words: dict[str, list[str]],
) -> CutSet:
    target = float(config.minutes) * 60.0
    total = 0.0
    rendered: list[_Rendered] = []
    bar = Progress(round(target), "synthesising", "s", enabled=config.progress, leave=False)
    plan = _plan(config, languages, voices, words)
    with (
        contextlib.closing(bar),
        contextlib.closing(plan),
        contextlib.closing(_render_in_order(plan, out / "audio", config.workers)) as stream,
    ):
        for item in stream:
            rendered.append(item)
            total += item.num_samples / SAMPLE_RATE
            bar.update(min(round(total), round(target)) - bar.n)
            if total >= target:
                break

    # A sorted inventory does not depend on the order in which phonemes were first seen.
    inventory = [SILENCE] + sorted({s for item in rendered for s in item.symbols[1:]})
    index = {s: i for i, s in enumerate(inventory)}
    (out / "phonemes.txt").write_text("".join(f"{s}\n" for s in inventory), encoding="utf-8")

    cuts = []
    align_root = out / "alignments"
    for item in rendered:
        lookup = np.array([0] + [index[s] for s in item.symbols[1:]], dtype=np.int16)
        alignment = lookup[item.frames]
        key = f"{item.utt.voice.speaker}/{item.utt.utt_id}.npy"
        (align_root / key).parent.mkdir(parents=True, exist_ok=True)
        np.save(align_root / key, alignment, allow_pickle=False)
        cuts.append(_make_cut(item, align_root, key, alignment))
    cutset = CutSet.from_cuts(cuts)
    _write_manifest(cutset, out / "cuts.jsonl.gz")
    return cutset


def _prepare_out_dir(out: Path) -> Path:
    """Create ``out`` and prove it is writable, so a bad path fails before any work."""
    out = out.expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to output directory {out}: {exc.strerror or exc}") from None
    return out


def _plan(
    config: SynthConfig,
    languages: tuple[str, ...],
    voices: list[Voice],
    words: dict[str, list[str]],
) -> Iterator[_Utterance]:
    """An endless, seed-determined stream of utterance recipes.

    Voices are taken round-robin in a freshly shuffled order each round, so even a one-minute
    corpus contains every voice. Each voice moves on to the next language every round, from a
    seeded starting language dealt so that every round has each language equally often (up to
    one): after ``len(languages)`` rounds (80 utterances, about 3.5 minutes, for the default
    corpus) every voice has spoken every language, and the languages stay balanced per voice.
    """
    rng = np.random.default_rng(config.seed)
    start = rng.permutation(len(voices)) % len(languages)
    index = 0
    for round_ in itertools.count():
        for v in rng.permutation(len(voices)):
            voice = voices[int(v)]
            language = languages[(int(start[v]) + round_) % len(languages)]
            yield _Utterance(
                index=index,
                utt_id=f"{voice.speaker}-{index:06d}",
                voice=voice,
                language=language,
                text=_sentence(rng, words[language], config.min_words, config.max_words),
                rate=int(round(voice.rate * rng.uniform(0.88, 1.12))),
                pitch=int(np.clip(voice.pitch + rng.integers(-5, 6), 0, 100)),
                pitch_range=int(np.clip(voice.pitch_range + rng.integers(-10, 11), 0, 100)),
                espeak_seed=int(rng.integers(0, 2**31 - 1)),
                lead=float(rng.uniform(0.05, 0.3)),
                trail=float(rng.uniform(0.05, 0.3)),
                noise_seed=int(rng.integers(0, 2**63 - 1)),
                noise_floor_db=config.noise_floor_db,
            )
            index += 1


def _sentence(rng: np.random.Generator, words: list[str], lo: int, hi: int) -> str:
    """3-10 random words; sometimes a comma (a pause), sometimes a question."""
    n = int(rng.integers(lo, hi + 1))
    chosen = [words[int(i)] for i in rng.integers(0, len(words), size=n)]
    if n >= 5 and rng.random() < 0.3:
        at = int(rng.integers(1, n - 2))
        chosen[at] += ","
    text = " ".join(chosen)
    end = "?" if rng.random() < 0.15 else "."
    return text[0].upper() + text[1:] + end


def _render_in_order(
    plan: Iterator[_Utterance], audio_dir: Path, workers: int
) -> Iterator[_Rendered]:
    """Render the plan, in plan order, in this process or in ``workers`` processes.

    espeak carries state from one utterance to the next, so it is reloaded at the start of
    every shard of :data:`SHARD_SIZE` utterances and a shard is always rendered in order by one
    process: the audio then does not depend on the number of workers. With workers, the
    utterances rendered beyond the one the caller stops at are deleted again.
    """
    if workers == 1:
        for utt in plan:
            yield _render(utt, audio_dir, reset=utt.index % SHARD_SIZE == 0)
        return
    window = 2 * workers
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: list[Future[list[_Rendered]]] = []
        current: list[_Rendered] = []  # the rest of the shard being handed out
        try:
            while True:
                while len(pending) < window:
                    shard = list(itertools.islice(plan, SHARD_SIZE))
                    pending.append(pool.submit(_render_shard, shard, audio_dir))
                current = pending.pop(0).result()
                while current:
                    yield current.pop(0)
        finally:
            # The caller stops mid-shard once it has enough audio: delete what it did not take.
            unused = list(current)
            for fut in pending:
                if not fut.cancel() and fut.exception() is None:
                    unused += fut.result()
            for item in unused:
                item.path.unlink(missing_ok=True)


def _render_shard(shard: list[_Utterance], audio_dir: Path) -> list[_Rendered]:
    return [_render(utt, audio_dir, reset=i == 0) for i, utt in enumerate(shard)]


def _render(utt: _Utterance, audio_dir: Path, reset: bool) -> _Rendered:
    """Synthesise one utterance at 16 kHz, pad it with silence, write it as FLAC under
    ``audio_dir`` and align it to 10 ms frames."""
    voice = utt.voice
    engine = espeak.get_engine()
    if reset:
        engine.reset()
    engine.set_voice(voice.espeak_name(utt.language))
    engine.set_parameters(rate=utt.rate, pitch=utt.pitch, pitch_range=utt.pitch_range)
    result = engine.synthesize(utt.text, seed=utt.espeak_seed, reset=False)
    speech = result.samples.astype(np.float64) / 32768.0
    if result.sample_rate != SAMPLE_RATE:  # 22050 Hz: up 320, down 441
        g = math.gcd(SAMPLE_RATE, result.sample_rate)
        up, down = SAMPLE_RATE // g, result.sample_rate // g
        speech = resample_poly(speech, up, down, window=_resampling_filter(up, down))
    lead = int(round(utt.lead * SAMPLE_RATE))
    n = lead + len(speech) + int(round(utt.trail * SAMPLE_RATE))
    n = -(-n // _FRAME) * _FRAME  # whole frames, so the alignment covers the audio exactly
    audio = np.zeros(n, dtype=np.float64)
    audio[lead : lead + len(speech)] = speech
    if utt.noise_floor_db is not None:
        sigma = 10.0 ** (utt.noise_floor_db / 20.0)
        audio += np.random.default_rng(utt.noise_seed).normal(0.0, sigma, size=n)
    pcm = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
    path = audio_dir / voice.speaker / f"{utt.utt_id}.flac"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")

    # Frame i is labelled with the phoneme sounding at its centre; espeak's times count from
    # the start of its own output, which now begins ``lead`` samples in.
    symbols = [SILENCE]
    ids = []
    for event in result.phonemes:
        name = _clean_symbol(event.name)
        if name == SILENCE:
            ids.append(0)
        else:
            if name not in symbols:
                symbols.append(name)
            ids.append(symbols.index(name))
    speech_end = len(result.samples) / result.sample_rate
    starts = np.array([e.start for e in result.phonemes], dtype=np.float64)
    centres = (np.arange(n // _FRAME) + 0.5) * FRAME_SHIFT - lead / SAMPLE_RATE
    frames = np.zeros(len(centres), dtype=np.int16)
    if len(starts):
        which = np.searchsorted(starts, centres, side="right") - 1
        inside = (which >= 0) & (centres < speech_end)
        frames[inside] = np.asarray(ids, dtype=np.int16)[which[inside]]
    return _Rendered(utt=utt, path=path, num_samples=n, symbols=symbols, frames=frames)


@functools.lru_cache(maxsize=4)
def _resampling_filter(up: int, down: int) -> np.ndarray:
    """resample_poly's default anti-aliasing filter, designed once instead of per call."""
    max_rate = max(up, down)
    return firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))


def _clean_symbol(name: str) -> str:
    """espeak's phoneme mnemonic without stress marks; every pause (``_``, ``_:``...) is silence."""
    name = name.strip().lstrip("',%=")
    if not name or name.startswith("_"):
        return SILENCE
    return name


def _make_cut(item: _Rendered, align_root: Path, key: str, alignment: np.ndarray) -> MonoCut:
    utt, voice = item.utt, item.utt.voice
    rec = recording(item.path, recording_id=utt.utt_id)
    labels = {
        "speaker": voice.speaker,
        "variant": voice.variant,
        "gender": voice.gender,
        "language": utt.language,
        "text": utt.text,
    }
    sup = SupervisionSegment(
        id=utt.utt_id,
        recording_id=utt.utt_id,
        start=0.0,
        duration=rec.duration,
        channel=0,
        text=utt.text,
        language=utt.language,
        speaker=voice.speaker,
        gender=voice.gender,
        custom=labels,
    )
    phonemes = TemporalArray(
        array=Array(
            storage_type="numpy_files",
            storage_path=str(align_root),
            storage_key=key,
            shape=list(alignment.shape),
        ),
        temporal_dim=0,
        frame_shift=FRAME_SHIFT,
        start=0.0,
    )
    return MonoCut(
        id=utt.utt_id,
        start=0.0,
        duration=rec.duration,
        channel=0,
        recording=rec,
        supervisions=[sup],
        custom={"phonemes": phonemes},
    )


def _write_manifest(cuts: CutSet, path: Path) -> None:
    """JSONL, gzipped without a timestamp so that equal corpora give equal bytes."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        for cut in cuts:
            f.write((json.dumps(cut.to_dict(), ensure_ascii=False) + "\n").encode("utf-8"))
