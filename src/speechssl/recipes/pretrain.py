"""``speechssl pretrain``: masked prediction with k-means and/or EMA-teacher targets.

    speechssl pretrain --config mt4ssl-tiny --data.train train.jsonl.gz \\
        --targets.kmeans-labels labels/train --out runs/mt4ssl-tiny

One recipe covers HuBERT (k-means only), data2vec (teacher only) and MT4SSL (both, summed
1:1): the shipped configs differ only in the target weights and the sizes. The run folder's
checkpoints hold the student, its heads and the teacher; their ``model.json`` carries
``"prefix": "encoder."``, so ``load_upstream(run_dir)`` returns the student encoder alone.
Pseudo-label targets (method A) come from ``--targets.pretext`` and/or ``--targets.pretext-from
selection.json``; with a selection, log-mel and MFCC reconstruction are added as the method
says (``--no-targets.baselines`` drops them; see :func:`~speechssl.pseudolabels.targets.pretext_weights`).

HuBERT's next round (k-means on a layer of the trained encoder, then pretraining on those
labels) is :mod:`speechssl.recipes.pretrain_next`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from speechssl.config import opt
from speechssl.errors import UserError
from speechssl.indicators.indicator_config import MonitorSection
from speechssl.models.transformer_config import PRESETS, preset
from speechssl.runs import start_run
from speechssl.training.train_config import TrainConfig

if TYPE_CHECKING:
    from speechssl.models.pretrain import PretrainModel
    from speechssl.objectives.masked_prediction import MaskedObjective
    from speechssl.pseudolabels.targets import PretextTargets
    from speechssl.training import Trainer

# The configs import nothing heavy (a command's --help reads them); the wiring below imports
# torch, lhotse and the library where it runs.

__all__ = [
    "DataSection",
    "MaskingSection",
    "ModelSection",
    "PretrainConfig",
    "TargetsSection",
    "build_objective",
    "build_pretrain_model",
    "build_trainer",
    "run_pretrain",
]

log = logging.getLogger("speechssl")


@dataclass
class ModelSection:
    preset: str = opt("tiny", f"encoder size: {', '.join(PRESETS)}")
    frontend: Literal["logmel", "waveform"] | None = opt(
        None, "front-end (default: the preset's, log-mel)"
    )
    dropout: float | None = opt(None, "dropout (default: the preset's)", ge=0, lt=1)
    attn_dropout: float | None = opt(None, "attention dropout (default: the preset's)", ge=0, lt=1)
    init_from: Path | None = opt(
        None,
        "start from a local transformers HuBERT / wav2vec2 / data2vec-audio folder (waveform "
        "front-end, the preset's sizes); key-by-key report in the run folder's init_from.json",
    )


@dataclass
class TargetsSection:
    kmeans_labels: Path | None = opt(None, "label folder from `speechssl kmeans label`")
    kmeans_weight: float = opt(0.0, "weight of the k-means cross-entropy (0: off)", ge=0)
    kmeans_k: int | None = opt(
        None, "classes of the k-means head (default: the label set's k)", ge=1
    )
    kmeans_upstream: str | None = opt(
        None, "upstream the labels must come from (checked against the label set)"
    )
    kmeans_layer: int | None = opt(None, "layer the labels must come from (checked)")
    kmeans_proj_dim: int = opt(256, "dimension of the k-means head's projection", ge=1)
    kmeans_temperature: float = opt(0.1, "temperature of the head's cosine similarities", gt=0)
    unmasked_weight: float = opt(0.0, "weight of the k-means CE on unmasked frames", ge=0)
    teacher_weight: float = opt(0.0, "weight of the EMA-teacher regression (0: off)", ge=0)
    top_k: int = opt(8, "top teacher blocks averaged into the target", ge=1)
    teacher_target: Literal["ffn", "residual"] = opt(
        "ffn",
        "what each top teacher block gives: its feed-forward branch before the residual add "
        "(data2vec), or its output (the residual stream: the reading of earlier runs)",
    )
    pretext: list[str] = opt(
        help="pseudo-label regressions, name or name=weight (f0, loudness=0.5, logmel, mfcc; "
        "see speechssl.pseudolabels), comma- or space-separated; with pretext-from, they add "
        "to the selection's targets or override their weights (weight 0 drops one)",
        factory=list,
    )
    pretext_from: Path | None = opt(
        None, "take the pretext targets and weights from a `speechssl select` selection.json"
    )
    baselines: bool | None = opt(
        None,
        "add log-mel and MFCC reconstruction at weight 1, method A's baselines "
        "(default: on with pretext-from, off otherwise)",
    )
    pretext_weight: float = opt(1.0, "weight of the pretext regressions in the total loss", ge=0)
    pretext_stats_cuts: int = opt(200, "training cuts sampled to standardise pretext targets", ge=1)


@dataclass
class MaskingSection:
    prob: float = opt(
        0.65, "span-start probability times span length (fairseq mask_prob)", ge=0, le=1
    )
    length: int = opt(10, "span length in frames (20 ms each)", ge=1)


@dataclass
class DataSection:
    train: list[Path] = opt(help="training CutSet(s) (JSONL manifests)", factory=list)
    crop_seconds: float | None = opt(5.0, "random crop of longer cuts (none: whole cuts)", gt=0)
    seed: int | None = opt(
        None, "seed mixed into every batch's crop seed (none: train.seed, rank, epoch, batch)", ge=0
    )


def _pretrain_train() -> TrainConfig:
    """Masked prediction's optimisation defaults (AdamW, weight decay 0.01 as HuBERT and
    data2vec; clipping as the shipped configs)."""
    return TrainConfig(lr=5e-4, warmup_steps=1000, weight_decay=0.01, grad_clip=3.0)


@dataclass
class PretrainConfig:
    """Pre-train a frame-level Transformer by masked prediction (HuBERT / data2vec / MT4SSL).

    Seconds of audio per batch and everything about optimisation are in ``train``.
    """

    model: ModelSection = field(default_factory=ModelSection)
    targets: TargetsSection = field(default_factory=TargetsSection)
    masking: MaskingSection = field(default_factory=MaskingSection)
    train: TrainConfig = field(default_factory=_pretrain_train)
    data: DataSection = field(default_factory=DataSection)
    monitor: MonitorSection = field(default_factory=MonitorSection)
    out: Path = opt(Path("runs/pretrain"), "run folder (config, metrics, checkpoints)")
    resume: bool = opt(False, "continue from the run folder's latest checkpoint")


def _encoder_config(m: ModelSection):
    if m.preset not in PRESETS:
        raise UserError(f"unknown model preset {m.preset!r} (known: {', '.join(PRESETS)})")
    overrides = {
        k: v
        for k, v in dict(
            frontend=m.frontend, dropout=m.dropout, attn_dropout=m.attn_dropout
        ).items()
        if v is not None
    }
    return preset(m.preset, **overrides)


def build_pretrain_model(
    cfg: PretrainConfig,
    kmeans_classes: int | None,
    pretext: PretextTargets | None = None,
    run_dir: Path | None = None,
) -> PretrainModel:
    """Student encoder + the heads the config's targets need (+ the teacher).

    With ``model.init_from``, the encoder starts from that transformers folder (before the
    teacher copies its blocks); the report goes to ``run_dir / "init_from.json"``.
    """
    from speechssl.models.pretrain import PretrainModel
    from speechssl.models.transformer import FrameTransformer

    t = cfg.targets
    encoder = FrameTransformer(_encoder_config(cfg.model))
    if cfg.model.init_from is not None:
        from speechssl.models.hf_export import init_from_hf

        report = init_from_hf(encoder, cfg.model.init_from)
        if run_dir is not None:
            report.write(Path(run_dir) / "init_from.json")
        log.info("%s", report.summary())
    return PretrainModel(
        encoder,
        kmeans_classes=kmeans_classes if t.kmeans_weight else None,
        kmeans_proj_dim=t.kmeans_proj_dim,
        kmeans_temperature=t.kmeans_temperature,
        teacher_top_k=t.top_k if t.teacher_weight else None,
        pretext_dims=pretext.dims() if pretext is not None else None,
        teacher_target=t.teacher_target,
    )


def build_objective(cfg: PretrainConfig, pretext: PretextTargets | None = None) -> MaskedObjective:
    """The weighted sum of the enabled targets, sharing one span mask per batch."""
    from speechssl.objectives.masked_prediction import (
        KmeansCE,
        MultiTarget,
        PretextRegression,
        TeacherRegression,
    )

    t, m = cfg.targets, cfg.masking
    parts: dict[str, tuple[MaskedObjective, float]] = {}
    if t.kmeans_weight:
        parts["kmeans"] = (KmeansCE(unmasked_weight=t.unmasked_weight), t.kmeans_weight)
    if t.teacher_weight:
        parts["teacher"] = (TeacherRegression(), t.teacher_weight)
    if pretext is not None:
        parts["pretext"] = (PretextRegression(pretext.weights, pretext.losses()), t.pretext_weight)
    return MultiTarget(parts, mask_prob=m.prob, mask_length=m.length)


def _check_config(cfg: PretrainConfig) -> None:
    t = cfg.targets
    if t.kmeans_weight < 0 or t.teacher_weight < 0:
        raise UserError("target weights must be >= 0")
    if not (t.kmeans_weight or t.teacher_weight or t.pretext or t.pretext_from or t.baselines):
        raise UserError(
            "no target: set targets.kmeans-weight, targets.teacher-weight above 0, "
            "targets.pretext or targets.pretext-from"
        )
    if t.kmeans_weight and t.kmeans_labels is None:
        raise UserError("the k-means target needs --targets.kmeans-labels (a label folder)")
    if t.teacher_weight and cfg.train.ema_start is None:
        raise UserError("the teacher target needs an EMA schedule: set --train.ema-start")
    if t.teacher_weight and t.top_k < 1:
        raise UserError(f"targets.top-k must be >= 1, got {t.top_k}")
    if not cfg.data.train:
        raise UserError("no training cuts: pass --data.train")
    if cfg.model.init_from is not None and _encoder_config(cfg.model).frontend != "waveform":
        raise UserError("--model.init-from needs the waveform front-end: --model.frontend waveform")


def _open_labels(cfg: PretrainConfig, cuts) -> tuple[Any, int]:
    from speechssl.kmeans.labels import KmeansLabels

    t = cfg.targets
    labels = KmeansLabels(t.kmeans_labels)
    k = t.kmeans_k if t.kmeans_k is not None else labels.info.k
    feature = {
        name: v
        for name, v in (("upstream", t.kmeans_upstream), ("layer", t.kmeans_layer))
        if v is not None
    }
    labels.check_compatible(k, feature or None)
    missing = [c.id for c in cuts if c.id not in labels]
    if missing:
        raise UserError(
            f"label set {t.kmeans_labels} has no labels for {len(missing)} training cut(s), "
            f"e.g. {missing[:3]}; label these cuts with `speechssl kmeans label`"
        )
    if labels.info.same_cuts_as_fit is False:
        log.info("k-means of %s was fitted on other cuts than it labels", t.kmeans_labels)
    return labels, k


def run_pretrain(cfg: PretrainConfig) -> Path | None:
    """Build model, objective and data from ``cfg`` and train; returns the last checkpoint."""
    return build_trainer(cfg).fit()


def build_trainer(cfg: PretrainConfig) -> Trainer:
    """Everything :func:`run_pretrain` trains, ready to ``fit()`` (tests step it by hand)."""
    from speechssl.data.manifest import load_cut_sets
    from speechssl.data.pretrain import PretrainDataset
    from speechssl.indicators.live import LiveIndicators
    from speechssl.models.registry import model_spec
    from speechssl.pseudolabels.targets import PretextTargets, fit_stats, pretext_weights
    from speechssl.training import Trainer, seed_everything

    _check_config(cfg)
    if cfg.resume:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume=True))
    cuts = load_cut_sets(cfg.data.train)
    labels, k = (None, None)
    if cfg.targets.kmeans_weight:
        labels, k = _open_labels(cfg, cuts)
    pretext = None
    t = cfg.targets
    weights = pretext_weights(t.pretext, t.pretext_from, t.baselines)
    if weights:
        stats = fit_stats(cuts, list(weights), t.pretext_stats_cuts, cfg.train.seed)
        pretext = PretextTargets(stats, weights)
    run_dir = start_run(cfg.out, "pretrain", cfg, seed=cfg.train.seed)
    seed_everything(cfg.train.seed)  # the same initial weights on every rank
    model = build_pretrain_model(cfg, k, pretext, run_dir)
    dataset = PretrainDataset(
        model.encoder.frame_counter(),
        labels=labels,
        crop_seconds=cfg.data.crop_seconds,
        seed=cfg.data.seed,
        pretext=pretext,
    )
    spec = model_spec(model.encoder) | {"prefix": "encoder.", "heads": model.heads_spec()}
    if pretext is not None:
        spec["pretext_stats"] = pretext.stats
    monitor = None
    if cfg.monitor.every > 0:
        pool = load_cut_sets(cfg.monitor.pool) if cfg.monitor.pool else cuts
        monitor = LiveIndicators.from_section(cfg.monitor, pool)
    objective = build_objective(cfg, pretext)
    return Trainer(model, objective, cuts, dataset, cfg.train, run_dir, spec, monitor)
