"""``speechssl finetune``, ``embed`` and ``verify``: transfer an utterance-level encoder.

    speechssl finetune --upstream runs/dino --task ravdess-emotion --strategy staged --out runs/ft

Strategies (METHODS.md D, transfer findings): ``staged`` first trains the new classifier and
the encoder's last affine layers (attentive pooling, its batch norm, the embedding layer)
with everything else frozen, then the whole network at ``stage2_lr_scale`` times the
learning rate; ``all`` trains everything at once for the same total number of epochs.
Training uses random chunks of ``chunk_seconds`` (optionally augmented); evaluation embeds
whole utterances. A classification task reports test accuracy; a verification task (or
``--eval verify``) trains on the training speakers and reports EER/minDCF of cosine-scored
embeddings of the held-out test speakers.

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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from speechssl.audio.augment import AugmentConfig, Augmenter
from speechssl.config import opt, to_dict
from speechssl.data.batching import Batch, LabelEncoder, WorkerRNG, collate_cuts, get_label
from speechssl.data.manifest import load_cuts
from speechssl.errors import UserError
from speechssl.evaluation.tasks import PRESETS, build_task
from speechssl.evaluation.verification import (
    cosine_scores,
    embed_cuts,
    make_trials,
    score_speakers,
    verification_metrics,
)
from speechssl.models.registry import load_upstream, model_spec
from speechssl.recipes.probe import default_cache_dir
from speechssl.runs import start_run
from speechssl.training import TrainConfig, Trainer
from speechssl.training.checkpoint import find_latest

__all__ = [
    "EmbedConfig",
    "FinetuneConfig",
    "VerifyConfig",
    "run_embed",
    "run_finetune",
    "run_verify",
]

log = logging.getLogger("speechssl")

LAST_AFFINE = ("pool", "pool_bn", "fc", "emb_bn")  # ECAPA-TDNN and ResNet segment-level layers


@dataclass
class FinetuneConfig:
    """Fine-tune an utterance-level encoder (DINO, supervised, ...) on a labelled task."""

    upstream: str = opt(help="checkpoint or run folder of an encoder with embed() (ECAPA, ResNet)")
    out: Path = opt(help="run folder (stages, results.json, results.md)")
    task: str | None = opt(None, f"preset task: {', '.join(PRESETS)}")
    cuts: Path | None = opt(None, "CutSet of a custom task")
    label: str | None = opt(None, "label field (custom task)")
    split_by: Literal["speaker", "utterance", "split", "all"] | None = opt(
        None, "split rule of a custom task"
    )
    eval: Literal["auto", "classify", "verify"] = opt(
        "auto", "test metric: accuracy, or EER on held-out speakers (auto: from the task)"
    )
    strategy: Literal["staged", "all"] = opt("staged", "staged (last layers, then all) or all")
    epochs: int = opt(10, "epochs of each stage (all: twice this, the same total)")
    lr: float = opt(1e-3, "learning rate (stage 1, or all)")
    stage2_lr_scale: float = opt(0.1, "stage 2 learning rate = lr x this")
    batch_size: int = opt(32, "utterance chunks per step")
    chunk_seconds: float = opt(2.0, "training chunk length (random crop; shorter cuts whole)")
    augment: bool = opt(False, "augment training chunks (settings in --augmentation.*)")
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    split_seed: int = opt(0, "seed of the task's split")
    seed: int = opt(0, "training seed")
    resume: bool = opt(False, "continue a stopped run from its checkpoints")
    data_root: Path | None = opt(None, "shared data folder (default $SPEECHSSL_DATA)")
    cache_dir: Path = opt(factory=lambda: default_cache_dir(), help="prepared-CutSet cache")
    num_workers: int = opt(0, "DataLoader workers")


class FinetuneModel(nn.Module):
    """An encoder's embedding and a new linear classifier; frozen parts stay in eval mode
    (their batch-norm statistics do not drift while they are not trained)."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        if not hasattr(encoder, "embed"):
            raise UserError(
                f"{type(encoder).__name__} has no utterance embedding (embed()); finetune takes "
                "ECAPA-TDNN or ResNet checkpoints (e.g. from `speechssl dino`)"
            )
        self.encoder = encoder
        self.head = nn.Linear(encoder.emb_dim, num_classes)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.embed(wave, lengths))

    def freeze_all_but_last(self) -> None:
        for name, p in self.encoder.named_parameters():
            p.requires_grad = name.split(".")[0] in LAST_AFFINE

    def unfreeze(self) -> None:
        for p in self.parameters():
            p.requires_grad = True

    def train(self, mode: bool = True) -> FinetuneModel:
        super().train(mode)
        if mode:
            for module in self.encoder.children():
                if not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        return self


class ChunkDataset(torch.utils.data.Dataset):
    """Random chunks of labelled cuts, each optionally augmented (per-worker seeded)."""

    def __init__(self, encoder: LabelEncoder, chunk: float, augmenter, seed: int):
        self.encoder, self.chunk, self.augmenter = encoder, chunk, augmenter
        self._rng = WorkerRNG(seed)

    def __getitem__(self, cuts) -> Batch:
        gen = self._rng()
        batch = collate_cuts(
            cuts, label_encoders={self.encoder.field: self.encoder}, max_duration=self.chunk,
            generator=gen,
        )  # fmt: skip
        if self.augmenter is not None:
            g = gen if gen is not None else torch.default_generator
            for row, n in enumerate(batch.lengths.tolist()):
                batch.audio[row, :n] = self.augmenter(batch.audio[row, :n], g)
        return batch


class ClassifyObjective:
    def __init__(self, field: str):
        self.field = field

    def __call__(self, model, batch: Batch):
        logits = model(batch.audio, batch.lengths)
        y = batch.labels[self.field]
        loss = F.cross_entropy(logits, y)
        return loss, {"acc": (logits.argmax(1) == y).float().mean()}


def _stage(cfg: FinetuneConfig, model, name, train_cuts, dataset, epochs, lr) -> Path | None:
    from lhotse.dataset import SimpleCutSampler

    steps = max(1, epochs * math.ceil(len(train_cuts) / cfg.batch_size))
    tcfg = TrainConfig(
        max_steps=steps,
        lr=lr,
        min_lr=lr * 0.01,
        warmup_steps=max(1, steps // 10),
        weight_decay=1e-4,
        weight_decay_end=1e-4,
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
    augmenter = Augmenter(cfg.augmentation, babble_pool=list(train)) if cfg.augment else None
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
    (run_dir / "results.md").write_text(render(results) + "\n")
    return results


def render(r: dict) -> str:
    what = (
        f"test accuracy {100 * r['accuracy']:.1f} %"
        if "accuracy" in r
        else f"EER {100 * r['eer']:.2f} %, minDCF(0.01) {r['min_dcf_0.01']:.3f} on {r['trials']} trials"
    )
    return f"Fine-tuned {r['upstream']} ({r['strategy']}) on {r['task']}: {what}."


@dataclass
class EmbedConfig:
    """Write utterance embeddings of a CutSet (embed() of ECAPA / ResNet encoders)."""

    upstream: str = opt(help="checkpoint or run folder of an encoder with embed()")
    cuts: Path = opt(help="CutSet manifest")
    out: Path = opt(help="output .npz (embeddings [N, D] float32, cut ids)")
    batch_size: int = opt(16, "utterances per batch")
    device: str = opt("cpu", "device")


def run_embed(cfg: EmbedConfig) -> Path:
    model = load_upstream(cfg.upstream, device=cfg.device)
    if not hasattr(model, "embed"):
        raise UserError(f"{cfg.upstream} has no utterance embedding (embed()); use `probe`")
    cuts = list(load_cuts(cfg.cuts))
    emb = embed_cuts(model, cuts, batch_size=cfg.batch_size, device=cfg.device)
    out = cfg.out if cfg.out.suffix == ".npz" else cfg.out.with_suffix(".npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, embeddings=emb.astype(np.float32), cut_ids=np.array([c.id for c in cuts]))
    return out


@dataclass
class VerifyConfig:
    """Speaker verification: cosine-score trials of embeddings -> EER and minDCF."""

    embeddings: Path = opt(help="a .npz from `speechssl embed`")
    cuts: Path | None = opt(None, "CutSet with the speaker label (to build balanced trials)")
    trials: Path | None = opt(None, "trial list: lines 'cut_id_a cut_id_b 0|1' (else built)")
    label: str = opt("speaker", "speaker label field (when building trials)")
    seed: int = opt(0, "seed of the built trials")
    out: Path | None = opt(None, "write the metrics as JSON here")


def run_verify(cfg: VerifyConfig) -> dict:
    if not cfg.embeddings.is_file():
        raise UserError(f"{cfg.embeddings} not found: run `speechssl embed` first")
    try:
        data = np.load(cfg.embeddings)
        emb, ids = data["embeddings"], [str(i) for i in data["cut_ids"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{cfg.embeddings} is not an embeddings file from `speechssl embed` "
            f"(arrays 'embeddings' and 'cut_ids'): {exc}"
        ) from None
    index = {c: i for i, c in enumerate(ids)}
    if cfg.trials is not None:
        rows = []
        for n, line in enumerate(cfg.trials.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3 or parts[2] not in ("0", "1"):
                raise UserError(f"{cfg.trials}:{n}: expected 'id_a id_b 0|1', got {line!r}")
            missing = [p for p in parts[:2] if p not in index]
            if missing:
                raise UserError(f"{cfg.trials}:{n}: no embedding for {missing[0]!r}")
            rows.append([index[parts[0]], index[parts[1]], int(parts[2])])
        trials = np.array(rows, dtype=np.int64)
    elif cfg.cuts is not None:
        by_id = {c.id: c for c in load_cuts(cfg.cuts)}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise UserError(
                f"{len(missing)} embedded cut(s) are not in {cfg.cuts}, e.g. {missing[0]}"
            )
        speakers = [str(get_label(by_id[i], cfg.label)) for i in ids]
        trials = make_trials(speakers, seed=cfg.seed)
    else:
        raise UserError("give --trials or --cuts (to build trials from the speaker label)")
    if len(trials) == 0 or trials[:, 2].min() == trials[:, 2].max():
        raise UserError("the trials need both target and non-target pairs")
    result = verification_metrics(cosine_scores(emb, trials), trials[:, 2])
    result["trials"] = len(trials)
    if cfg.out is not None:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        cfg.out.write_text(json.dumps(result, indent=2) + "\n")
    return result
