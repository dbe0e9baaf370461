"""``speechssl dino`` and ``speechssl supervised``: utterance-level encoders (METHODS.md D).

    speechssl dino --config dino-ecapa-tiny --data.train train.jsonl.gz --out runs/dino
    speechssl supervised --config supervised-ecapa-tiny --data.train train.jsonl.gz

DINO trains an ECAPA-TDNN or thin ResNet34 without labels on multi-crop views of each
utterance (:mod:`speechssl.objectives.dino`); the supervised baseline trains the same encoder
on speaker labels with an additive angular margin softmax (:mod:`speechssl.objectives.aam`),
the paper's "x-vector". Both read fixed-length crops made by :class:`MultiCropDataset`.

What ``load_upstream(run)`` returns: for DINO the *teacher's* encoder (DINO evaluates the
teacher; the checkpoint's ``model.json`` names ``"prefix": "teacher_encoder."``); for the
supervised run the encoder (``"encoder."``), whose label encoder is ``<run>/labels.json``.

Batches count utterances (``data.batch-size`` per rank and micro-batch), not seconds: every
crop has a fixed length, so ``train.batch-duration`` is not used by these recipes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from lhotse import CutSet
from lhotse.cut import Cut

from speechssl.audio.augment import AugmentConfig, Augmenter
from speechssl.audio.io import SAMPLE_RATE, load_cut
from speechssl.config import opt
from speechssl.data.batching import LabelEncoder, build_label_encoders, get_label
from speechssl.data.manifest import load_cut_sets
from speechssl.errors import UserError
from speechssl.models.ecapa import EcapaConfig
from speechssl.models.registry import build_model, model_spec
from speechssl.models.resnet import ResNetConfig
from speechssl.objectives.aam import AamHead, AamObjective, SupervisedModel
from speechssl.objectives.dino import CollapseMonitor, DinoHead, DinoLoss, DinoModel, DinoObjective
from speechssl.runs import start_run
from speechssl.training import TrainConfig, Trainer, seed_everything

__all__ = [
    "AamSection",
    "CropBatch",
    "CropSection",
    "DataSection",
    "DinoConfig",
    "DinoSection",
    "EncoderSection",
    "MultiCropDataset",
    "SegmentSection",
    "SupervisedConfig",
    "babble_pool",
    "build_dino_trainer",
    "build_encoder",
    "build_supervised_trainer",
    "make_crops",
    "run_dino",
    "run_supervised",
]

log = logging.getLogger("speechssl")
ShortPolicy = Literal["repeat", "pad"]


# -- crops -----------------------------------------------------------------------------------


def make_crops(
    wave: torch.Tensor,
    count: int,
    length: int,
    policy: ShortPolicy = "repeat",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` crops of ``length`` samples of the 1-D ``wave``, each at its own random offset.

    Returns ``(crops [count, length], valid [count])``. A wave of at least ``length`` samples
    gives crops inside it (valid = ``length``). A shorter one is never dropped:

    * ``"repeat"``: the wave tiled in a loop, read from a random start within it (valid =
      ``length``: every sample is speech);
    * ``"pad"``: the whole wave followed by zeros (valid = its length, for the encoder's mask).

    An empty wave gives zeros with valid length 0.
    """
    n = wave.shape[-1]
    out = wave.new_zeros(count, length)
    valid = torch.full((count,), length, dtype=torch.int64)
    for k in range(count):
        if n >= length:
            start = int(torch.randint(n - length + 1, (1,), generator=generator))
            out[k] = wave[start : start + length]
        elif n == 0:
            valid[k] = 0
        elif policy == "pad":
            out[k, :n] = wave
            valid[k] = n
        elif policy == "repeat":
            start = int(torch.randint(n, (1,), generator=generator))
            out[k] = wave.repeat(-(-(start + length) // n))[start : start + length]
        else:
            raise UserError(f"unknown short-utterance policy {policy!r}; use repeat or pad")
    return out, valid


@dataclass
class CropBatch:
    """Crops of ``B`` utterances, view-major: row ``v * B + b`` is view ``v`` of utterance ``b``.

    ``short_global`` / ``short_local``: utterances shorter than a global / local crop
    (repeated or padded per the policy). ``lengths`` (valid samples of every crop) is what the
    trainer counts as audio processed.
    """

    global_audio: torch.Tensor  # [G * B, Tg]
    global_lengths: torch.Tensor  # [G * B]
    local_audio: torch.Tensor  # [L * B, Tl] (0 rows without local crops)
    local_lengths: torch.Tensor  # [L * B]
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    cut_ids: list[str] = field(default_factory=list)
    short_global: int = 0
    short_local: int = 0

    def __len__(self) -> int:
        return len(self.cut_ids)

    @property
    def lengths(self) -> torch.Tensor:
        return torch.cat([self.global_lengths, self.local_lengths])

    def _map(self, fn) -> CropBatch:
        return dataclasses.replace(
            self,
            global_audio=fn(self.global_audio),
            global_lengths=fn(self.global_lengths),
            local_audio=fn(self.local_audio),
            local_lengths=fn(self.local_lengths),
            labels={k: fn(v) for k, v in self.labels.items()},
            cut_ids=list(self.cut_ids),
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> CropBatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> CropBatch:
        return self._map(lambda t: t.pin_memory())


class MultiCropDataset(torch.utils.data.Dataset):
    """Multi-crop views of a CutSet mini-batch (index: a CutSet from a lhotse sampler).

    Every crop has its own random offset (:func:`make_crops`) and, with ``augment``, its own
    augmentation (on its valid samples). All randomness comes from one generator per process:
    in the main process it is seeded with ``seed``; in a DataLoader worker with ``seed`` mixed
    with the worker's torch seed, which the trainer derives from its seed, the rank and the
    epoch, so workers and epochs do not repeat each other's crops. Same seed, same crops.

    Args:
        global_crops / global_seconds, local_crops / local_seconds: the views.
        short_policy: ``"repeat"`` or ``"pad"`` for utterances shorter than a crop.
        augment: an :class:`AugmentConfig` (``None``: no augmentation).
        babble_pool: utterances the augmenter mixes into babble noise.
        label_encoders: field -> :class:`LabelEncoder` to add ``labels`` (supervised runs).
        seed: see above.
    """

    def __init__(
        self,
        global_crops: int = 2,
        global_seconds: float = 3.0,
        local_crops: int = 4,
        local_seconds: float = 2.0,
        short_policy: ShortPolicy = "repeat",
        augment: AugmentConfig | None = None,
        babble_pool: Iterable[Cut] | None = None,
        label_encoders: Mapping[str, LabelEncoder] | None = None,
        seed: int = 0,
    ) -> None:
        if global_crops < 1 or local_crops < 0:
            raise UserError("crops: need global-crops >= 1 and local-crops >= 0")
        if short_policy not in ("repeat", "pad"):
            raise UserError(f"crops.short-policy must be repeat or pad, got {short_policy!r}")
        self.global_crops, self.local_crops = global_crops, local_crops
        self.global_len = round(global_seconds * SAMPLE_RATE)
        self.local_len = round(local_seconds * SAMPLE_RATE) if local_crops else 0
        if self.global_len < 1 or (local_crops and self.local_len < 1):
            raise UserError("crop seconds must be positive")
        self.short_policy: ShortPolicy = short_policy
        self.augmenter = None
        if augment is not None and _augments(augment):
            pool = [c for c in (babble_pool or []) if c.sampling_rate == SAMPLE_RATE]
            self.augmenter = Augmenter(augment, pool or None)
        self.label_encoders = dict(label_encoders or {})
        self.seed = int(seed)
        self._gen: torch.Generator | None = None
        self._gen_key: int | None = None

    def generator(self) -> torch.Generator:
        """This process's generator (module docstring)."""
        info = torch.utils.data.get_worker_info()
        key = None if info is None else int(info.seed)
        if self._gen is None or self._gen_key != key:
            seed = self.seed if key is None else (self.seed * 1_000_003 + key) % 2**63
            self._gen = torch.Generator().manual_seed(seed)
            self._gen_key = key
        return self._gen

    def _views(
        self, wave: torch.Tensor, count: int, length: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        crops, valid = make_crops(wave, count, length, self.short_policy, gen)
        if self.augmenter is not None:
            for k in range(count):
                n = int(valid[k])
                if n:
                    crops[k, :n] = self.augmenter(crops[k, :n], gen)
        return crops, valid

    def __getitem__(self, cuts: CutSet) -> CropBatch:
        cuts = list(cuts)
        if not cuts:
            raise ValueError("cannot crop an empty list of cuts")
        gen = self.generator()
        g_audio, g_len, l_audio, l_len = [], [], [], []
        short_g = short_l = 0
        for cut in cuts:
            wave = torch.from_numpy(load_cut(cut, SAMPLE_RATE))
            short_g += int(wave.shape[0] < self.global_len)
            short_l += int(self.local_crops > 0 and wave.shape[0] < self.local_len)
            a, n = self._views(wave, self.global_crops, self.global_len, gen)
            g_audio.append(a)
            g_len.append(n)
            a, n = self._views(wave, self.local_crops, max(self.local_len, 1), gen)
            l_audio.append(a[: self.local_crops])
            l_len.append(n[: self.local_crops])

        def view_major(parts: list[torch.Tensor]) -> torch.Tensor:  # [B, V, ...] -> [V * B, ...]
            x = torch.stack(parts).transpose(0, 1)
            return x.reshape(-1, *x.shape[2:])

        labels = {
            f: torch.tensor([enc.encode(get_label(c, f)) for c in cuts], dtype=torch.int64)
            for f, enc in self.label_encoders.items()
        }
        return CropBatch(
            global_audio=view_major(g_audio),
            global_lengths=view_major(g_len),
            local_audio=view_major(l_audio),
            local_lengths=view_major(l_len),
            labels=labels,
            cut_ids=[c.id for c in cuts],
            short_global=short_g,
            short_local=short_l,
        )


def _augments(cfg: AugmentConfig) -> bool:
    return any(p > 0 for p in (cfg.noise_prob, cfg.reverb_prob, cfg.speed_prob, cfg.gain_prob))


def babble_pool(cuts: Iterable[Cut], size: int, seed: int) -> list[Cut]:
    """A uniform sample of ``size`` cuts (reservoir sampling: one pass, any CutSet)."""
    rng, pool = random.Random(seed), []
    for i, cut in enumerate(cuts):
        if len(pool) < size:
            pool.append(cut)
        else:
            j = rng.randint(0, i)
            if j < size:
                pool[j] = cut
    return pool


# -- config sections -------------------------------------------------------------------------


@dataclass
class EncoderSection:
    kind: Literal["ecapa", "resnet"] = opt("ecapa", "encoder: ecapa (ECAPA-TDNN) or resnet")
    ecapa: EcapaConfig = field(default_factory=EcapaConfig)
    resnet: ResNetConfig = field(default_factory=ResNetConfig)


@dataclass
class CropSection:
    global_crops: int = opt(2, "global crops per utterance (teacher and student)")
    global_seconds: float = opt(3.0, "length of a global crop (s)")
    local_crops: int = opt(4, "local crops per utterance (student only)")
    local_seconds: float = opt(2.0, "length of a local crop (s)")
    short_policy: ShortPolicy = opt(
        "repeat", "utterances shorter than a crop: repeat (tile in a loop) or pad (zeros, masked)"
    )


@dataclass
class DinoSection:
    out_dim: int = opt(65536, "prototypes of the head's weight-normalised last layer")
    hidden_dim: int = opt(2048, "width of the head's two hidden layers")
    bottleneck_dim: int = opt(256, "bottleneck before the last layer")
    tau_s: float = opt(0.1, "student temperature")
    tau_t_start: float = opt(0.04, "teacher temperature at step 0")
    tau_t: float = opt(0.07, "teacher temperature after the warm-up")
    tau_t_warmup_steps: int | None = opt(
        None, "steps of linear warm-up tau-t-start -> tau-t (none: the first 30% of max-steps)"
    )
    center_momentum: float = opt(0.9, "EMA momentum of the center of the teacher's outputs")
    freeze_last_layer_epochs: float = opt(1.0, "epochs during which the last layer gets no updates")
    collapse_patience: int = opt(50, "consecutive collapsed steps before the warning")


@dataclass
class DataSection:
    train: list[Path] = opt(help="training CutSet(s) (JSONL manifests)", factory=list)
    batch_size: int = opt(32, "utterances per micro-batch on each rank")
    seed: int | None = opt(None, "seed of the crops and augmentation (none: train.seed)")
    babble_pool: int = opt(500, "utterances sampled from the training cuts for babble noise")


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
    data: DataSection = field(default_factory=DataSection)
    train: TrainConfig = field(default_factory=_dino_train)
    out: Path = opt(Path("runs/dino"), "run folder (config, metrics, checkpoints)")
    resume: bool = opt(False, "continue from the run folder's latest checkpoint")


# -- shared wiring ---------------------------------------------------------------------------


def build_encoder(section: EncoderSection) -> torch.nn.Module:
    """A fresh ECAPA-TDNN or ResNet from the section's config of that kind."""
    if section.kind not in ("ecapa", "resnet"):
        raise UserError(f"model.kind must be ecapa or resnet, got {section.kind!r}")
    sub = section.ecapa if section.kind == "ecapa" else section.resnet
    return build_model(section.kind, dataclasses.asdict(sub))


def _rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _load_train_cuts(paths: list[Path]) -> CutSet:
    if not paths:
        raise UserError("no training cuts: pass --data.train")
    return load_cut_sets(paths)


def _sampler(cuts: CutSet, batch_size: int, seed: int):
    """Shuffled batches of exactly ``batch_size`` cuts (BatchNorm needs more than one row)."""
    from lhotse.dataset import SimpleCutSampler

    if batch_size < 2:
        raise UserError(f"data.batch-size must be at least 2 (BatchNorm), got {batch_size}")
    rank, world = _rank_world()
    return SimpleCutSampler(
        cuts,
        max_cuts=batch_size,
        shuffle=True,
        drop_last=True,
        seed=seed,
        rank=rank,
        world_size=world,
    )


def _steps_per_epoch(num_cuts: int, batch_size: int, accum_steps: int) -> int:
    _, world = _rank_world()
    return num_cuts // (batch_size * world) // max(1, accum_steps)


def _prepare(cfg: Any) -> Any:
    if cfg.resume:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume=True))
    return cfg


# -- DINO ------------------------------------------------------------------------------------


def build_dino_trainer(cfg: DinoConfig) -> Trainer:
    """Everything :func:`run_dino` trains, ready to ``fit()`` (tests step it by hand)."""
    cfg = _prepare(cfg)
    c, d, t = cfg.crops, cfg.dino, cfg.train
    if c.global_crops < 1 or c.global_crops + c.local_crops < 2:
        raise UserError("DINO needs at least one global crop and two crops in all")
    if t.ema_start is None:
        raise UserError("DINO needs a teacher EMA schedule: set train.ema-start (e.g. 0.996)")
    cuts = _load_train_cuts(cfg.data.train)
    run_dir = start_run(cfg.out, "dino", cfg, seed=t.seed)
    seed_everything(t.seed)  # the same initial weights on every rank
    encoder = build_encoder(cfg.model)
    head = DinoHead(encoder.emb_dim, d.out_dim, d.hidden_dim, d.bottleneck_dim)
    model = DinoModel(encoder, head)
    warmup = d.tau_t_warmup_steps
    if warmup is None:  # DINO warms up over 30 of 100 epochs
        warmup = round(0.3 * t.max_steps)
    loss = DinoLoss(
        d.out_dim, c.global_crops, d.tau_s, d.tau_t_start, d.tau_t, warmup, d.center_momentum
    )
    per_epoch = _steps_per_epoch(len(cuts), cfg.data.batch_size, t.accum_steps)
    freeze = round(d.freeze_last_layer_epochs * per_epoch)
    objective = DinoObjective(loss, freeze, CollapseMonitor(d.collapse_patience))
    seed = (t.seed if cfg.data.seed is None else cfg.data.seed) + 10_000 * _rank_world()[0]
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
    sampler = _sampler(cuts, cfg.data.batch_size, t.seed)
    return Trainer(model, objective, sampler, dataset, t, run_dir, spec)


def run_dino(cfg: DinoConfig) -> Path:
    """Train DINO per ``cfg``; returns the run folder (``load_upstream`` of it: the teacher)."""
    trainer = build_dino_trainer(cfg)
    trainer.fit()
    return trainer.run_dir


# -- supervised baseline ---------------------------------------------------------------------


@dataclass
class SegmentSection:
    seconds: float = opt(3.0, "length of the training crop (s)")
    short_policy: ShortPolicy = opt(
        "repeat", "utterances shorter than a crop: repeat (tile in a loop) or pad (zeros, masked)"
    )


@dataclass
class AamSection:
    label: str = opt("speaker", "label field to classify")
    scale: float = opt(30.0, "AAM scale s")
    margin: float = opt(0.2, "AAM margin m (radians)")
    easy_margin: bool = opt(False, "apply the margin only below 90 degrees")


def _supervised_train() -> TrainConfig:
    """The speaker classifier's optimisation defaults."""
    return TrainConfig(lr=1e-3, min_lr=1e-5, warmup_steps=500, weight_decay=0.01,
                       weight_decay_end=0.01)  # fmt: skip


@dataclass
class SupervisedConfig:
    """Supervised baseline: the same encoder trained on labels with AAM softmax ("x-vector").

    ``load_upstream(out)`` gives the encoder; ``out/labels.json`` the label encoder.
    """

    model: EncoderSection = field(default_factory=EncoderSection)
    crop: SegmentSection = field(default_factory=SegmentSection)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    aam: AamSection = field(default_factory=AamSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainConfig = field(default_factory=_supervised_train)
    out: Path = opt(Path("runs/supervised"), "run folder (config, metrics, checkpoints)")
    resume: bool = opt(False, "continue from the run folder's latest checkpoint")


LABELS_FILE = "labels.json"


def _label_encoder(cfg: SupervisedConfig, cuts: CutSet, run_dir: Path) -> LabelEncoder:
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
    cfg = _prepare(cfg)
    t, a = cfg.train, cfg.aam
    cuts = _load_train_cuts(cfg.data.train)
    run_dir = start_run(cfg.out, "supervised", cfg, seed=t.seed)
    labels = _label_encoder(cfg, cuts, run_dir)
    seed_everything(t.seed)
    encoder = build_encoder(cfg.model)
    head = AamHead(encoder.emb_dim, len(labels), a.scale, a.margin, a.easy_margin)
    model = SupervisedModel(encoder, head, a.label)
    seed = (t.seed if cfg.data.seed is None else cfg.data.seed) + 10_000 * _rank_world()[0]
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
    sampler = _sampler(cuts, cfg.data.batch_size, t.seed)
    return Trainer(model, AamObjective(a.label), sampler, dataset, t, run_dir, spec)


def run_supervised(cfg: SupervisedConfig) -> Path:
    """Train the supervised baseline per ``cfg``; returns the run folder."""
    trainer = build_supervised_trainer(cfg)
    trainer.fit()
    return trainer.run_dir
