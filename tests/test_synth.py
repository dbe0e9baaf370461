"""The synthetic eSpeak corpus: labels, alignments, determinism, and the ctypes binding."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet

from speechssl.data import espeak
from speechssl.data.synth import (
    SHARD_SIZE,
    load_wordlist,
    make_voices,
    synthesize_corpus,
)
from speechssl.data.synth_config import LANGUAGES
from speechssl.errors import UserError

MINUTES = 1.5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, CutSet]:
    out = tmp_path_factory.mktemp("synth_a")
    return out, synthesize_corpus(out, minutes=MINUTES, seed=1, progress=False)


@pytest.fixture(scope="module")
def inventory(corpus) -> list[str]:
    out, _ = corpus
    return (out / "phonemes.txt").read_text(encoding="utf-8").splitlines()


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for sub in ("audio", "alignments")
        for p in sorted((root / sub).rglob("*"))
        if p.is_file()
    }


def _manifest(root: Path) -> list[dict]:
    with gzip.open(root / "cuts.jsonl.gz", "rt", encoding="utf-8") as f:
        text = f.read().replace(str(root.resolve()), "<root>")
    return [json.loads(line) for line in text.splitlines()]


def _f0(x: np.ndarray, sr: int = 16000) -> float:
    """Median F0 over loud 40 ms frames, from the autocorrelation peak between 60 and 400 Hz."""
    win, hop = int(0.04 * sr), int(0.01 * sr)
    lo, hi = sr // 400, sr // 60
    peak = np.abs(x).max()
    estimates = []
    for start in range(0, len(x) - win, hop):
        frame = x[start : start + win] - x[start : start + win].mean()
        if np.abs(frame).max() < 0.3 * peak:
            continue
        ac = np.correlate(frame, frame, mode="full")[win - 1 :]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5 * ac[0]:  # clearly periodic
            estimates.append(sr / lag)
    assert estimates, "no voiced frames found"
    return float(np.median(estimates))


def test_same_seed_gives_identical_files_whatever_the_workers(corpus, tmp_path):
    out_a, _ = corpus
    out_b = tmp_path / "b"
    synthesize_corpus(out_b, minutes=MINUTES, seed=1, workers=2, progress=False)
    files_a, files_b = _files(out_a), _files(out_b)
    # Audio + alignment per utterance; more than one shard, the last one only partly used.
    assert 2 * SHARD_SIZE < len(files_a) < 4 * SHARD_SIZE
    assert files_a.keys() == files_b.keys()  # also: no extra utterances left behind
    assert all(files_a[k] == files_b[k] for k in files_a)
    assert (out_a / "phonemes.txt").read_bytes() == (out_b / "phonemes.txt").read_bytes()
    assert _manifest(out_a) == _manifest(out_b)


def test_different_seed_gives_a_different_corpus(corpus, tmp_path):
    out_a, cuts_a = corpus
    cuts_c = synthesize_corpus(tmp_path / "c", minutes=0.3, seed=2, progress=False)
    texts_a = [c.supervisions[0].text for c in cuts_a]
    texts_c = [c.supervisions[0].text for c in cuts_c]
    assert texts_c != texts_a[: len(texts_c)]
    first_a = Path(cuts_a[0].recording.sources[0].source).read_bytes()
    first_c = Path(cuts_c[0].recording.sources[0].source).read_bytes()
    assert first_a != first_c


def test_many_voices_and_languages(corpus):
    _, cuts = corpus
    speakers = {c.supervisions[0].speaker for c in cuts}
    assert len(speakers) >= 16
    assert len({c.supervisions[0].language for c in cuts}) >= 3
    assert {c.supervisions[0].custom["gender"] for c in cuts} == {"male", "female"}
    assert len(make_voices()) >= 16
    assert abs(sum(c.duration for c in cuts) - MINUTES * 60) < 15


def test_every_supervision_is_labelled(corpus):
    _, cuts = corpus
    for cut in cuts:
        assert len(cut.supervisions) == 1
        sup = cut.supervisions[0]
        assert sup.start == 0 and sup.duration == pytest.approx(cut.duration)
        assert set(sup.custom) >= {"speaker", "gender", "language", "text"}
        assert sup.speaker == sup.custom["speaker"]
        assert sup.language == sup.custom["language"] in LANGUAGES
        assert sup.text == sup.custom["text"]
        assert 3 <= len(sup.text.split()) <= 10
        _, lang, variant = sup.speaker.split("_")
        assert lang == sup.language
        assert sup.custom["gender"] == {"m": "male", "f": "female"}[variant[0]]


def test_cut_durations_match_the_flac_files(corpus):
    _, cuts = corpus
    for cut in cuts:
        info = sf.info(cut.recording.sources[0].source)
        assert info.samplerate == 16000 and info.channels == 1 and info.format == "FLAC"
        assert cut.duration == pytest.approx(info.frames / info.samplerate, abs=1e-9)
        assert cut.recording.sampling_rate == 16000


def test_alignment_covers_the_audio_at_100_frames_per_second(corpus, inventory):
    _, cuts = corpus
    assert inventory[0] == "sil" and len(set(inventory)) == len(inventory) > 20
    for cut in cuts:
        frames = cut.load_phonemes()
        assert np.issubdtype(frames.dtype, np.integer)
        assert abs(len(frames) - int(np.ceil(cut.duration * 100))) <= 1
        assert np.array_equal(frames, cut.load_custom("phonemes"))
        assert frames.min() >= 0 and frames.max() < len(inventory)
        assert frames[0] == 0 and frames[-1] == 0  # padded with silence at both ends
        assert (frames != 0).mean() > 0.4


def test_alignment_agrees_with_the_audio(corpus):
    _, cuts = corpus
    silence, speech, onset_errors = [], [], []
    for cut in cuts:
        audio = cut.load_audio()[0]
        frames = cut.load_phonemes()
        energy = 10 * np.log10((audio[: len(frames) * 160].reshape(-1, 160) ** 2).mean(1) + 1e-12)
        silence.append(energy[frames == 0])
        speech.append(energy[frames != 0])
        onset_errors.append(np.argmax(frames != 0) - np.argmax(energy > energy.max() - 40))
    assert np.mean(np.concatenate(speech)) > np.mean(np.concatenate(silence)) + 20
    assert np.max(np.abs(onset_errors)) <= 2  # first phoneme starts where the sound starts


def test_low_and_high_pitched_voices_differ(corpus):
    _, cuts = corpus
    f0 = {"male": [], "female": []}
    for cut in cuts:
        f0[cut.supervisions[0].custom["gender"]].append(_f0(cut.load_audio()[0]))
    assert np.median(f0["female"]) > 1.3 * np.median(f0["male"])
    assert 60 < np.median(f0["male"]) < 200

    low = espeak.synthesize("Hello there, my good friend.", "en+m3", pitch=10, seed=0)
    high = espeak.synthesize("Hello there, my good friend.", "en+m3", pitch=90, seed=0)
    as_float = lambda s: s.samples.astype(np.float64) / 32768  # noqa: E731
    assert _f0(as_float(high), 22050) > 1.4 * _f0(as_float(low), 22050)


def test_word_lists_are_packaged():
    for lang in LANGUAGES:
        words = load_wordlist(lang)
        assert len(set(words)) >= 60


def test_espeak_events_and_determinism():
    first = espeak.synthesize("Hello world.", "en+m1", rate=170, pitch=50, pitch_range=50)
    espeak.synthesize("Guten Morgen, wie geht es dir?", "de+f2", rate=140, pitch=70, seed=3)
    again = espeak.synthesize("Hello world.", "en+m1", rate=170, pitch=50, pitch_range=50)
    assert first.sample_rate == 22050 and first.samples.dtype == np.int16
    assert np.array_equal(first.samples, again.samples)  # nothing carried over in between
    assert first.phonemes == again.phonemes
    names = [p.name.lstrip("',") for p in first.phonemes]
    assert names[:4] == ["h", "@", "l", "oU"] and {"w", "3:", "d"} <= set(names)
    starts = [p.start for p in first.phonemes]
    assert starts == sorted(starts) and 0 <= starts[0] < starts[-1] <= len(first.samples) / 22050
    with pytest.raises(espeak.EspeakError, match="no voice"):
        espeak.synthesize("x", "xx+nonexistent")


def test_bad_library_path_is_a_clear_error(tmp_path):
    with pytest.raises(espeak.EspeakError, match="cannot load libespeak-ng"):
        espeak.Espeak(library_path=str(tmp_path / "missing.so"), data_path=str(tmp_path))


@pytest.mark.parametrize("minutes", [0, -1.0, float("nan")])
def test_non_positive_minutes_is_a_user_error(tmp_path, minutes):
    with pytest.raises(UserError, match="minutes"):
        synthesize_corpus(tmp_path / "x", minutes=minutes, seed=0, progress=False)


def test_unwritable_out_dir_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot write"):
        synthesize_corpus(blocker / "corpus", minutes=0.1, seed=0, progress=False)
