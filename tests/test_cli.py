"""The command line: round trips, help, and what a user sees when something is wrong."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from conftest import write_audio

from speechssl import __version__
from speechssl.cli import build_parser, main
from speechssl.data.manifest import labels_of, load_cuts


def folder(tmp_path, bad=False):
    audio = tmp_path / "audio"
    lines = ["path,speaker,emotion"]
    for s in range(4):
        for u in range(2):
            write_audio(audio / f"s{s}_{u}.wav", seconds=0.3)
            lines.append(f"s{s}_{u}.wav,spk{s},{'ab'[u]}")
    if bad:
        (audio / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
        lines.append("broken.wav,spk0,a")
        lines.append("gone.flac,spk1,b")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return audio, tmp_path / "labels.csv"


def test_every_command_has_help(capsys):
    _, commands = build_parser()
    assert ("data", "prepare", "folder") in commands and ("demo",) in commands
    for path in commands:
        with pytest.raises(SystemExit) as e:
            main([*path, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "--config" in out and len(out.splitlines()) > 4


def test_prepare_folder_round_trip(tmp_path, capsys):
    audio, labels = folder(tmp_path)
    out = tmp_path / "out" / "cuts.jsonl.gz"
    code = main(
        [
            "data",
            "prepare",
            "folder",
            "--audio-dir",
            str(audio),
            "--labels",
            str(labels),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "wrote 8 cuts" in capsys.readouterr().out
    cuts = load_cuts(out)
    assert sorted(labels_of(c)["speaker"] for c in cuts) == sorted(
        f"spk{s}" for s in range(4) for _ in "ab"
    )
    run = tmp_path / "out" / "cuts.run"
    assert json.loads((run / "run.json").read_text())["speechssl_version"] == __version__
    assert yaml.safe_load((run / "config.yaml").read_text())["audio_dir"] == str(audio)


def test_bad_rows_exit_2_and_are_named(tmp_path, capsys):
    audio, labels = folder(tmp_path, bad=True)
    out = tmp_path / "cuts.jsonl.gz"
    argv = [
        "data",
        "prepare",
        "folder",
        "--audio-dir",
        str(audio),
        "--labels",
        str(labels),
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "broken.wav" in err and "gone.flac" in err and "labels.csv line 10" in err
    assert err.strip().splitlines()[-1].startswith("speechssl: error: 2 of 10 rows")
    assert "Traceback" not in err and not out.exists()

    assert main([*argv, "--skip-bad"]) == 0
    shown = capsys.readouterr().out
    assert "2 rows skipped" in shown and "wrote 8 cuts" in shown
    assert len(load_cuts(out)) == 8


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "info", "/nonexistent/cuts.jsonl.gz"], "cut manifest not found"),
        (
            [
                "data",
                "prepare",
                "folder",
                "--audio-dir",
                ".",
                "--labels",
                "/no.csv",
                "--out",
                "x.jsonl.gz",
            ],
            "labels CSV not found",
        ),
        (
            ["data", "prepare", "ravdess", "--root", "/nonexistent", "--out", "x.jsonl.gz"],
            "folder not found",
        ),
        (["data", "split", "/nonexistent.jsonl.gz", "--out-dir", "x"], "cut manifest not found"),
        (["demo", "--config", "/nonexistent.yaml"], "config file not found"),
        (["data", "synth", "out", "--minutes", "-1"], "minutes must be a positive number"),
    ],
)
def test_user_mistakes_give_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("speechssl: error:") and message in err[0]


def test_debug_shows_the_traceback():
    from speechssl.errors import UserError

    with pytest.raises(UserError):
        main(["--debug", "data", "info", "/nonexistent/cuts.jsonl.gz"])


def test_wrong_type_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "synth", "out", "--minutes", "lots"])
    assert e.value.code == 2
    assert "invalid float value" in capsys.readouterr().err


def test_split_and_info_round_trip(tmp_path, capsys):
    audio, labels = folder(tmp_path)
    cuts = tmp_path / "cuts.jsonl.gz"
    main(
        [
            "data",
            "prepare",
            "folder",
            "--audio-dir",
            str(audio),
            "--labels",
            str(labels),
            "--out",
            str(cuts),
        ]
    )
    capsys.readouterr()
    assert (
        main(
            [
                "data",
                "split",
                str(cuts),
                "--out-dir",
                str(tmp_path / "s"),
                "--ratios",
                "train=0.5,test=0.5",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    shown = capsys.readouterr().out
    assert re.search(r"train: 4 utterances, 2 speakers", shown)
    train, test = (
        load_cuts(tmp_path / "s" / "train.jsonl.gz"),
        load_cuts(tmp_path / "s" / "test.jsonl.gz"),
    )
    assert not {labels_of(c)["speaker"] for c in train} & {labels_of(c)["speaker"] for c in test}

    png = tmp_path / "info.png"
    assert main(["data", "info", str(cuts), "--plot", str(png)]) == 0
    shown = capsys.readouterr().out
    assert "utterances: 8" in shown and "label emotion (2 values): a: 4, b: 4" in shown
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_script_is_installed(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "speechssl.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and __version__ in result.stdout
