import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from speechssl import config
from speechssl.config import opt
from speechssl.errors import UserError


@dataclass
class Optim:
    lr: float = opt(1e-3, "learning rate")
    betas: list[float] = opt(factory=lambda: [0.9, 0.98], help="Adam betas")


@dataclass
class Job:
    out: Path = opt(help="output")
    steps: int = opt(10, "steps")
    mode: Literal["a", "b"] = opt("a", "mode")
    fast: bool = opt(False, "go fast")
    limit: float | None = opt(1.0, "a limit")
    optim: Optim = opt(factory=Optim, help="optimiser")


def parse(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    config.add_arguments(p, Job)
    ns = vars(p.parse_args(argv))
    return config.build(Job, {k: v for k, v in ns.items() if k != "config"}, ns.get("config"))


def test_defaults_yaml_and_cli_layer_in_order(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("out: from_yaml\nsteps: 5\noptim:\n  lr: 0.5\n")
    cfg = parse(["--config", str(y), "--steps", "7", "--optim.betas", "0.8,0.9", "--fast"])
    assert cfg.out == Path("from_yaml")  # from YAML
    assert cfg.steps == 7  # CLI beats YAML
    assert cfg.optim.lr == 0.5  # nested YAML
    assert cfg.optim.betas == [0.8, 0.9]  # dotted CLI override, list parsed
    assert cfg.fast is True and cfg.mode == "a"


def test_dashed_options_and_no_flag():
    cfg = parse(["--out", "x", "--no-fast", "--mode", "b"])
    assert cfg.fast is False and cfg.mode == "b"


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("out: x\nstepz: 3\n", "unknown option stepz"),
        ("out: x\nsteps: many\n", "not a valid int"),
        ("out: x\nmode: c\n", "mode"),
        ("steps: 3\n", "missing required option --out"),
        ("- a\n- b\n", "mapping"),
    ],
)
def test_bad_yaml_is_a_user_error(tmp_path, yaml_text, message):
    y = tmp_path / "c.yaml"
    y.write_text(yaml_text)
    with pytest.raises(UserError, match=message):
        parse(["--config", str(y)])


def test_round_trip_through_yaml(tmp_path):
    cfg = parse(["--out", "o", "--optim.lr", "0.25"])
    config.save_yaml(cfg, tmp_path / "r.yaml")
    assert config.build(Job, yaml_file=tmp_path / "r.yaml") == cfg


def test_missing_config_file():
    with pytest.raises(UserError, match="config file not found"):
        config.build(Job, {"out": "x"}, "/nonexistent/c.yaml")


def test_optional_field_takes_none_on_the_command_line():
    assert parse(["--out", "x", "--limit", "none"]).limit is None
    assert parse(["--out", "x", "--limit", "2.5"]).limit == 2.5


@dataclass
class OtherJob:
    """A parent that ships other defaults for its nested section than the section's class."""

    optim: Optim = opt(factory=lambda: Optim(lr=0.25, betas=[0.5, 0.6]), help="optimiser")


def test_nested_section_keeps_the_parents_defaults_when_one_field_is_set(capsys):
    p = argparse.ArgumentParser()
    config.add_arguments(p, OtherJob)
    cfg = config.build(OtherJob, vars(p.parse_args(["--optim.lr", "0.1"])))
    assert cfg.optim.lr == 0.1 and cfg.optim.betas == [0.5, 0.6]  # not Optim's [0.9, 0.98]
    assert config.build(OtherJob, {}).optim == Optim(lr=0.25, betas=[0.5, 0.6])
    p.print_help()
    assert "(default: 0.25)" in capsys.readouterr().out.replace("\n", " ")


@dataclass
class Helped:
    src: Path = opt(help="folder written by `speechssl kmeans fit`")
    pool: list[Path] = opt(factory=list, help="CutSet(s) of the pool (default: the training cuts)")
    kind: Literal["a", "b"] = opt("a", "probe kind (custom task)")
    prob: float = opt(0.5, "masking probability", ge=0, le=1)
    crop: float | None = opt(5.0, "random crop (none: whole cuts)", gt=0)
    limit: float | None = opt(1.0, "a limit")


def _help_of(cls) -> dict[str, str]:
    return {
        f.name: config.help_line(f, config._field_default(f), optional=f.name in ("crop", "limit"))
        for f in config.dataclasses.fields(cls)
    }


def test_help_lines_are_plain_and_say_each_thing_once():
    h = _help_of(Helped)
    assert h["src"] == "folder written by 'speechssl kmeans fit' (required)"  # no backquotes
    assert h["pool"] == "CutSet(s) of the pool (default: the training cuts)"  # not doubled
    assert h["kind"] == "probe kind (custom task; default: a)"  # one parenthesis
    assert h["prob"] == "masking probability (default: 0.5; in [0, 1])"
    assert h["crop"] == "random crop (none: whole cuts; default: 5.0; > 0)"  # 'none' said once
    assert h["limit"] == "a limit (default: 1.0; 'none' to turn off)"
    assert config.plain_text("see :class:`~speechssl.models.Upstream` and ``x``") == (
        "see Upstream and 'x'"
    )


def test_required_options_are_listed_as_required(capsys):
    p = argparse.ArgumentParser()
    config.add_arguments(p, Helped)
    p.print_help()
    out = capsys.readouterr().out
    required = out.split("required options:")[1]
    assert "--src SRC" in required and "--prob" not in required
    assert "(default: )" not in out and "`" not in out


def test_skip_leaves_options_out(capsys):
    p = argparse.ArgumentParser()
    config.add_arguments(p, Job, skip={"optim.betas", "fast"})
    p.print_help()
    out = capsys.readouterr().out
    assert "--optim.lr" in out and "--optim.betas" not in out and "--fast" not in out


def test_an_adder_without_groups_still_gets_every_option():
    class Adder:  # a stand-in with add_argument only, as a filtering wrapper may be
        def __init__(self):
            self.flags = []

        def add_argument(self, *args, **kwargs):
            self.flags.append(args[0])

    adder = Adder()
    config.add_arguments(adder, Helped)
    assert adder.flags == ["--src", "--pool", "--kind", "--prob", "--crop", "--limit"]
