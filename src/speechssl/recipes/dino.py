"""``speechssl dino``: an utterance-level encoder trained without labels (method D).

Cho et al., IEEE JSTSP 2022, arXiv:2208.05445; see docs/methods.md.

    speechssl dino --config dino-ecapa-tiny --data.train train.jsonl.gz --out runs/dino

DINO trains an ECAPA-TDNN or thin ResNet34 on multi-crop views of each utterance
(:class:`speechssl.data.multicrop.MultiCropDataset`) by self-distillation
(:mod:`speechssl.objectives.dino`). The supervised baseline on the same encoder is
:mod:`speechssl.recipes.supervised`.

What ``load_upstream(run)`` returns: the *teacher's* encoder (DINO evaluates the teacher; the
checkpoint's ``model.json`` names ``"prefix": "teacher_encoder."``).

Under torchrun every BatchNorm layer of the student and the teacher is synchronised over the
ranks (:mod:`speechssl.models.sync_batchnorm`: torch's on GPU, an all-reduce one on CPU).

Batches count utterances (``data.batch-size`` per rank and micro-batch), not seconds: every
crop has a fixed length, so ``train.batch-duration`` is not used by this recipe.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from speechssl.audio.augment_config import AugmentConfig
from speechssl.config import opt
from speechssl.data.multicrop_config import SHORT_POLICY_HELP, ShortPolicy, UtteranceDataSection
from speechssl.errors import UserError
from speechssl.models.encoder_config import EncoderSection
from speechssl.runs import start_run
from speechssl.training.train_config import TrainConfig

if TYPE_CHECKING:
    from speechssl.training import Trainer

# The configs import nothing heavy (a command's --help reads them); the wiring below imports
# torch, lhotse and the library where it runs.

__all__ = ["CropSection", "DinoConfig", "DinoSection", "build_dino_trainer", "run_dino"]

log = logging.getLogger("speechssl")


@dataclass
class CropSection:
    global_crops: int = opt(2, "global crops per utterance (teacher and student)", ge=1)
    global_seconds: float = opt(3.0, "length of a global crop (s)", gt=0)
    local_crops: int = opt(4, "local crops per utterance (student only)", ge=0)
    local_seconds: float = opt(2.0, "length of a local crop (s)", gt=0)
    short_policy: ShortPolicy = opt("repeat", SHORT_POLICY_HELP)


@dataclass
class DinoSection:
    out_dim: int = opt(65536, "prototypes of the head's weight-normalised last layer", ge=1)
    hidden_dim: int = opt(2048, "width of the head's two hidden layers", ge=1)
    bottleneck_dim: int = opt(256, "bottleneck before the last layer", ge=1)
    tau_s: float = opt(0.1, "student temperature", gt=0)
    tau_t_start: float = opt(0.04, "teacher temperature at step 0", gt=0)
    tau_t: float = opt(0.07, "teacher temperature after the warm-up", gt=0)
    tau_t_warmup_steps: int | None = opt(
        None,
        "steps of linear warm-up tau-t-start -> tau-t (none: the first 30% of max-steps)",
        ge=0,
    )
    center_momentum: float = opt(
        0.9, "EMA momentum of the center of the teacher's outputs", ge=0, le=1
    )
    freeze_last_layer_epochs: float = opt(
        1.0, "epochs during which the last layer gets no updates", ge=0
    )
    collapse_patience: int = opt(50, "consecutive collapsed steps before the warning", ge=1)


def _dino_train() -> TrainConfig:
    """DINO's optimisation defaults (AdamW with cosine weight decay, teacher EMA 0.996 -> 1)."""
    return TrainConfig(lr=5e-4, min_lr=1e-6, warmup_steps=1000, weight_decay=0.04,
                       weight_decay_end=0.4, ema_start=0.996, ema_end=1.0, grad_clip=3.0)  # fmt: skip


@dataclass
class DinoConfig:
    """DINO: train an utterance-level encoder without labels by self-distillation on crops.

    ``load_upstream(out)`` gives the teacher encoder. Optimisation is in ``train``.
    """

    model: EncoderSection = field(default_factory=EncoderSection)
    crops: CropSection = field(default_factory=CropSection)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    dino: DinoSection = field(default_factory=DinoSection)
    data: UtteranceDataSection = field(default_factory=UtteranceDataSection)
    train: TrainConfig = field(default_factory=_dino_train)
    out: Path = opt(Path("runs/dino"), "run folder (config, metrics, checkpoints)")
    resume: bool = opt(False, "continue from the run folder's latest checkpoint")


def build_dino_trainer(cfg: DinoConfig) -> Trainer:
    """Everything :func:`run_dino` trains, ready to ``fit()`` (tests step it by hand)."""
    from speechssl.data.multicrop import (
        MultiCropDataset,
        babble_pool,
        env_rank_world,
        load_train_cuts,
        utterance_sampler,
    )
    from speechssl.models.registry import model_spec
    from speechssl.models.sync_batchnorm import convert_sync_batchnorm
    from speechssl.models.utterance import build_encoder
    from speechssl.objectives.dino import (
        CollapseMonitor,
        DinoHead,
        DinoLoss,
        DinoModel,
        DinoObjective,
        teacher_temperature_schedule,
    )
    from speechssl.training import Trainer, seed_everything

    if cfg.resume:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume=True))
    c, d, t = cfg.crops, cfg.dino, cfg.train
    if c.global_crops < 1 or c.global_crops + c.local_crops < 2:
        raise UserError("DINO needs at least one global crop and two crops in all")
    if t.ema_start is None:
        raise UserError("DINO needs a teacher EMA schedule: set train.ema-start (e.g. 0.996)")
    cuts = load_train_cuts(cfg.data.train)
    run_dir = start_run(cfg.out, "dino", cfg, seed=t.seed)
    seed_everything(t.seed)  # the same initial weights on every rank
    encoder = build_encoder(cfg.model)
    head = DinoHead(encoder.emb_dim, d.out_dim, d.hidden_dim, d.bottleneck_dim)
    model = DinoModel(encoder, head)
    rank, world = env_rank_world()
    if world > 1:  # BatchNorm over the global batch, student and teacher alike (as DINO)
        model = convert_sync_batchnorm(model)
    warmup = d.tau_t_warmup_steps
    if warmup is None:  # DINO warms up over 30 of 100 epochs
        warmup = round(0.3 * t.max_steps)
    tau_t = teacher_temperature_schedule(d.tau_t_start, d.tau_t, warmup, t.max_steps)
    loss = DinoLoss(d.out_dim, c.global_crops, d.tau_s, d.center_momentum)
    per_epoch = len(cuts) // (cfg.data.batch_size * world) // max(1, t.accum_steps)
    freeze = round(d.freeze_last_layer_epochs * per_epoch)
    objective = DinoObjective(loss, freeze, CollapseMonitor(d.collapse_patience))
    seed = (t.seed if cfg.data.seed is None else cfg.data.seed) + 10_000 * rank
    dataset = MultiCropDataset(
        c.global_crops,
        c.global_seconds,
        c.local_crops,
        c.local_seconds,
        c.short_policy,
        augment=cfg.augment,
        babble_pool=babble_pool(cuts, cfg.data.babble_pool, seed),
        seed=seed,
    )
    if dataset.augmenter is not None:
        log.info("augmentation: %s", dataset.augmenter.describe())
    log.info(
        "DINO: %d cuts, %d steps per epoch, last layer frozen for %d steps, tau_t warm-up %d",
        len(cuts),
        per_epoch,
        freeze,
        warmup,
    )
    head_spec = {"out_dim": d.out_dim, "hidden_dim": d.hidden_dim, "bottleneck": d.bottleneck_dim}
    spec = model_spec(encoder) | {"prefix": "teacher_encoder.", "dino_head": head_spec}
    sampler = utterance_sampler(cuts, cfg.data.batch_size, t.seed)
    return Trainer(model, objective, sampler, dataset, t, run_dir, spec, schedules={"tau_t": tau_t})


def run_dino(cfg: DinoConfig) -> Path:
    """Train DINO per ``cfg``; returns the run folder (``load_upstream`` of it: the teacher)."""
    trainer = build_dino_trainer(cfg)
    trainer.fit()
    return trainer.run_dir
