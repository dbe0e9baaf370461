"""The ``speechssl`` command: one subcommand per user job.

Thin by design: parse options into a typed config, call the library, print the result.
This is the only place that turns exceptions into messages and exit codes: a user mistake
(:class:`~speechssl.errors.UserError`) gives one line on stderr and exit code 2; a
traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from speechssl import __version__, config
from speechssl.errors import UserError


@dataclass
class Command:
    path: tuple[str, ...]
    cfg_cls: type
    run: Callable  # (cfg) -> exit code
    help: str


def _user_message(exc: UserError) -> str:
    """The message alone: an error re-raised from a DataLoader worker carries the worker's
    traceback in its text, ending in ``...UserError: <message>``."""
    text = str(exc)
    if "Original Traceback" in text:
        text = text.rsplit("UserError: ", 1)[-1]
    return text.strip()


def _commands() -> list[Command]:
    # Imported here so that `speechssl --help` stays fast.
    from speechssl.data.synth import SynthConfig
    from speechssl.recipes import data_jobs
    from speechssl.recipes.assess import AssessConfig
    from speechssl.recipes.correlate import CorrelateConfig
    from speechssl.recipes.demo import DemoConfig
    from speechssl.recipes.dino import DinoConfig
    from speechssl.recipes.embed import EmbedConfig
    from speechssl.recipes.finetune import FinetuneConfig
    from speechssl.recipes.kmeans_jobs import KmeansFitConfig, KmeansLabelConfig
    from speechssl.recipes.pretrain import PretrainConfig
    from speechssl.recipes.pretrain_next import NextIterationConfig
    from speechssl.recipes.probe import ProbeConfig
    from speechssl.recipes.select import SelectConfig
    from speechssl.recipes.supervised import SupervisedConfig
    from speechssl.recipes.verify import VerifyConfig

    cmds = [
        Command(
            ("data", "prepare", name),
            cls,
            lambda cfg, name=name: _prepare(name, cfg),
            (cls.__doc__ or "").strip().splitlines()[0],
        )
        for name, cls in data_jobs.PREPARE_CONFIGS.items()
    ]
    cmds += [
        Command(("data", "split"), data_jobs.SplitConfig, _split, "split a CutSet by speaker"),
        Command(("data", "info"), data_jobs.InfoConfig, _info, "describe a CutSet"),
        Command(("data", "synth"), SynthConfig, _synth, "synthesise the labelled default corpus"),
        Command(("kmeans", "fit"), KmeansFitConfig, _kmeans_fit, "fit k-means targets on a layer"),
        Command(("kmeans", "label"), KmeansLabelConfig, _kmeans_label, "label every frame"),
        Command(
            ("pretrain",),
            PretrainConfig,
            _pretrain,
            "masked-prediction pretraining (k-means and/or EMA-teacher targets)",
        ),
        Command(
            ("pretrain-next",),
            NextIterationConfig,
            _pretrain_next,
            "HuBERT-style next iteration: re-cluster a layer of a finished run and pretrain again",
        ),
        Command(
            ("select",),
            SelectConfig,
            _select,
            "rank pseudo-labels for a downstream label by conditional independence (no training)",
        ),
        Command(("probe",), ProbeConfig, _probe, "probe a frozen upstream on a labelled task"),
        Command(
            ("assess",),
            AssessConfig,
            _assess,
            "label-free indicators (rank, cluster quality) of checkpoints on unlabelled audio",
        ),
        Command(
            ("correlate",),
            CorrelateConfig,
            _correlate,
            "rank correlations of indicators and pretraining loss with probe results",
        ),
        Command(
            ("dino",),
            DinoConfig,
            _dino,
            "DINO self-distillation of an utterance encoder (ECAPA-TDNN / ResNet34), no labels",
        ),
        Command(
            ("supervised",),
            SupervisedConfig,
            _supervised,
            "supervised speaker-embedding baseline: the same encoder with AAM softmax",
        ),
        Command(
            ("finetune",),
            FinetuneConfig,
            _finetune,
            "fine-tune an utterance encoder on a labelled task (staged or all at once)",
        ),
        Command(("embed",), EmbedConfig, _embed, "write utterance embeddings of a CutSet"),
        Command(
            ("verify",), VerifyConfig, _verify, "speaker verification EER/minDCF of embeddings"
        ),
        Command(("demo",), DemoConfig, _demo, "run the pipeline on the embedded default corpus"),
    ]
    return cmds


GROUP_HELP = {
    ("data",): "prepare, split, describe and synthesise corpora (lhotse CutSets)",
    ("data", "prepare"): "write a CutSet from a corpus on disk, checking every file",
    ("kmeans",): "offline k-means targets (HuBERT style) for masked-prediction pretraining",
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[tuple[str, ...], Command]]:
    parser = argparse.ArgumentParser(
        prog="speechssl",
        description="Self-supervised speech representation learning: data, pretraining, "
        "label-free monitoring and transfer. Every job takes --config FILE.yaml; "
        "options on the command line override it.",
    )
    parser.add_argument("--version", action="version", version=f"speechssl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = {c.path: c for c in _commands()}
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
        doc = (cmd.cfg_cls.__doc__ or cmd.help).strip()
        leaf = groups[path[:-1]].add_parser(path[-1], help=cmd.help, description=doc)
        leaf.add_argument("--config", help="YAML file of options (command-line options win)")
        config.add_arguments(leaf, cmd.cfg_cls)
        leaf.set_defaults(_command=path)
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    cmd = commands[args._command]
    options = {k: v for k, v in vars(args).items() if not k.startswith("cmd") and k[0] != "_"}
    debug = options.pop("debug", False)
    yaml_file = options.pop("config", None)
    try:
        cfg = config.build(cmd.cfg_cls, options, yaml_file)
        return cmd.run(cfg) or 0
    except UserError as exc:
        if debug:
            raise
        from speechssl.data.manifest import BadInputError

        if isinstance(exc, BadInputError):
            print(exc.report.render(), file=sys.stderr)
        print(f"speechssl: error: {_user_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("speechssl: interrupted", file=sys.stderr)
        return 130


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
