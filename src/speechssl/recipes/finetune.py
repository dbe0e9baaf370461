"""``speechssl finetune``: transfer an utterance-level encoder to a labelled task.

    speechssl finetune --upstream runs/dino --task ravdess-emotion --strategy staged --out runs/ft

Strategies (method D, the transfer findings of Cho et al., JSTSP 2022): ``staged`` first trains the
new classifier and the encoder's last affine layers (attentive pooling, its batch norm, the
embedding layer) with everything else frozen, then the whole network at ``stage2_lr_scale`` times
the learning rate; ``all`` trains everything at once for the same total number of epochs. Training
uses random chunks of ``chunk_seconds`` (optionally augmented); evaluation embeds whole utterances.
A classification task reports test accuracy; a verification task (or ``--eval verify``) trains on
the training speakers and reports EER/minDCF of cosine-scored embeddings of the held-out test
speakers.

Each stage is a :class:`~speechssl.training.Trainer` run in its own folder (``stage1/``,
``stage2/`` or ``all/``) with checkpoints, so ``--resume`` continues where a run stopped.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from speechssl.audio.augment_config import AugmentConfig
from speechssl.config import opt, to_dict
from speechssl.errors import UserError
from speechssl.evaluation.task_presets import PRESETS
from speechssl.runs import probe_cache_dir, start_run
from speechssl.training.train_config import TrainConfig

# The config imports nothing heavy (a command's --help reads it); the wiring below imports
# torch, lhotse and the library where it runs.

__all__ = ["FinetuneConfig", "run_finetune"]

log = logging.getLogger("speechssl")


def _no_augmentation() -> AugmentConfig:
    """Off unless asked for (``--augment.noise-prob 0.7``, as ``dino`` spells it)."""
    return AugmentConfig(noise_prob=0.0, reverb_prob=0.0, speed_prob=0.0, gain_prob=0.0)


@dataclass
class FinetuneConfig:
    """Fine-tune an utterance-level encoder (DINO, supervised, ...) on a labelled task."""

    upstream: str = opt(help="checkpoint or run folder of an encoder with embed() (ECAPA, ResNet)")
    out: Path = opt(help="run folder (stages, results.json, results.md)")
    task: str | None = opt(None, f"preset task: {', '.join(PRESETS)}")
    cuts: Path | None = opt(None, "CutSet of a custom task")
    label: str | None = opt(None, "label field (custom task)")
    split_by: Literal["speaker", "variant", "utterance", "split", "all"] | None = opt(
        None, "split rule of a custom task (variant: whole voice variants, synthetic corpus)"
    )
    eval: Literal["auto", "classify", "verify"] = opt(
        "auto", "test metric: accuracy, or EER on held-out speakers (auto: from the task)"
    )
    strategy: Literal["staged", "all"] = opt("staged", "staged (last layers, then all) or all")
    epochs: int = opt(10, "epochs of each stage (all: twice this, the same total)", ge=1)
    lr: float = opt(1e-3, "learning rate (stage 1, or all)", gt=0)
    stage2_lr_scale: float = opt(0.1, "stage 2 learning rate = lr x this", gt=0)
    batch_size: int = opt(32, "utterance chunks per step", ge=1)
    chunk_seconds: float = opt(2.0, "training chunk length (random crop; shorter cuts whole)", gt=0)
    augment: AugmentConfig = field(default_factory=_no_augmentation)
    split_seed: int = opt(0, "seed of the task's split", ge=0)
    seed: int = opt(0, "training seed", ge=0)
    resume: bool = opt(False, "continue a stopped run from its checkpoints")
    data_root: Path | None = opt(None, "shared data folder (default $SPEECHSSL_DATA)")
    cache_dir: Path = opt(factory=lambda: probe_cache_dir(), help="prepared-CutSet cache")
    num_workers: int = opt(0, "DataLoader workers", ge=0)


def _stage(cfg: FinetuneConfig, model, name, train_cuts, dataset, epochs, lr) -> Path | None:
    from lhotse.dataset import SimpleCutSampler

    from speechssl.models.registry import model_spec
    from speechssl.objectives.classify import ClassifyObjective
    from speechssl.training import Trainer
    from speechssl.training.checkpoint import find_latest

    steps = max(1, epochs * math.ceil(len(train_cuts) / cfg.batch_size))
    tcfg = TrainConfig(
        max_steps=steps,
        lr=lr,
        min_lr=lr * 0.01,
        warmup_steps=max(1, steps // 10),
        weight_decay=1e-4,
        grad_clip=3.0,
        log_every=max(1, min(10, steps // 10)),
        ckpt_every=max(1, steps // 4),
        seed=cfg.seed,
        num_workers=cfg.num_workers,
        resume=cfg.resume and find_latest(cfg.out / name / "checkpoints") is not None,
    )
    sampler = SimpleCutSampler(
        train_cuts, max_cuts=cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed
    )
    spec = model_spec(model.encoder) | {"prefix": "encoder."}
    trainer = Trainer(
        model, ClassifyObjective(dataset.encoder.field), sampler, dataset, tcfg,
        cfg.out / name, spec,
    )  # fmt: skip
    if trainer.step == 0 and not tcfg.resume:
        start_run(cfg.out / name, f"finetune-{name}", tcfg, seed=cfg.seed)
    return trainer.fit()


def run_finetune(cfg: FinetuneConfig) -> dict:
    """Fine-tune, evaluate on the test split; returns what ``results.json`` holds."""
    import torch

    from speechssl.audio.augment import Augmenter
    from speechssl.data.batching import LabelEncoder, get_label
    from speechssl.data.chunks import ChunkDataset
    from speechssl.data.multicrop import augments
    from speechssl.evaluation.tasks import build_task
    from speechssl.evaluation.verification import embed_cuts, score_speakers
    from speechssl.models.finetune import FinetuneModel
    from speechssl.models.registry import load_upstream
    from speechssl.report.finetune import render_finetune

    run_dir = start_run(cfg.out, "finetune", cfg, seed=cfg.seed)
    task = build_task(
        cfg.task, cuts=cfg.cuts, label=cfg.label, split_by=cfg.split_by,
        data_root=cfg.data_root, cache_dir=cfg.cache_dir, seed=cfg.split_seed,
    )  # fmt: skip
    mode = cfg.eval if cfg.eval != "auto" else (
        "verify" if task.kind == "verification" else "classify"
    )  # fmt: skip
    train = task.splits.get("train")
    if train is None or len(train) == 0:
        raise UserError(
            f"task {task.name} has no training split (verification presets test on every "
            "speaker); give --cuts with --split-by speaker so some speakers train"
        )
    enc = LabelEncoder(task.label, [get_label(c, task.label) for c in train])
    torch.manual_seed(cfg.seed)
    model = FinetuneModel(load_upstream(cfg.upstream), len(enc))
    augmenter = Augmenter(cfg.augment, babble_pool=list(train)) if augments(cfg.augment) else None
    dataset = ChunkDataset(enc, cfg.chunk_seconds, augmenter, cfg.seed)
    if cfg.strategy == "staged":
        model.freeze_all_but_last()
        _stage(cfg, model, "stage1", train, dataset, cfg.epochs, cfg.lr)
        model.unfreeze()
        _stage(cfg, model, "stage2", train, dataset, cfg.epochs, cfg.lr * cfg.stage2_lr_scale)
    else:
        _stage(cfg, model, "all", train, dataset, 2 * cfg.epochs, cfg.lr)
    model.eval()
    test = list(task.splits["test"])
    results: dict = {"task": task.name, "label": task.label, "mode": mode,
                     "strategy": cfg.strategy, "upstream": cfg.upstream,
                     "split_sizes": {n: len(s) for n, s in task.splits.items()}}  # fmt: skip
    with torch.inference_mode():
        emb = embed_cuts(model.encoder, test)
    if mode == "classify":
        logits = model.head(torch.from_numpy(emb).float())
        known = [str(get_label(c, task.label)) in {str(v) for v in enc.classes} for c in test]
        y = torch.tensor(
            [enc.encode(get_label(c, task.label)) if k else -1 for c, k in zip(test, known, strict=True)]
        )  # fmt: skip
        results["accuracy"] = float((logits.argmax(1) == y).float().mean())
    else:
        speakers = [str(get_label(c, task.label)) for c in test]
        results |= score_speakers(emb, speakers, seed=cfg.split_seed)
        # which speakers were trained on and which scored: the EER is only meaningful on
        # speakers the model never saw
        results["speakers"] = {"train": sorted({str(v) for v in enc.classes}),
                               "test": sorted(set(speakers))}  # fmt: skip
    results["config"] = to_dict(cfg)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (run_dir / "results.md").write_text(render_finetune(results) + "\n")
    return results
