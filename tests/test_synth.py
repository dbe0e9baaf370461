"""The synthetic eSpeak corpus: labels, alignments, determinism, every voice in every language,
the synth-* task splits, and the ctypes binding."""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
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
from speechssl.data.synth_config import LANGUAGES, VOICE_VARIANTS
from speechssl.errors import UserError
from speechssl.evaluation.tasks import build_task

# Enough for four rounds of the 20 voices (80 utterances), after which every voice has spoken
# every language.
MINUTES = 4.0


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
    assert len(files_a) % 2 == 0 and len(files_a) // 2 > SHARD_SIZE
    assert (len(files_a) // 2) % SHARD_SIZE != 0
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


def test_every_voice_variant_speaks_every_language(corpus):
    out, cuts = corpus
    # read back from the manifest file itself, not through lhotse
    labels = [line["supervisions"][0]["custom"] for line in _manifest(out)]
    assert len(labels) == len(cuts) >= 4 * 20
    spoken = defaultdict(Counter)
    for lab in labels:
        spoken[lab["variant"]][lab["language"]] += 1
    assert set(spoken) == set(VOICE_VARIANTS) and len(spoken) == 20
    for variant, langs in spoken.items():
        assert set(langs) == set(LANGUAGES), variant
        # each voice moves on to the next language every round: its counts differ by one at most
        assert max(langs.values()) - min(langs.values()) <= 1, (variant, langs)
    per_lang = Counter(lab["language"] for lab in labels)
    assert max(per_lang.values()) - min(per_lang.values()) <= 1
    # one speaker per variant, a voice for both genders
    assert len({(lab["speaker"], lab["variant"]) for lab in labels}) == 20
    assert Counter(VOICE_VARIANTS.values()) == {"male": 10, "female": 10}
    assert [v.variant for v in make_voices()] == list(VOICE_VARIANTS)
    assert abs(sum(c.duration for c in cuts) - MINUTES * 60) < 15


def test_a_language_subset_is_spoken_by_every_voice(tmp_path):
    cuts = synthesize_corpus(tmp_path / "de", 1.0, seed=0, languages=("de",), progress=False)
    assert {c.supervisions[0].language for c in cuts} == {"de"}
    assert len({c.supervisions[0].custom["variant"] for c in cuts}) == 20  # one round at least
    with pytest.raises(UserError, match="no synthetic voices for language 'xx'"):
        synthesize_corpus(tmp_path / "xx", 0.1, seed=0, languages=("en", "xx"), progress=False)


def _variants(cuts) -> set[str]:
    return {c.supervisions[0].custom["variant"] for c in cuts}


@pytest.mark.parametrize("name", ["synth-language", "synth-phoneme"])
def test_synth_tasks_never_put_a_variant_in_two_splits(corpus, name):
    out, cuts = corpus
    task = build_task(name, cuts=out / "cuts.jsonl.gz")
    parts = [task.splits[k] for k in ("train", "dev", "test")]
    variants = [_variants(p) for p in parts]
    assert all(variants)
    for i in range(3):
        for j in range(i + 1, 3):
            assert not variants[i] & variants[j], (name, variants[i] & variants[j])
    assert set().union(*variants) == set(VOICE_VARIANTS)
    assert sorted(c.id for p in parts for c in p) == sorted(c.id for c in cuts)
    # unseen voices, but every language in training and in test
    for p in (parts[0], parts[2]):
        assert {c.supervisions[0].language for c in p} == set(LANGUAGES)


def test_synth_speaker_splits_utterances_within_speakers(corpus):
    out, cuts = corpus
    task = build_task("synth-speaker", cuts=out / "cuts.jsonl.gz")
    ids = [{c.id for c in task.splits[k]} for k in ("train", "dev", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, ids)) == len(cuts)
    speakers = {c.supervisions[0].speaker for c in cuts}
    assert {c.supervisions[0].speaker for c in task.splits["train"]} == speakers
    assert {c.supervisions[0].speaker for c in task.splits["test"]} == speakers


def test_variant_split_of_a_corpus_without_variants_says_to_resynthesise(corpus, tmp_path):
    out, _ = corpus
    with gzip.open(out / "cuts.jsonl.gz", "rt", encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    for line in lines:  # what an older corpus looks like: no variant label
        del line["supervisions"][0]["custom"]["variant"]
    old = tmp_path / "old.jsonl.gz"
    with gzip.open(old, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    with pytest.raises(UserError, match="'variant' label .* synthesise it again"):
        build_task("synth-language", cuts=old)
    assert len(build_task("synth-speaker", cuts=old).splits["test"]) > 0  # no variant needed


def test_every_supervision_is_labelled(corpus):
    _, cuts = corpus
    for cut in cuts:
        assert len(cut.supervisions) == 1
        sup = cut.supervisions[0]
        assert sup.start == 0 and sup.duration == pytest.approx(cut.duration)
        assert set(sup.custom) >= {"speaker", "variant", "gender", "language", "text"}
        assert sup.speaker == sup.custom["speaker"]
        assert sup.language == sup.custom["language"] in LANGUAGES
        assert sup.text == sup.custom["text"]
        assert 3 <= len(sup.text.split()) <= 10
        variant = sup.custom["variant"]
        assert sup.speaker == f"synth_{variant.lower()}"
        assert sup.gender == sup.custom["gender"] == VOICE_VARIANTS[variant]


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
