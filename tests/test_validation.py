"""Nonsense numbers are refused when a config is built: one line naming the option, the value
and the range (exit 2 from the CLI), for every bounded option of every config dataclass."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
import typing
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest

import speechssl
from speechssl import config
from speechssl.cli import main
from speechssl.errors import UserError

# Numeric options that take any value: indices that may count from the end (checked against
# the model later), levels and ratios in dB, and exponents whose sign has a meaning.
UNBOUNDED = {
    "KmeansFitConfig.layer",
    "TargetsSection.kmeans_layer",
    "NextIterationConfig.layer",
    "ProbeConfig.layer",
    "AssessConfig.layers",
    "MonitorSection.layers",
    "AugmentConfig.noise_snr",
    "AugmentConfig.coloured_beta",
    "AugmentConfig.babble_snr",
    "AugmentConfig.drr_db",
    "AugmentConfig.gain_db",
}


def _config_classes() -> list[type]:
    """Every dataclass in speechssl whose fields are ``opt(...)`` fields (a config)."""
    found = {}
    for mod in pkgutil.walk_packages(speechssl.__path__, "speechssl."):
        if mod.name.endswith("__main__"):
            continue
        module = importlib.import_module(mod.name)
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and dataclasses.is_dataclass(obj)
                and obj.__module__ == module.__name__
                and any("help" in f.metadata for f in dataclasses.fields(obj))
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


CLASSES = _config_classes()


def _base(cls: type, name: str):
    hint = typing.get_type_hints(cls)[name]
    base, _ = config._unwrap_optional(hint)
    if get_origin(base) in (list, tuple):
        return base, (get_args(base) or (str,))[0]
    return base, None


def _numeric_fields():
    for cls in CLASSES:
        for f in dataclasses.fields(cls):
            base, item = _base(cls, f.name)
            if (item or base) in (int, float) and base is not bool:
                yield cls, f


def _bounded():
    return [
        pytest.param(cls, f, id=f"{cls.__name__}.{f.name}")
        for cls, f in _numeric_fields()
        if f.metadata.get("bounds")
    ]


def _dummy(cls: type, name: str):
    """A valid value for a required field, so that building reaches the field under test."""
    base, item = _base(cls, name)
    if item is not None:
        return []
    if get_origin(base) is Literal:
        return get_args(base)[0]
    return {Path: "x", str: "x", int: 1, float: 1.0, bool: False}[base]


def _outside(bounds: dict, is_int: bool) -> list:
    """Values just outside each bound (the bound itself for a strict one)."""
    step = 1 if is_int else 0.5
    out = []
    if "ge" in bounds:
        out.append(bounds["ge"] - step)
    if "gt" in bounds:
        out.append(bounds["gt"])
    if "le" in bounds:
        out.append(bounds["le"] + step)
    if "lt" in bounds:
        out.append(bounds["lt"])
    return [int(v) if is_int else float(v) for v in out]


def test_walk_finds_the_configs_of_every_command():
    names = {c.__name__ for c in CLASSES}
    assert {"TrainConfig", "ProbeConfig", "FinetuneConfig", "KmeansLabelConfig"} <= names
    assert {"MaskingSection", "DinoSection", "AugmentConfig", "DemoConfig"} <= names
    assert len(_bounded()) > 100


def test_every_numeric_option_declares_a_range():
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls, f in _numeric_fields()
        if not f.metadata.get("bounds") and f"{cls.__name__}.{f.name}" not in UNBOUNDED
    ]
    assert not missing, f"numeric options without a range: {missing}"


@pytest.mark.parametrize("cls, f", _bounded())
def test_out_of_range_is_one_line_naming_option_value_and_range(cls, f):
    bounds = f.metadata["bounds"]
    base, item = _base(cls, f.name)
    is_int = (item or base) is int
    required = {
        g.name: _dummy(cls, g.name)
        for g in dataclasses.fields(cls)
        if config._field_default(g) is dataclasses.MISSING and g.name != f.name
    }
    default = config._field_default(f)
    if default is not dataclasses.MISSING:  # the shipped default lies in the range
        config.check_bounds(default, bounds, f.name)
    for bad in _outside(bounds, is_int):
        value = [bad] if item is not None else bad
        with pytest.raises(UserError) as exc:
            config.from_dict(cls, {**required, f.name: value}, where="sec.")
        message = str(exc.value)
        assert "\n" not in message
        option = f"--sec.{f.name.replace('_', '-')}"
        assert message.startswith(f"{option} {config._show(value)} is out of range: ")
        assert config.bounds_text(bounds) in message


@pytest.mark.parametrize(
    "bounds, inside, outside, text",
    [
        ({"ge": 1}, [1, 7], [0, -3], ">= 1"),
        ({"gt": 0}, [1e-9, 3.0], [0.0, -1.0], "> 0"),
        ({"ge": 0, "le": 1}, [0.0, 1.0, 0.5], [-0.1, 1.01, 5.0, float("nan")], "in [0, 1]"),
        ({"ge": 0, "lt": 1}, [0.0, 0.999], [1.0], "in [0, 1)"),
    ],
)
def test_bounds(bounds, inside, outside, text):
    assert config.bounds_text(bounds) == text
    assert all(config.in_bounds(v, bounds) for v in inside)
    assert not any(config.in_bounds(v, bounds) for v in outside)


def test_nested_sections_name_the_option_as_typed():
    from speechssl.recipes.pretrain import PretrainConfig

    with pytest.raises(UserError, match=r"^--masking\.prob 5\.0 is out of range: must be in"):
        config.build(PretrainConfig, {"data.train": ["x"], "masking.prob": 5})
    with pytest.raises(UserError, match=r"^--train\.lr -1\.0 is out of range: must be > 0$"):
        config.build(PretrainConfig, {"data.train": ["x"], "train.lr": "-1"})
    with pytest.raises(UserError, match=r"^--train\.betas 0\.9,1\.5 .* each item must be"):
        config.build(PretrainConfig, {"data.train": ["x"], "train.betas": "0.9,1.5"})
    # None still means "off" where a field allows it, and in-range values pass.
    cfg = config.build(PretrainConfig, {"data.train": ["x"], "train.grad_clip": None})
    assert cfg.train.grad_clip is None


def test_yaml_values_are_checked_too(tmp_path):
    from speechssl.recipes.probe import ProbeConfig

    y = tmp_path / "p.yaml"
    y.write_text("upstream: fbank\nout: o\nepochs: 0\n")
    with pytest.raises(UserError, match="^--epochs 0 is out of range: must be >= 1$"):
        config.build(ProbeConfig, yaml_file=y)


def test_shipped_configs_are_in_range():
    from speechssl.recipes.dino import DinoConfig
    from speechssl.recipes.pretrain import PretrainConfig
    from speechssl.recipes.supervised import SupervisedConfig

    for name in config.shipped_configs():
        cls = (
            DinoConfig
            if name.startswith("dino")
            else SupervisedConfig
            if name.startswith("supervised")
            else PretrainConfig
        )
        config.build(cls, {"data.train": ["x"]}, name)  # raises if a value is out of range


CLI_CASES = [
    (["probe", "--upstream", "fbank", "--out", "o", "--task", "fsdd-digit", "--epochs", "0"],
     "--epochs 0 is out of range: must be >= 1"),
    (["probe", "--upstream", "fbank", "--out", "o", "--task", "fsdd-digit", "--epochs", "-3"],
     "--epochs -3"),
    (["probe", "--upstream", "fbank", "--out", "o", "--task", "fsdd-digit", "--lr", "-1"],
     "--lr -1.0 is out of range: must be > 0"),
    (["probe", "--upstream", "fbank", "--out", "o", "--task", "fsdd-digit", "--batch-size", "0"],
     "--batch-size 0"),
    (["finetune", "--upstream", "u", "--out", "o", "--task", "fsdd-digit", "--epochs", "-1"],
     "--epochs -1"),
    (["finetune", "--upstream", "u", "--out", "o", "--task", "fsdd-digit",
      "--chunk-seconds", "0"], "--chunk-seconds 0.0 is out of range: must be > 0"),
    (["pretrain", "--data.train", "x", "--masking.prob", "5"],
     "--masking.prob 5.0 is out of range: must be in [0, 1]"),
    (["pretrain", "--data.train", "x", "--train.lr", "-1"], "--train.lr -1.0"),
    (["dino", "--data.train", "x", "--dino.out-dim", "0"],
     "--dino.out-dim 0 is out of range: must be >= 1"),
    (["kmeans", "fit", "--upstream", "mfcc", "--cuts", "c", "--out", "o", "--n-iter", "-1"],
     "--n-iter -1 is out of range: must be >= 0"),
    (["kmeans", "label", "--kmeans", "k", "--cuts", "c", "--out", "o", "--shard-size", "0"],
     "--shard-size 0"),
    (["kmeans", "label", "--kmeans", "k", "--cuts", "c", "--out", "o", "--shard-size", "-1"],
     "--shard-size -1"),
    (["kmeans", "label", "--kmeans", "k", "--cuts", "c", "--out", "o", "--batch-size", "0"],
     "--batch-size 0"),
    (["embed", "--upstream", "u", "--cuts", "c", "--out", "o.npz", "--batch-size", "0"],
     "--batch-size 0"),
]  # fmt: skip


@pytest.mark.parametrize("argv, expected", CLI_CASES, ids=[" ".join(c[0][-2:]) for c in CLI_CASES])
def test_cli_refuses_out_of_range_with_exit_2_and_one_line(argv, expected, capsys, tmp_path):
    argv = [str(tmp_path / a) if a in ("o", "o.npz") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("speechssl: error: ") and expected in err
    assert not any((tmp_path / n).exists() for n in ("o", "o.npz"))  # refused before any work


# -- select with no class large enough -----------------------------------------------------------


def _prepared(tmp_path, speakers=4, per_speaker=2) -> Path:
    from conftest import write_audio

    audio = tmp_path / "audio"
    lines = ["path,speaker"]
    for s in range(speakers):
        for u in range(per_speaker):
            write_audio(audio / f"s{s}_{u}.wav", seconds=0.3)
            lines.append(f"s{s}_{u}.wav,spk{s}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "cuts.jsonl.gz"
    argv = ["data", "prepare", "folder", "--audio-dir", str(audio), "--labels",
            str(tmp_path / "labels.csv"), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    return out


def test_select_with_no_class_large_enough_is_an_error(tmp_path, capsys):
    cuts = _prepared(tmp_path)
    capsys.readouterr()
    out = tmp_path / "sel"
    assert main(["select", "--cuts", str(cuts), "--label", "speaker", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "no 'speaker' class has 4 or more cuts" in err and "8 cuts in 4 classes" in err
    assert not (out / "selection.json").exists()


# -- messages that said the wrong thing ----------------------------------------------------------


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("speechssl: error: ")
    return err


def test_pretrain_next_on_a_dino_run_says_so(tmp_path, capsys):
    import json

    run = tmp_path / "dino-run"
    run.mkdir()
    (run / "config.yaml").write_text("augment:\n  noise_prob: 0.5\ndino:\n  out_dim: 64\n")
    (run / "run.json").write_text(json.dumps({"invocations": [{"job": "dino"}]}))
    argv = ["pretrain-next", "--run", str(run), "--cuts", "c.jsonl.gz", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = _one_error_line(capsys)
    assert "is a dino run, not a pretraining run" in err and "unknown option" not in err


def test_pretrain_next_on_a_missing_folder_says_so(tmp_path, capsys):
    missing = tmp_path / "missing"
    argv = ["pretrain-next", "--run", str(missing), "--cuts", "c", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = _one_error_line(capsys)
    assert f"--run {missing}: no such folder" in err and "shipped" not in err


def test_too_little_data_says_what_a_batch_needs(tmp_path):
    """Through the Trainer (it builds the sampler from a CutSet) and utterance_sampler."""
    import sys

    from lhotse import CutSet

    from speechssl.data.batching import CutDataset
    from speechssl.data.multicrop import utterance_sampler
    from speechssl.training import TrainConfig, Trainer

    sys.path.insert(0, str(Path(__file__).parent))
    from train_toy import ToyModel, ToyObjective, make_cuts

    cuts = make_cuts(tmp_path / "audio", n=3, seconds=0.5)
    cfg = TrainConfig(max_steps=1, batch_duration=10.0, num_workers=0, warmup_steps=0)
    trainer = Trainer(ToyModel(), ToyObjective(), cuts, CutDataset(), cfg, tmp_path / "run")
    with pytest.raises(UserError) as exc:
        trainer.fit()
    message = str(exc.value)
    assert "sampler" not in message and "drop_last" not in message
    assert "a batch needs 10 s of audio (--train.batch-duration)" in message
    assert "there are 3 cuts, 1.5 s of audio" in message
    with pytest.raises(UserError, match=r"needs 4 cuts \(--data.batch-size\); there are 3 cuts"):
        utterance_sampler(CutSet.from_cuts(cuts), 4, seed=0)


def test_synth_task_without_cuts_names_a_real_command():
    from speechssl.evaluation.tasks import build_task

    with pytest.raises(UserError, match="made by 'speechssl data synth'$"):
        build_task("synth-speaker")


@pytest.mark.parametrize("corpus", ["fsdd", "ravdess"])
def test_wrong_corpus_root_is_one_line(tmp_path, capsys, corpus):
    from conftest import write_audio

    for i in range(12):
        write_audio(tmp_path / "root" / "sub" / f"take{i}.wav", seconds=0.1)
    out = tmp_path / "cuts.jsonl.gz"
    argv = ["data", "prepare", corpus, "--root", str(tmp_path / "root"), "--out", str(out)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no per-file report
    err = captured.err
    assert len(err.strip().splitlines()) == 1, err
    assert "none of the 12 audio files" in err and "is --root the corpus folder?" in err
    assert err.count("take") == 3  # the first few, not every file


def test_empty_manifest_is_named(tmp_path, capsys):
    from speechssl.data.manifest import load_cuts

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match=f"cut manifest is empty .*: {empty}$") as exc:
        load_cuts(empty)
    assert "NoneType" not in str(exc.value)


def test_text_file_named_npz_is_a_clear_error(tmp_path):
    from speechssl.evaluation.verification import load_embeddings

    fake = tmp_path / "emb.npz"
    fake.write_text("not an archive\n")
    with pytest.raises(UserError, match="is not a .npz \\(zip\\) archive") as exc:
        load_embeddings(fake)
    assert "pickle" not in str(exc.value)


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_help_lines_have_no_empty_or_doubled_defaults_or_markup(cls):
    for f in dataclasses.fields(cls):
        base, _ = _base(cls, f.name)
        if dataclasses.is_dataclass(base):
            continue
        line = config.help_line(f, config._field_default(f), optional=True)
        assert "(default: )" not in line and "default: ;" not in line, line
        assert line.count("default") <= 1, line
        assert "`" not in line and ":class:" not in line, line
        assert not re.search(r"\) \((default|required|'none'|[<>]|in [\[(])", line), line
