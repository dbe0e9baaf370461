"""The ``speechssl`` command: one subcommand per user job.

Thin by design: parse options into a typed config, call the library, print the result.
This is the only place that turns exceptions into messages and exit codes
(:func:`run_command`): a user mistake (:class:`~speechssl.errors.UserError`) gives one line
on stderr and exit code 2; a traceback is shown only with ``--debug``.

Fast by design too: the command table below names each command's config class by module
path, and only the chosen command's config is imported (the recipes, torch and lhotse are
imported by the command that runs), so ``--help`` and a mistyped command answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import typing
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import yaml

from speechssl import __version__, config
from speechssl.errors import UserError


@dataclass(frozen=True)
class Command:
    """One leaf command: where its config lives, what runs it, what it does not take.

    Args:
        path: the words that name it, e.g. ``("data", "split")``.
        config: ``"module:Class"`` of its config dataclass, imported only when chosen.
        run: ``(cfg) -> exit code``.
        help: one line for the command list.
        hidden: dotted config fields it does not take on the command line (a duplicate
            of another option, or a setting the command ignores).
    """

    path: tuple[str, ...]
    config: str
    run: Callable[[Any], int | None]
    help: str
    hidden: tuple[str, ...] = ()

    def config_class(self) -> type:
        module, name = self.config.split(":")
        return getattr(importlib.import_module(module), name)


# The trainer's own resume flag is set by the command's --resume; one spelling only.
_TRAINER_RESUME = "train.resume"
# Utterance-level trainers draw batches of data.batch-size cuts, not of a duration.
_UTTERANCE_TRAINER = (_TRAINER_RESUME, "train.batch_duration")


def _commands() -> list[Command]:
    prepare = {
        "folder": ("FolderPrepare", "your own data: a folder of audio plus an optional label CSV"),
        "fsdd": ("FsddPrepare", "Free Spoken Digit Dataset (labels from the file names)"),
        "ravdess": ("RavdessPrepare", "RAVDESS speech (labels from the file names)"),
        "librispeech": ("LibrispeechPrepare", "LibriSpeech parts in their original layout"),
        "voxceleb": ("VoxcelebPrepare", "VoxCeleb1 and/or VoxCeleb2 converted to wav"),
    }
    jobs = "speechssl.recipes.data_jobs"
    cmds = [
        Command(
            ("data", "prepare", name), f"{jobs}:{cls}", lambda cfg, n=name: _prepare(n, cfg), text
        )
        for name, (cls, text) in prepare.items()
    ]
    rec = "speechssl.recipes"
    cmds += [
        Command(("data", "split"), f"{jobs}:SplitConfig", _split, "split a CutSet by speaker"),
        Command(("data", "info"), f"{jobs}:InfoConfig", _info, "describe a CutSet"),
        Command(
            ("data", "export-shar"),
            f"{jobs}:ExportSharConfig",
            _export_shar,
            "write a CutSet as lhotse Shar shards (FLAC in tars) for corpora too large for one "
            "manifest",
        ),
        Command(
            ("data", "synth"),
            "speechssl.data.synth_config:SynthConfig",
            _synth,
            "synthesise the labelled default corpus",
        ),
        Command(
            ("kmeans", "fit"),
            f"{rec}.kmeans_jobs:KmeansFitConfig",
            _kmeans_fit,
            "fit k-means targets on a layer",
        ),
        Command(
            ("kmeans", "label"),
            f"{rec}.kmeans_jobs:KmeansLabelConfig",
            _kmeans_label,
            "label every frame",
        ),
        Command(
            ("pretrain",),
            f"{rec}.pretrain:PretrainConfig",
            _pretrain,
            "masked-prediction pretraining (k-means and/or EMA-teacher targets)",
            hidden=(_TRAINER_RESUME,),
        ),
        Command(
            ("export",),
            f"{rec}.export:ExportConfig",
            _export,
            "export a pretraining run's encoder as a transformers HubertModel folder",
        ),
        Command(
            ("pretrain-next",),
            f"{rec}.pretrain_next:NextIterationConfig",
            _pretrain_next,
            "HuBERT-style next iteration: re-cluster a layer of a finished run and pretrain again",
        ),
        Command(
            ("select",),
            f"{rec}.select:SelectConfig",
            _select,
            "rank pseudo-labels for a downstream label by conditional independence (no training)",
        ),
        Command(
            ("probe",),
            f"{rec}.probe:ProbeConfig",
            _probe,
            "probe a frozen upstream on a labelled task",
        ),
        Command(
            ("assess",),
            f"{rec}.assess:AssessConfig",
            _assess,
            "label-free indicators (rank, cluster quality) of checkpoints on unlabelled audio",
        ),
        Command(
            ("correlate",),
            f"{rec}.correlate:CorrelateConfig",
            _correlate,
            "rank correlations of indicators and pretraining loss with probe results",
        ),
        Command(
            ("dino",),
            f"{rec}.dino:DinoConfig",
            _dino,
            "DINO self-distillation of an utterance encoder (ECAPA-TDNN / ResNet34), no labels",
            hidden=_UTTERANCE_TRAINER,
        ),
        Command(
            ("supervised",),
            f"{rec}.supervised:SupervisedConfig",
            _supervised,
            "supervised speaker-embedding baseline: the same encoder with AAM softmax",
            hidden=_UTTERANCE_TRAINER,
        ),
        Command(
            ("finetune",),
            f"{rec}.finetune:FinetuneConfig",
            _finetune,
            "fine-tune an utterance encoder on a labelled task (staged or all at once)",
        ),
        Command(
            ("unfused",),
            f"{rec}.unfused:UnfusedConfig",
            _unfused,
            "UnFuSeD: cluster a teacher's embeddings, self-distil a fresh student, fine-tune it",
            # stages resume by themselves; stage 3 has no EMA teacher
            hidden=(
                *_UTTERANCE_TRAINER,
                *(f"train.ema_{k}" for k in ("start", "end", "steps", "shape")),
            ),
        ),
        Command(
            ("embed",), f"{rec}.embed:EmbedConfig", _embed, "write utterance embeddings of a CutSet"
        ),
        Command(
            ("verify",),
            f"{rec}.verify:VerifyConfig",
            _verify,
            "speaker verification EER/minDCF of embeddings",
        ),
        Command(
            ("demo",),
            f"{rec}.demo:DemoConfig",
            _demo,
            "run the pipeline on the embedded default corpus",
        ),
    ]
    return cmds


GROUP_HELP = {
    ("data",): "prepare, split, describe, synthesise and shard corpora (lhotse CutSets)",
    ("data", "prepare"): "write a CutSet from a corpus on disk, checking every file",
    ("kmeans",): "offline k-means targets (HuBERT style) for masked-prediction pretraining",
}
DEBUG_HELP = "show tracebacks for errors"


def chosen_command(argv: list[str], paths: Collection[tuple[str, ...]]) -> tuple[str, ...] | None:
    """The command ``argv`` names (its leading words, options before them skipped), if any."""
    words = [a for a in argv if not a.startswith("-")]
    for path in paths:
        if tuple(words[: len(path)]) == path:
            return path
    return None


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (the usage of a command with 80 options is a
    screenful) that points at --help; exit 2 as argparse does."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(
    argv: list[str] | None = None,
) -> tuple[argparse.ArgumentParser, dict[tuple[str, ...], Command]]:
    """The parser for ``argv``: every command is listed, but only the command ``argv`` names
    gets its options (and has its config imported); without ``argv``, none does."""
    parser = _Parser(
        prog="speechssl",
        description="Self-supervised speech representation learning: data, pretraining, "
        "label-free monitoring and transfer. Every job takes --config FILE.yaml; "
        "options on the command line override it.",
    )
    parser.add_argument("--version", action="version", version=f"speechssl {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = {c.path: c for c in _commands()}
    chosen = chosen_command(argv or [], commands)
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {
        (): parser.add_subparsers(dest="cmd0", metavar="COMMAND", required=True)
    }
    for path, cmd in commands.items():
        for depth in range(1, len(path)):
            prefix = path[:depth]
            if prefix not in groups:
                sub = groups[prefix[:-1]].add_parser(
                    prefix[-1], help=GROUP_HELP.get(prefix, ""), description=GROUP_HELP.get(prefix)
                )
                groups[prefix] = sub.add_subparsers(
                    dest=f"cmd{depth}", metavar="COMMAND", required=True
                )
        if path != chosen:
            groups[path[:-1]].add_parser(path[-1], help=cmd.help).set_defaults(_command=path)
            continue
        cls = cmd.config_class()
        leaf = groups[path[:-1]].add_parser(
            path[-1],
            help=cmd.help,
            description=config.plain_text((cls.__doc__ or cmd.help).strip()),
        )
        leaf.add_argument("--config", help=_config_help(cls))
        # SUPPRESS: an unset --debug here must not undo `speechssl --debug COMMAND`
        leaf.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
        )
        config.add_arguments(leaf, cls, skip=cmd.hidden)
        leaf.set_defaults(_command=path)
    return parser, commands


def fitting_configs(cls: type) -> list[str]:
    """The shipped configs (``src/speechssl/configs``) whose every option ``cls`` has."""
    names = []
    for name in config.shipped_configs():
        try:
            values = yaml.safe_load(config.resolve_config(name).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(values, dict) and values and _fits(cls, values):
            names.append(name)
    return names


def _fits(cls: type, values: dict) -> bool:
    hints = typing.get_type_hints(cls)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    for key, value in values.items():
        typ = fields.get(str(key).replace("-", "_"))
        if typ is None:
            return False
        if dataclasses.is_dataclass(typ) and isinstance(value, dict) and not _fits(typ, value):
            return False
    return True


def _config_help(cls: type) -> str:
    names = fitting_configs(cls)
    shipped = f", or a shipped config's name: {', '.join(names)}" if names else ""
    return f"YAML file of options{shipped}; command-line options win"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, commands = build_parser(argv)
    args = parser.parse_args(argv)
    cmd = commands[args._command]
    options = {k: v for k, v in vars(args).items() if not k.startswith("cmd") and k[0] != "_"}
    debug = options.pop("debug", False)
    yaml_file = options.pop("config", None)
    return run_command(cmd, options, yaml_file, debug=debug)


def run_command(cmd: Command, options: dict[str, Any], yaml_file: str | None, debug: bool) -> int:
    """Build ``cmd``'s config and run it: the one place exceptions become messages and exit
    codes (a user mistake: one line and 2; Ctrl-C: 130; anything else: the traceback)."""
    try:
        cfg = config.build(cmd.config_class(), options, yaml_file)
        return cmd.run(cfg) or 0
    except UserError as exc:
        if debug:
            raise
        manifest = sys.modules.get("speechssl.data.manifest")  # loaded if it raised this
        if manifest is not None and isinstance(exc, manifest.BadInputError):
            print(exc.report.render(), file=sys.stderr)
        print(f"speechssl: error: {_user_message(exc)}", file=sys.stderr)
        if runs := sys.modules.get("speechssl.runs"):  # loaded if a run folder was started
            runs.record_failure(_user_message(exc), 2)
        return 2
    except KeyboardInterrupt:
        print("speechssl: interrupted", file=sys.stderr)
        if runs := sys.modules.get("speechssl.runs"):
            runs.record_failure("interrupted", 130)
        return 130


def _user_message(exc: UserError) -> str:
    """The message alone: an error re-raised from a DataLoader worker carries the worker's
    traceback in its text, ending in ``...UserError: <message>``."""
    text = str(exc)
    if "Original Traceback" in text:
        text = text.rsplit("UserError: ", 1)[-1]
    return text.strip()


def _prepare(recipe: str, cfg) -> int:
    from speechssl.recipes.data_jobs import prepare

    out, report = prepare(recipe, cfg)
    print(report.render())
    print(f"wrote {report.kept} cuts to {out}")
    return 0


def _split(cfg) -> int:
    from speechssl.recipes.data_jobs import split

    for name, (path, n, speakers) in split(cfg).items():
        print(f"{name}: {n} utterances, {speakers} speakers -> {path}")
    return 0


def _info(cfg) -> int:
    from speechssl.recipes.data_jobs import info

    print(info(cfg).render())
    if cfg.plot is not None:
        print(f"plot: {cfg.plot}")
    return 0


def _export_shar(cfg) -> int:
    from speechssl.recipes.data_jobs import export_shar

    r = export_shar(cfg)
    resumed = f" ({r.resumed} already there from an interrupted export)" if r.resumed else ""
    print(
        f"wrote {r.cuts} cuts ({r.seconds / 3600:.2f} h) in {r.shards} shards{resumed} to "
        f"{r.out} ({r.bytes / 2**20:.1f} MiB)"
    )
    return 0


def _synth(cfg) -> int:
    from speechssl.data.synth import synthesize_from_config
    from speechssl.runs import start_run

    cuts = synthesize_from_config(cfg)
    start_run(cfg.out, "data synth", cfg, seed=cfg.seed)
    hours = sum(c.duration for c in cuts) / 3600
    print(f"wrote {len(cuts)} utterances ({hours * 60:.1f} min) to {cfg.out}")
    return 0


def _kmeans_fit(cfg) -> int:
    from speechssl.recipes.kmeans_jobs import fit

    meta = fit(cfg)
    print(
        f"k={meta['k']} on {meta['feature']['upstream']} layer {meta['feature']['layer']}: "
        f"inertia/frame {meta['inertia_per_frame']:.4g} -> {cfg.out}"
    )
    return 0


def _kmeans_label(cfg) -> int:
    from speechssl.recipes.kmeans_jobs import label

    labels = label(cfg)
    print(f"labelled {len(labels)} cuts at {labels.info.label_rate:g} Hz -> {cfg.out}")
    return 0


def _pretrain(cfg) -> int:
    from speechssl.recipes.pretrain import run_pretrain

    last = run_pretrain(cfg)
    print(f"pretraining done: {cfg.out} (last checkpoint {last})")
    if cfg.model.init_from is not None and (cfg.out / "init_from.json").is_file():
        print(json.loads((cfg.out / "init_from.json").read_text())["summary"])
    return 0


def _export(cfg) -> int:
    from speechssl.recipes.export import run_export

    out = run_export(cfg)
    print(f"exported {cfg.run} as a transformers HubertModel folder: {out}")
    return 0


def _pretrain_next(cfg) -> int:
    from speechssl.recipes.pretrain_next import second_iteration

    last = second_iteration(cfg.run, cfg.layer, cfg.k, cfg.cuts, cfg.out, max_frames=cfg.max_frames)
    print(f"next iteration done: {cfg.out}/pretrain (last checkpoint {last})")
    return 0


def _probe(cfg) -> int:
    from speechssl.recipes.probe import run_probe
    from speechssl.report.probe import render_probe

    results = run_probe(cfg)
    print(render_probe(results))
    print(f"results: {cfg.out}/results.json")
    return 0


def _select(cfg) -> int:
    from speechssl.recipes.select import run_select
    from speechssl.report.selection import render_selection

    result = run_select(cfg)
    print(render_selection(result))
    print(f"results: {cfg.out}/selection.json")
    return 0


def _assess(cfg) -> int:
    from speechssl.recipes.assess import run_assess

    rows = run_assess(cfg)
    print(f"{len(rows)} rows (checkpoint x layer): {cfg.out}/report.md")
    return 0


def _correlate(cfg) -> int:
    from speechssl.recipes.correlate import run_correlate

    out = run_correlate(cfg)
    print(
        f"{len(out['checkpoints'])} checkpoints, tasks {', '.join(out['tasks'])}: {cfg.out}/report.md"
    )
    return 0


def _dino(cfg) -> int:
    from speechssl.recipes.dino import run_dino

    run = run_dino(cfg)
    print(f"DINO done: {run} (load_upstream of it gives the teacher encoder)")
    return 0


def _supervised(cfg) -> int:
    from speechssl.recipes.supervised import run_supervised

    run = run_supervised(cfg)
    print(f"supervised baseline done: {run} (labels: {run}/labels.json)")
    return 0


def _finetune(cfg) -> int:
    from speechssl.recipes.finetune import run_finetune
    from speechssl.report.finetune import render_finetune

    print(render_finetune(run_finetune(cfg)))
    print(f"results: {cfg.out}/results.json")
    return 0


def _unfused(cfg) -> int:
    from speechssl.recipes.unfused import run_unfused

    r = run_unfused(cfg)
    c = r["clusters"]
    line = f"pseudo-labels: k={c['k']} on {c['utterances']} utterances ({c['dims']} dims)"
    line += f", sizes {c['sizes']}"
    if "agreement" in c:
        a = c["agreement"]
        line += f"; vs {a['label']}: NMI {a['nmi']:.3f}, purity {a['purity']:.3f}"
    print(line)
    print(f"student: {r['student']['kind']}, {r['student']['parameters']:,} parameters "
          f"(teacher {r['teacher']['parameters']:,})")  # fmt: skip
    if "finetune" in r:
        f = r["finetune"]
        dev = (
            f" (dev {f['dev_accuracy']:.3f} at step {f['selected_step']})"
            if "dev_accuracy" in f
            else ""
        )
        print(f"fine-tuned ({f['mode']}): test accuracy {f['test_accuracy']:.3f}{dev}")
    print(f"results: {cfg.out}/results.json")
    return 0


def _embed(cfg) -> int:
    from speechssl.recipes.embed import run_embed

    print(f"embeddings: {run_embed(cfg)}")
    return 0


def _verify(cfg) -> int:
    from speechssl.recipes.verify import run_verify

    r = run_verify(cfg)
    print(f"EER {100 * r['eer']:.2f} %  minDCF(0.01) {r['min_dcf_0.01']:.3f}  "
          f"minDCF(0.05) {r['min_dcf_0.05']:.3f}  ({r['trials']} trials)")  # fmt: skip
    return 0


def _demo(cfg) -> int:
    from speechssl.recipes.demo import run_demo

    report = run_demo(cfg)
    print(f"demo report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
