"""``speechssl pretrain-next``: HuBERT's next iteration, three recipes in a row.

    speechssl pretrain-next --run runs/hubert-tiny --cuts train.jsonl.gz --out runs/iter2

Fit k-means on a layer of the encoder a finished run trained (``kmeans fit``), label the
cuts with it (``kmeans label``), and pretrain a fresh model on those labels (``pretrain``),
the finished run's config giving everything else. Like the demo, it composes other recipes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from speechssl.config import build, opt
from speechssl.errors import UserError
from speechssl.recipes.kmeans_jobs import KmeansFitConfig, KmeansLabelConfig, fit, label
from speechssl.recipes.pretrain import PretrainConfig, run_pretrain
from speechssl.runs import read_history

__all__ = ["NextIterationConfig", "second_iteration"]


@dataclass
class NextIterationConfig:
    """HuBERT's next iteration in one command: k-means on a layer of a finished run, label the
    cuts, and pretrain a fresh model on the new targets (the run's config gives the rest)."""

    run: Path = opt(help="finished pretraining run folder (its config.yaml and checkpoints)")
    cuts: Path = opt(help="CutSet to cluster, label and train on")
    out: Path = opt(help="folder for kmeans/, labels/ and the new pretrain/ run")
    layer: int = opt(6, "hidden state of the trained encoder to cluster")
    k: int = opt(500, "clusters, as many as HuBERT's second iteration", ge=1)
    max_frames: int = opt(200_000, "frames sampled for the k-means fit", ge=1)


def second_iteration(
    run_dir: str | Path,
    layer: int,
    k: int,
    cuts: str | Path,
    out: str | Path,
    cfg: PretrainConfig | None = None,
    max_frames: int = 200_000,
) -> Path | None:
    """HuBERT's next iteration: k-means (``k``) on ``layer`` of the encoder trained in
    ``run_dir``, labels for ``cuts``, then pre-training on them into ``out/pretrain``.

    ``cfg`` (default: the finished run's ``config.yaml``) gives everything else; its k-means
    target is switched on (weight 1 if it was 0) and pointed at the new labels, and the new
    run starts from scratch, as in HuBERT (a fresh model learns the better targets).
    """
    run_dir, out = Path(run_dir), Path(out)
    if cfg is None:
        cfg = finished_run_config(run_dir)
    fit(
        KmeansFitConfig(
            cuts=Path(cuts),
            out=out / "kmeans",
            upstream=str(run_dir),
            layer=layer,
            k=k,
            max_frames=max_frames,
            seed=cfg.train.seed,
        )
    )
    label(KmeansLabelConfig(kmeans=out / "kmeans", cuts=Path(cuts), out=out / "labels"))
    targets = dataclasses.replace(
        cfg.targets,
        kmeans_labels=out / "labels",
        kmeans_weight=cfg.targets.kmeans_weight or 1.0,
        kmeans_k=k,
        kmeans_upstream=str(run_dir),
        kmeans_layer=layer,
    )
    data = dataclasses.replace(cfg.data, train=[Path(cuts)])
    train = dataclasses.replace(cfg.train, resume=False)
    nxt = dataclasses.replace(
        cfg, targets=targets, data=data, train=train, out=out / "pretrain", resume=False
    )
    return run_pretrain(nxt)


def finished_run_config(run_dir: Path) -> PretrainConfig:
    """The config of the pretraining run in ``run_dir``, or one line on what ``run_dir`` is
    instead (no folder, not a run folder, a run of another command)."""
    if not run_dir.is_dir():
        raise UserError(f"--run {run_dir}: no such folder")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"--run {run_dir} is not a run folder (it has no config.yaml)")
    jobs = [inv.get("job") for inv in read_history(run_dir) if isinstance(inv, dict)]
    if jobs and "pretrain" not in jobs:
        raise UserError(
            f"--run {run_dir} is a {jobs[-1]} run, not a pretraining run; pretrain-next "
            "continues a run of 'speechssl pretrain'"
        )
    try:
        return build(PretrainConfig, yaml_file=path)
    except UserError as exc:
        raise UserError(
            f"--run {run_dir}: its config.yaml is not a pretraining config ({exc})"
        ) from None
