"""Recipes, the checks on every file, splits and info, on layouts the tests build."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import write_audio

from speechssl.audio.io import load_cut
from speechssl.data import corpora
from speechssl.data.info import describe
from speechssl.data.manifest import (
    BadInputError,
    build_cutset,
    labels_of,
    load_cut_sets,
    load_cuts,
    save_cuts,
)
from speechssl.data.split import parse_ratios, split_by_speaker
from speechssl.errors import UserError


def make_folder(tmp_path: Path, rows: list[dict], header=None) -> tuple[Path, Path]:
    audio = tmp_path / "audio"
    audio.mkdir(exist_ok=True)
    csv_path = tmp_path / "labels.csv"
    header = header or list(rows[0])
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    return audio, csv_path


def good_folder(tmp_path: Path, n_speakers=4, per_speaker=3):
    rows = []
    for s in range(n_speakers):
        for u in range(per_speaker):
            rel = f"spk{s}/u{u}.wav"
            write_audio(tmp_path / "audio" / rel, seconds=0.3 + 0.1 * u)
            rows.append(
                {"path": rel, "duration_s": "0.3", "speaker": f"s{s}", "emotion": ["a", "b"][u % 2]}
            )
    return make_folder(tmp_path, rows)


def test_folder_recipe_labels_and_metadata_columns(tmp_path):
    audio, labels = good_folder(tmp_path)
    cuts, report = build_cutset(corpora.folder_rows(audio, labels), progress=False)
    assert len(cuts) == 12 and report.kept == 12 and not report.problems
    first = cuts["spk0/u1"]
    assert labels_of(first) == {"speaker": "s0", "emotion": "b"}  # duration_s is metadata
    assert first.supervisions[0].speaker == "s0"
    assert first.duration == pytest.approx(0.4)


def test_folder_without_a_csv_takes_every_audio_file_unlabelled(tmp_path):
    write_audio(tmp_path / "noise" / "a.wav", seconds=0.5)
    write_audio(tmp_path / "noise" / "sub" / "b.flac", seconds=0.3)
    (tmp_path / "noise" / "readme.txt").write_text("not audio")
    cuts, report = build_cutset(corpora.folder_rows(tmp_path / "noise"), progress=False)
    assert sorted(c.id for c in cuts) == ["a", "sub/b"] and report.kept == 2
    assert all(labels_of(c) == {} for c in cuts)
    assert cuts["sub/b"].duration == pytest.approx(0.3)
    with pytest.raises(UserError, match="CSV"):
        corpora.folder_rows(tmp_path / "noise", None, ["speaker"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no audio files"):
        corpora.folder_rows(tmp_path / "empty")


def test_other_rates_and_stereo_load_as_16k_mono_and_are_counted(tmp_path):
    rows = []
    x8 = write_audio(tmp_path / "audio" / "a.flac", seconds=1.0, sr=8000)
    x2 = write_audio(tmp_path / "audio" / "b.wav", seconds=1.0, sr=16000, channels=2)
    write_audio(tmp_path / "audio" / "c.wav", seconds=1.0, sr=44100)
    for name in ("a.flac", "b.wav", "c.wav"):
        rows.append({"path": name, "speaker": "x"})
    audio, labels = make_folder(tmp_path, rows)
    cuts, report = build_cutset(corpora.folder_rows(audio, labels), progress=False)
    assert report.resampled == Counter({8000: 1, 44100: 1})
    assert report.downmixed == 1
    for cut in cuts:
        assert cut.sampling_rate == 16000
        y = load_cut(cut)
        assert y.ndim == 1 and len(y) == pytest.approx(16000, abs=2)
    # down-mix is the mean of the channels
    np.testing.assert_allclose(load_cut(cuts["b"]), x2.mean(1), atol=1e-4)
    # 8 kHz sine resampled keeps its amplitude and frequency
    y = load_cut(cuts["a"])
    assert np.abs(y[100:-100]).max() == pytest.approx(np.abs(x8).max(), rel=0.05)
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) * 16000 / len(y) == pytest.approx(220, abs=2)


def test_every_bad_row_is_named(tmp_path):
    audio = tmp_path / "audio"
    rows = [{"path": "good.wav", "speaker": "a"}]
    write_audio(audio / "good.wav")
    (audio / "empty.wav").write_bytes(b"")
    (audio / "garbage.flac").write_bytes(b"not audio at all" * 50)
    write_audio(audio / "trunc.flac", seconds=2.0)
    data = (audio / "trunc.flac").read_bytes()
    (audio / "trunc.flac").write_bytes(data[: len(data) // 2])
    write_audio(audio / "cut.wav", seconds=2.0)
    data = (audio / "cut.wav").read_bytes()
    (audio / "cut.wav").write_bytes(data[: len(data) // 2])
    sf.write(audio / "nosamples.wav", np.zeros(0, dtype=np.float32), 16000)
    write_audio(audio / "nolabel.wav")
    for name in (
        "empty.wav",
        "garbage.flac",
        "trunc.flac",
        "cut.wav",
        "nosamples.wav",
        "missing.wav",
    ):
        rows.append({"path": name, "speaker": "a"})
    rows.append({"path": "nolabel.wav", "speaker": ""})
    rows.append({"path": "", "speaker": "a"})
    audio, labels = make_folder(tmp_path, rows)

    with pytest.raises(BadInputError) as err:
        build_cutset(corpora.folder_rows(audio, labels), progress=False)
    report = err.value.report
    named = {Path(p.file).name: p for p in report.problems}
    assert set(named) == {
        "empty.wav",
        "garbage.flac",
        "trunc.flac",
        "cut.wav",
        "nosamples.wav",
        "missing.wav",
        "nolabel.wav",
        "<empty path>",
    }
    assert len(report.problems) == 8
    assert "truncated" in named["cut.wav"].reason
    assert "truncated" in named["trunc.flac"].reason or "corrupt" in named["trunc.flac"].reason
    assert "does not exist" in named["missing.wav"].reason
    assert "speaker" in named["nolabel.wav"].reason
    # CSV line numbers: header is line 1, good.wav line 2, empty.wav line 3
    assert named["empty.wav"].origin == "labels.csv line 3"
    text = report.render()
    for name in ("empty.wav", "garbage.flac", "trunc.flac", "missing.wav", "line 10"):
        assert name in text

    cuts, report = build_cutset(corpora.folder_rows(audio, labels), skip_bad=True, progress=False)
    assert [c.id for c in cuts] == ["good"]
    assert len(report.problems) == 8 and report.kept == 1
    assert "8 rows skipped" in report.render()


def test_csv_without_path_column(tmp_path):
    audio, labels = make_folder(tmp_path, [{"file": "a.wav", "speaker": "x"}])
    with pytest.raises(UserError, match="no 'path' column"):
        corpora.folder_rows(audio, labels)


def test_missing_folder_and_csv(tmp_path):
    with pytest.raises(UserError, match="audio folder not found"):
        corpora.folder_rows(tmp_path / "nope", tmp_path / "x.csv")
    with pytest.raises(UserError, match="labels CSV not found"):
        corpora.folder_rows(tmp_path, tmp_path / "x.csv")


def test_fsdd_and_ravdess_names_on_miniature_layouts(tmp_path):
    for name in ("3_george_7.wav", "0_theo_2.wav", "bad-name.wav"):
        write_audio(tmp_path / "fsdd" / "recordings" / name, sr=8000)
    cuts, report = build_cutset(corpora.fsdd_rows(tmp_path / "fsdd"), skip_bad=True, progress=False)
    assert labels_of(cuts["3_george_7"]) == {
        "digit": "3",
        "speaker": "george",
        "gender": "male",
        "accent": "GRC",
        "index": "7",
        "split": "train",
    }
    assert labels_of(cuts["0_theo_2"])["split"] == "test"
    assert len(report.problems) == 1 and "bad-name" in report.problems[0].file

    for name in (
        "03-01-05-02-01-01-07.wav",
        "03-01-02-01-02-02-12.wav",
        "03-02-01-01-01-01-12.wav",
    ):
        write_audio(tmp_path / "rav" / f"Actor_{name[-6:-4]}" / name)
    cuts, report = build_cutset(
        corpora.ravdess_rows(tmp_path / "rav"), skip_bad=True, progress=False
    )
    got = labels_of(cuts["Actor_07/03-01-05-02-01-01-07"])
    assert got == {
        "speaker": "ravdess_07",
        "gender": "male",
        "emotion": "angry",
        "intensity": "strong",
        "statement": "01",
        "repetition": "01",
    }
    assert labels_of(cuts["Actor_12/03-01-02-01-02-02-12"])["gender"] == "female"
    assert len(report.problems) == 1 and "song" in report.problems[0].reason


def test_librispeech_via_lhotse_on_miniature_layout(tmp_path):
    root = tmp_path / "LibriSpeech"
    for spk, chapter in (("19", "198"), ("26", "495")):
        d = root / "dev-clean" / spk / chapter
        lines = []
        for u in range(2):
            uid = f"{spk}-{chapter}-{u:04d}"
            write_audio(d / f"{uid}.flac", seconds=0.4)
            lines.append(f"{uid} HELLO WORLD {u}")
        (d / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    (root / "SPEAKERS.TXT").write_text(
        "; ID | SEX | SUBSET | MINUTES | NAME\n19 | F | train-clean-100 | 25.19 | Kara\n"
        "26 | M | train-clean-100 | 25.08 | Denny\n"
    )
    cuts, _ = build_cutset(corpora.librispeech_rows(root), progress=False)
    assert len(cuts) == 4
    c = cuts["19-198-0001"]
    assert labels_of(c) == {
        "speaker": "libri_19",
        "gender": "female",
        "chapter": "198",
        "part": "dev-clean",
    }
    assert c.supervisions[0].text == "HELLO WORLD 1"
    assert labels_of(cuts["26-495-0000"])["gender"] == "male"


def test_voxceleb1_via_lhotse_on_miniature_layout(tmp_path):
    root = tmp_path / "vox1"
    meta = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
    for spk, g, split in (("id10001", "m", "dev"), ("id10270", "f", "test")):
        meta.append(f"{spk}\tName_{spk}\t{g}\tIreland\t{split}")
        for vid in ("abcDEF", "xyzUVW"):
            write_audio(root / "wav" / spk / vid / "00001.wav", seconds=0.3)
    (root / "vox1_meta.csv").write_text("\n".join(meta) + "\n")
    cuts, _ = build_cutset(corpora.voxceleb_rows(vox1=root), progress=False)
    assert len(cuts) == 4
    by_speaker = {labels_of(c)["speaker"]: labels_of(c) for c in cuts}
    assert by_speaker["id10001"]["gender"] == "male" and by_speaker["id10001"]["split"] == "train"
    assert by_speaker["id10270"]["gender"] == "female" and by_speaker["id10270"]["split"] == "test"


def test_split_never_shares_a_speaker(tmp_path):
    audio, labels = good_folder(tmp_path, n_speakers=10, per_speaker=3)
    cuts, _ = build_cutset(corpora.folder_rows(audio, labels), progress=False)
    ratios = parse_ratios("train=0.6,dev=0.2,test=0.2")
    parts = split_by_speaker(cuts, ratios, seed=3)
    speakers = {n: {labels_of(c)["speaker"] for c in p} for n, p in parts.items()}
    assert not (speakers["train"] & speakers["dev"]) and not (speakers["train"] & speakers["test"])
    assert not (speakers["dev"] & speakers["test"])
    assert sorted(c.id for p in parts.values() for c in p) == sorted(c.id for c in cuts)
    assert len(parts["train"]) == 18 and len(parts["dev"]) == 6 and len(parts["test"]) == 6
    again = split_by_speaker(cuts, ratios, seed=3)
    assert all([c.id for c in again[n]] == [c.id for c in parts[n]] for n in parts)
    others = [split_by_speaker(cuts, ratios, seed=s)["test"] for s in range(4, 9)]
    assert any({c.id for c in o} != {c.id for c in parts["test"]} for o in others)


def test_split_errors(tmp_path):
    audio, labels = good_folder(tmp_path, n_speakers=2)
    cuts, _ = build_cutset(corpora.folder_rows(audio, labels), progress=False)
    with pytest.raises(UserError, match="2 speakers cannot fill 3 splits"):
        split_by_speaker(cuts, parse_ratios("a=1,b=1,c=1"))
    with pytest.raises(UserError, match="bad split ratio"):
        parse_ratios("train=lots")
    with pytest.raises(UserError, match="no 'accent' label"):
        split_by_speaker(cuts, {"a": 1, "b": 1}, field="accent")


def test_info_counts(tmp_path):
    audio, labels = good_folder(tmp_path, n_speakers=3, per_speaker=4)
    cuts, _ = build_cutset(corpora.folder_rows(audio, labels), progress=False)
    info = describe(cuts)
    assert info.utterances == 12
    expected = 3 * (0.3 + 0.4 + 0.5 + 0.6)
    assert info.hours * 3600 == pytest.approx(expected)
    assert info.labels["emotion"] == Counter({"a": 6, "b": 6})
    assert info.native_rates == Counter({16000: 12})
    text = info.render()
    assert "utterances: 12" in text and "label speaker (3 values)" in text


def test_info_plot_has_a_panel_per_listed_label(tmp_path):
    from speechssl.report.cutset_info import plot_info

    audio, labels = good_folder(tmp_path, n_speakers=3, per_speaker=4)
    cuts, _ = build_cutset(corpora.folder_rows(audio, labels), progress=False)
    info = describe(cuts)
    png = plot_info(info, tmp_path / "plots" / "info.png", title="t").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(png[16:20], "big")  # IHDR: 4.5 in x 110 dpi per panel
    assert width == round(4.5 * (1 + len(info.labels)) * 110)


def test_shared_ravdess_folder_gives_1200_labelled_cuts(shared_data):
    root = shared_data / "ravdess"
    cuts, report = build_cutset(corpora.folder_rows(root, root / "labels.csv"), progress=False)
    assert len(cuts) == 1200 and not report.problems
    assert all({"speaker", "gender", "emotion"} <= set(labels_of(c)) for c in cuts)
    # The file-name recipe, written independently of the CSV, agrees on every label.
    by_name, _ = build_cutset(corpora.ravdess_rows(root), progress=False)
    assert {c.id: labels_of(c) for c in by_name} == {c.id: labels_of(c) for c in cuts}


def test_shared_fsdd_names_agree_with_csv(shared_data):
    root = shared_data / "fsdd"
    by_csv, report = build_cutset(corpora.folder_rows(root, root / "labels.csv"), progress=False)
    assert report.resampled == Counter({8000: 3000})
    by_name, _ = build_cutset(corpora.fsdd_rows(root), progress=False)
    assert {c.id.split("/")[-1]: labels_of(c) for c in by_csv} == {
        c.id: labels_of(c) for c in by_name
    }


def test_prepared_manifest_reads_from_any_working_directory(tmp_path, monkeypatch):
    """Defect 1 of issue 15: paths were stored relative to the directory of `data prepare`."""
    good_folder(tmp_path / "corpus", n_speakers=1, per_speaker=2)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    cuts, _ = build_cutset(
        corpora.folder_rows(Path("../corpus/audio"), Path("../corpus/labels.csv")), progress=False
    )
    save_cuts(cuts, "out/cuts.jsonl.gz")
    source = cuts["spk0/u0"].recording.sources[0].source
    assert Path(source).is_absolute() and ".." not in Path(source).parts
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = load_cuts(tmp_path / "work" / "out" / "cuts.jsonl.gz")
    assert len(load_cut(again["spk0/u1"])) == round(0.4 * 16000)


def test_old_relative_manifest_resolves_against_its_own_folder(tmp_path, monkeypatch):
    good_folder(tmp_path, n_speakers=1, per_speaker=2)
    monkeypatch.chdir(tmp_path)
    cuts, _ = build_cutset(corpora.folder_rows("audio", "labels.csv"), progress=False)
    for cut in cuts:  # as older versions wrote them: relative to the manifest's folder here
        src = cut.recording.sources[0]
        src.source = str(Path(src.source).relative_to(tmp_path))
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    other = tmp_path / "a" / "b"
    other.mkdir(parents=True)
    monkeypatch.chdir(other)
    for loaded in (load_cuts("../../cuts.jsonl.gz"), load_cut_sets(["../../cuts.jsonl.gz"])):
        src = loaded["spk0/u0"].recording.sources[0].source
        assert src == str(tmp_path / "audio" / "spk0" / "u0.wav")
        assert len(load_cut(loaded["spk0/u0"])) == round(0.3 * 16000)


def test_missing_file_message_names_the_path_and_the_rule(tmp_path):
    good_folder(tmp_path, n_speakers=1, per_speaker=1)
    cuts, _ = build_cutset(
        corpora.folder_rows(tmp_path / "audio", tmp_path / "labels.csv"), progress=False
    )
    cut = cuts["spk0/u0"]
    cut.recording.sources[0].source = "moved/u0.wav"
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    with pytest.raises(UserError) as err:
        load_cut(load_cuts(tmp_path / "cuts.jsonl.gz")["spk0/u0"])
    message = str(err.value)
    assert str(tmp_path / "moved" / "u0.wav") in message
    assert "resolved against the manifest's folder" in message
    assert "\n" not in message


def test_anchor_paths_covers_arrays_in_custom_fields(tmp_path):
    from lhotse.array import Array, TemporalArray

    from speechssl.audio.io import anchor_paths, recording

    write_audio(tmp_path / "a.wav")
    (tmp_path / "align").mkdir()
    cut = recording(tmp_path / "a.wav", recording_id="a").to_cut()
    cut.recording.sources[0].source = "a.wav"
    array = Array(storage_type="numpy_files", storage_path="align", storage_key="a.npy", shape=[5])
    cut.custom = {"phonemes": TemporalArray(array, temporal_dim=0, frame_shift=0.01, start=0.0)}
    anchor_paths(cut, tmp_path)
    assert cut.recording.sources[0].source == str(tmp_path / "a.wav")
    assert cut.custom["phonemes"].array.storage_path == str(tmp_path / "align")
    anchor_paths(cut, tmp_path / "elsewhere")  # absolute paths stay as they are
    assert cut.recording.sources[0].source == str(tmp_path / "a.wav")


def test_every_recipe_stores_absolute_paths(tmp_path, monkeypatch):
    write_audio(tmp_path / "fsdd" / "3_george_7.wav", sr=8000)
    write_audio(tmp_path / "rav" / "Actor_07" / "03-01-05-02-01-01-07.wav")
    d = tmp_path / "LibriSpeech" / "dev-clean" / "19" / "198"
    write_audio(d / "19-198-0000.flac")
    (d / "19-198.trans.txt").write_text("19-198-0000 HELLO\n")
    monkeypatch.chdir(tmp_path)
    for rows in (
        corpora.fsdd_rows("fsdd"),
        corpora.ravdess_rows("./rav"),
        corpora.librispeech_rows("LibriSpeech"),
    ):
        (cut,) = build_cutset(rows, progress=False)[0]
        source = cut.recording.sources[0].source
        assert Path(source).is_absolute() and Path(source).is_file()


def test_cli_prepare_with_a_relative_folder_then_use_from_elsewhere(tmp_path, monkeypatch, capsys):
    """The README's own example (`--audio-dir ../shared/data/...`), then a cd."""
    from speechssl.cli import main

    good_folder(tmp_path / "corpus", n_speakers=2, per_speaker=1)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    argv = ["data", "prepare", "folder", "--audio-dir", "../corpus/audio"]
    argv += ["--labels", "../corpus/labels.csv", "--out", "cuts.jsonl.gz"]
    assert main(argv) == 0
    monkeypatch.chdir(tmp_path)
    cuts = load_cuts("work/cuts.jsonl.gz")
    assert all(len(load_cut(c)) > 0 for c in cuts)
    capsys.readouterr()
