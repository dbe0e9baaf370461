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
        (["data", "info", "--cuts", "/nonexistent/cuts.jsonl.gz"], "cut manifest not found"),
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
        (
            ["data", "split", "--cuts", "/nonexistent.jsonl.gz", "--out", "x"],
            "cut manifest not found",
        ),
        (["demo", "--config", "/nonexistent.yaml"], "config file not found"),
        (["data", "synth", "--out", "out", "--minutes", "-1"], "--minutes -1.0 is out of range"),
    ],
)
def test_user_mistakes_give_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("speechssl: error:") and message in err[0]


def test_debug_shows_the_traceback():
    from speechssl.errors import UserError

    with pytest.raises(UserError):
        main(["--debug", "data", "info", "--cuts", "/nonexistent/cuts.jsonl.gz"])


def test_wrong_type_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "synth", "--out", "out", "--minutes", "lots"])
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
                "--cuts",
                str(cuts),
                "--out",
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
    assert main(["data", "info", "--cuts", str(cuts), "--plot", str(png)]) == 0
    shown = capsys.readouterr().out
    assert "utterances: 8" in shown and "label emotion (2 values): a: 4, b: 4" in shown
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_script_is_installed(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "speechssl.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and __version__ in result.stdout


HEAVY = ("torch", "lhotse", "scipy", "matplotlib")


def test_building_any_parser_imports_nothing_heavy():
    """`--help` and a mistyped command answer at once: the parser of the top level and of
    every command is built without torch, lhotse, scipy or matplotlib (in a fresh process)."""
    code = (
        "import sys\n"
        "from speechssl.cli import build_parser\n"
        "_, commands = build_parser()\n"
        f"heavy = {HEAVY!r}\n"
        "print('top', *[m for m in heavy if m in sys.modules])\n"
        "for path in commands:\n"
        "    build_parser([*path, '--help'])\n"
        "    print(*path, *[m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "top" and len(lines) > 20
    loaded = [line for line in lines if not set(line.split()).isdisjoint(HEAVY)]
    assert not loaded, f"parsers that import heavy modules: {loaded}"


def _help(capsys, *path: str) -> str:
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _options(text: str, prefix: str) -> set[str]:
    return set(re.findall(rf"(--{re.escape(prefix)}[\w.-]+)", text))


def test_debug_is_accepted_after_the_command_too():
    from speechssl.errors import UserError

    with pytest.raises(UserError, match="cut manifest not found"):
        main(["data", "info", "--cuts", "/nonexistent/cuts.jsonl.gz", "--debug"])


def test_inputs_and_outputs_are_options_everywhere(capsys):
    """No command takes a positional path: inputs are --cuts (or named), outputs --out."""
    _, commands = build_parser()
    for path in commands:
        usage = _help(capsys, *path).split("\n\n")[0]
        words = re.sub(r"\[[^\[\]]*(\[[^\[\]]*\][^\[\]]*)*\]", "", usage).split()
        positional = [w for w in words[len(path) + 2 :] if w[0] not in "-{" and w.islower()]
        assert not positional, f"{' '.join(path)} takes positionals {positional}"
    assert "--cuts" in _help(capsys, "data", "info")
    assert {"--cuts", "--out"} <= set(_help(capsys, "data", "split").split())
    assert "--out" in _help(capsys, "data", "synth")


@pytest.mark.parametrize("command", ["pretrain", "dino", "supervised"])
def test_one_resume_option(command, capsys):
    text = _help(capsys, command)
    assert "--resume" in text and "--train.resume" not in text
    with pytest.raises(SystemExit) as e:
        main([command, "--train.resume"])
    assert e.value.code == 2
    assert "unrecognized arguments: --train.resume" in capsys.readouterr().err


def test_options_a_command_ignores_are_not_listed(capsys):
    assert "--train.batch-duration" in _help(capsys, "pretrain")
    for command in ("dino", "supervised"):  # batches of data.batch-size cuts
        text = _help(capsys, command)
        assert "--train.batch-duration" not in text and "--data.batch-size" in text


def test_dino_and_finetune_spell_augmentation_the_same(capsys):
    dino, finetune = _help(capsys, "dino"), _help(capsys, "finetune")
    assert len(_options(dino, "augment.")) > 10
    assert _options(finetune, "augment.") == _options(dino, "augment.")
    assert "--augmentation" not in finetune and "--no-augment" not in finetune


def test_finetune_augments_only_when_asked(tmp_path):
    from speechssl.config import build
    from speechssl.data.multicrop import augments
    from speechssl.recipes.finetune import FinetuneConfig

    base = {"upstream": "x", "out": str(tmp_path)}
    assert not augments(build(FinetuneConfig, base).augment)
    assert augments(build(FinetuneConfig, base | {"augment.noise_prob": 0.5}).augment)


def test_help_lists_the_shipped_configs_a_command_takes(capsys):
    from speechssl.config import shipped_configs

    names = shipped_configs()
    pretrain, dino = _help(capsys, "pretrain"), _help(capsys, "dino")
    # argparse may wrap a name at its hyphen: compare without white space
    flat = {c: re.sub(r"\s+", "", t) for c, t in (("pretrain", pretrain), ("dino", dino))}
    for name in names:
        family = name.split("-")[0]
        if family in ("hubert", "data2vec", "mt4ssl"):
            assert name in flat["pretrain"] and name not in flat["dino"]
        elif family == "dino":
            assert name in flat["dino"] and name not in flat["pretrain"]
    assert any(n.startswith("dino-") for n in names) and any(n.startswith("hubert") for n in names)
    assert "shipped config" not in _help(capsys, "data", "split")


@pytest.mark.parametrize("package", ["training", "indicators", "evaluation"])
def test_light_packages_still_export_everything(package):
    """These packages load their exports on first use (so a config stays light to import);
    every name they export must still resolve, to the object its module defines."""
    import importlib

    module = importlib.import_module(f"speechssl.{package}")
    for name in module.__all__:
        obj = getattr(module, name)
        home = importlib.import_module(f"speechssl.{package}.{module._EXPORTS[name]}")
        assert obj is getattr(home, name)
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_a_parse_error_is_one_line_not_the_usage(capsys):
    """argparse printed the whole usage first: 80 lines for `pretrain` before the error."""
    try:
        code = main(["pretrain", "--targets.teacher-target", "ffx"])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'ffx' is not one of ffn, residual" in err[0]
    assert err[0].endswith("(see speechssl pretrain --help)")
