"""``speechssl supervised``: the supervised baseline of the utterance-level encoders.

    speechssl supervised --config supervised-ecapa-tiny --data.train train.jsonl.gz

Trains the encoder that ``speechssl dino`` trains (ECAPA-TDNN or thin ResNet34) on speaker
labels with an additive angular margin softmax (:mod:`speechssl.objectives.aam`), the paper's
"x-vector", on one fixed-length crop per utterance
(:class:`speechssl.data.multicrop.MultiCropDataset`).

What ``load_upstream(run)`` returns: the encoder (``"prefix": "encoder."``), whose label
encoder is ``<run>/labels.json``. Batches count utterances (``data.batch-size``), not seconds.
"""

from __future__ import annotations

import dataclasses
import json
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
    from lhotse import CutSet

    from speechssl.data.batching import LabelEncoder
    from speechssl.training import Trainer

# The configs import nothing heavy (a command's --help reads them); the wiring below imports
# torch, lhotse and the library where it runs.

__all__ = [
    "LABELS_FILE",
    "AamSection",
    "SegmentSection",
    "SupervisedConfig",
    "build_supervised_trainer",
    "run_supervised",
]

log = logging.getLogger("speechssl")
LABELS_FILE = "labels.json"


@dataclass
class SegmentSection:
    seconds: float = opt(3.0, "length of the training crop (s)", gt=0)
    short_policy: ShortPolicy = opt("repeat", SHORT_POLICY_HELP)


@dataclass
class AamSection:
    label: str = opt("speaker", "label field to classify")
    scale: float = opt(30.0, "AAM scale s", gt=0)
    margin: float = opt(0.2, "AAM margin m (radians)", ge=0)
    easy_margin: bool = opt(False, "apply the margin only below 90 degrees")


def _supervised_train() -> TrainConfig:
    """The speaker classifier's optimisation defaults."""
    return TrainConfig(lr=1e-3, min_lr=1e-5, warmup_steps=500, weight_decay=0.01,
                       grad_clip=3.0)  # fmt: skip


@dataclass
class SupervisedConfig:
    """Supervised baseline: the same encoder trained on labels with AAM softmax ("x-vector").

    ``load_upstream(out)`` gives the encoder; ``out/labels.json`` the label encoder.
    """

    model: EncoderSection = field(default_factory=EncoderSection)
    crop: SegmentSection = field(default_factory=SegmentSection)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    aam: AamSection = field(default_factory=AamSection)
    data: UtteranceDataSection = field(default_factory=UtteranceDataSection)
    train: TrainConfig = field(default_factory=_supervised_train)
    out: Path = opt(Path("runs/supervised"), "run folder (config, metrics, checkpoints)")
    resume: bool = opt(False, "continue from the run folder's latest checkpoint")


def _label_encoder(cfg: SupervisedConfig, cuts: CutSet, run_dir: Path) -> LabelEncoder:
    from speechssl.data.batching import build_label_encoders

    encoder = build_label_encoders(cuts, [cfg.aam.label])[cfg.aam.label]
    if len(encoder) < 2:
        raise UserError(f"label {cfg.aam.label!r} has a single value: nothing to classify")
    path = run_dir / LABELS_FILE
    if cfg.resume and path.is_file():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(encoder.to_dict())):
            raise UserError(f"{path} holds other labels than these training cuts; new run folder?")
    path.write_text(json.dumps(encoder.to_dict(), indent=1) + "\n")
    return encoder


def build_supervised_trainer(cfg: SupervisedConfig) -> Trainer:
    """Everything :func:`run_supervised` trains, ready to ``fit()``."""
    from speechssl.data.multicrop import (
        MultiCropDataset,
        babble_pool,
        env_rank_world,
        load_train_cuts,
        utterance_sampler,
    )
    from speechssl.models.registry import model_spec
    from speechssl.models.utterance import build_encoder
    from speechssl.objectives.aam import AamHead, AamObjective, SupervisedModel
    from speechssl.training import Trainer, seed_everything

    if cfg.resume:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume=True))
    t, a = cfg.train, cfg.aam
    cuts = load_train_cuts(cfg.data.train)
    run_dir = start_run(cfg.out, "supervised", cfg, seed=t.seed)
    labels = _label_encoder(cfg, cuts, run_dir)
    seed_everything(t.seed)
    encoder = build_encoder(cfg.model)
    head = AamHead(encoder.emb_dim, len(labels), a.scale, a.margin, a.easy_margin)
    model = SupervisedModel(encoder, head, a.label)
    seed = (t.seed if cfg.data.seed is None else cfg.data.seed) + 10_000 * env_rank_world()[0]
    dataset = MultiCropDataset(
        1,
        cfg.crop.seconds,
        0,
        0.0,
        cfg.crop.short_policy,
        augment=cfg.augment,
        babble_pool=babble_pool(cuts, cfg.data.babble_pool, seed),
        label_encoders={a.label: labels},
        seed=seed,
    )
    log.info("supervised: %d cuts, %d classes of %r", len(cuts), len(labels), a.label)
    spec = model_spec(encoder) | {
        "prefix": "encoder.",
        "aam": {"label": a.label, "classes": len(labels)},
    }
    sampler = utterance_sampler(cuts, cfg.data.batch_size, t.seed)
    return Trainer(model, AamObjective(a.label), sampler, dataset, t, run_dir, spec)


def run_supervised(cfg: SupervisedConfig) -> Path:
    """Train the supervised baseline per ``cfg``; returns the run folder."""
    trainer = build_supervised_trainer(cfg)
    trainer.fit()
    return trainer.run_dir
