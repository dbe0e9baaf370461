"""``speechssl unfused``: unsupervised fine-tuning by self-distillation (method E, UnFuSeD).

Seth et al., ICASSP 2023 SASB workshop, arXiv:2303.05668; see docs/methods.md.

    speechssl unfused --teacher runs/dino --cuts cuts.jsonl.gz --label emotion \\
        --out runs/unfused

Four stages, each kept in the run folder and skipped when its output is complete (a rerun
with the same ``--out`` continues where a run stopped; an interrupted training stage resumes
from its last checkpoint):

1. ``teacher/``: one embedding per utterance of the task's audio from the teacher (any
   upstream: a DINO, supervised or pretraining run, a checkpoint, a transformers folder,
   ``fbank``), its utterance embedding (``embed()``) or the time mean of hidden state
   ``--teacher-layer``. No labels are read.
2. ``pseudo/``: PCA-whitening to 128 dims, L2 normalisation, k-means (k 32, 20 iterations;
   :mod:`speechssl.kmeans.whiten`); ``pseudo/cuts.jsonl.gz`` is the CutSet with label
   ``pseudo``, ``pseudo/clusters.json`` the cluster sizes and, with ``--label``, their NMI and
   purity against the true labels (reported only).
3. ``student/``: a fresh, randomly initialised student (the BYOL-A CNN of the released code,
   or an ECAPA-TDNN / ResNet) trained on the pseudo-labels by deep self-distillation
   (:mod:`speechssl.objectives.self_distill`), SGD lr 0.03, momentum 0.9, weight decay 1e-4, on
   random crops of 0.95 s. ``load_upstream("<out>/student")`` gives the student.
4. ``finetune/``: the student with a new linear classifier on the true labels, all of it
   (``full``) or the classifier alone (``linear``); Adam lr 1e-3 on 1 s crops. The weights
   with the best dev accuracy are kept (``finetune/best/``) and tested once: selection on dev,
   never on test. ``--finetune.label-fraction 0.1`` trains on a stratified 10 % of the
   training labels (the low-resource setting); dev and test stay whole.

By default only the task's training split is clustered and distilled on (``--cluster.on``),
so no dev or test audio is seen before stage 4. Without ``--label``/``--task`` only stages 1-3
run (``--finetune.mode none``). ``results.json`` sums up every stage.

A stage's folder records what it was made from (``made_from.json``: the pseudo-labels and
options of stage 3, the student's weights and options of stage 4); a rerun after an earlier
stage or these options changed is refused rather than mixing the two. One process only (not
tested under torchrun).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from speechssl.config import opt, to_dict
from speechssl.errors import UserError
from speechssl.evaluation.task_presets import PRESETS
from speechssl.models.student_config import StudentSection
from speechssl.runs import probe_cache_dir, start_run, write_json
from speechssl.training.train_config import TrainConfig

# The configs import nothing heavy (a command's --help reads them); the wiring below imports
# torch, lhotse and the library where it runs.

__all__ = [
    "ClusterSection",
    "DistillSection",
    "FinetuneSection",
    "UnfusedConfig",
    "distill_student",
    "finetune_student",
    "labelled_subset",
    "pseudo_labels",
    "run_unfused",
    "teacher_embeddings",
]

log = logging.getLogger("speechssl")
PSEUDO = "pseudo"
# train options that change what stage 3 learns (the others: logging, checkpoints, workers)
_TRAINING = ("max_steps", "lr", "min_lr", "warmup_steps", "optimizer", "momentum",
             "weight_decay", "weight_decay_end", "betas", "grad_clip", "accum_steps", "seed")  # fmt: skip


@dataclass
class ClusterSection:
    k: int = opt(32, "clusters, the pseudo-label classes", ge=1)
    dims: int = opt(128, "PCA-whitening dimensions (fewer if fewer dims or utterances)", ge=1)
    iterations: int = opt(20, "k-means iterations", ge=1)
    seed: int = opt(0, "k-means seed", ge=0)
    on: Literal["train", "all"] = opt(
        "train", "audio clustered and distilled on: the task's training split, or every cut"
    )


@dataclass
class DistillSection:
    alpha: float = opt(0.7, "weight of the heads' cross-entropies", ge=0)
    beta: float = opt(0.3, "weight of the KL terms (final classifier to each head)", ge=0)
    gamma: float = opt(0.003, "weight of the 2 - 2 cos terms between logits", ge=0)
    temperature: float = opt(1.0, "softmax temperature of the KL terms (released: 1)", gt=0)
    detach: bool = opt(False, "stop gradients through the final classifier in KL and cos terms")
    head_hidden: int | None = opt(None, "width of each block head (none: k, as released)", ge=1)
    epochs: int | None = opt(50, "epochs over the clustered cuts (none: train.max-steps)", ge=1)
    batch_size: int = opt(64, "crops per step (at most the number of cuts)", ge=2)
    crop_seconds: float = opt(0.95, "random training crop (s); shorter cuts are kept whole", gt=0)


@dataclass
class FinetuneSection:
    mode: Literal["full", "linear", "none"] = opt(
        "full", "full (encoder and classifier), linear (frozen encoder) or none (stop after 3)"
    )
    epochs: int = opt(100, "epochs over the training split", ge=1)
    lr: float = opt(1e-3, "Adam learning rate", gt=0)
    batch_size: int = opt(32, "crops per step (at most the number of training cuts)", ge=2)
    crop_seconds: float = opt(1.0, "random training crop (s); shorter cuts are kept whole", gt=0)
    eval_every: int | None = opt(None, "steps between dev evaluations (none: once per epoch)", ge=1)
    label_fraction: float = opt(
        1.0, "labelled share of the training split (stratified, seeded by train.seed)", gt=0, le=1
    )


def _distill_train() -> TrainConfig:
    """The released optimisation: SGD, constant lr 0.03, momentum 0.9, weight decay 1e-4."""
    return TrainConfig(optimizer="sgd", lr=0.03, min_lr=0.03, warmup_steps=0, momentum=0.9,
                       weight_decay=1e-4, ckpt_every=500, num_workers=0)  # fmt: skip


@dataclass
class UnfusedConfig:
    """UnFuSeD: cluster a teacher's embeddings of a task's audio, train a fresh student on the
    clusters by self-distillation, then fine-tune it on the labels. Each stage is kept in the
    run folder and skipped on a rerun once complete."""

    out: Path = opt(help="run folder (teacher/, pseudo/, student/, finetune/, results.json)")
    teacher: str = opt(
        help="teacher upstream: a run folder (dino, supervised, pretrain), a checkpoint, a "
        "transformers folder, fbank or mfcc"
    )
    teacher_layer: int | None = opt(
        None, "teacher hidden state to mean-pool over time (none: its embed())", ge=0
    )
    embed_batch_size: int = opt(16, "utterances per batch when embedding", ge=1)
    task: str | None = opt(None, f"preset task: {', '.join(PRESETS)}")
    cuts: Path | None = opt(None, "CutSet of the task's audio (custom task)")
    label: str | None = opt(
        None, "true label: stage 4's target, and the pseudo-labels' NMI and purity"
    )
    split_by: Literal["speaker", "utterance", "split"] | None = opt(
        None, "split rule of a custom task (default speaker)"
    )
    split_seed: int = opt(0, "seed of the task's split", ge=0)
    cluster: ClusterSection = field(default_factory=ClusterSection)
    student: StudentSection = field(default_factory=StudentSection)
    distill: DistillSection = field(default_factory=DistillSection)
    train: TrainConfig = field(default_factory=_distill_train)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    device: str = opt("auto", "device of the teacher and of evaluation (auto: cuda if present)")
    data_root: Path | None = opt(None, "shared data folder (default $SPEECHSSL_DATA)")
    cache_dir: Path = opt(factory=lambda: probe_cache_dir(), help="prepared-CutSet cache")


# -- helpers ----------------------------------------------------------------------------------


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _fingerprint(*parts: Any) -> str:
    """A short hash of what a stage was made from (arrays by their bytes, the rest as JSON)."""
    import hashlib

    import numpy as np

    h = hashlib.sha1()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _check_made_from(folder: Path, fingerprint: str, what: str) -> None:
    """Refuse to continue or reuse ``folder`` when it was made from another ``what``; record
    ``fingerprint`` in a new one."""
    path = folder / "made_from.json"
    if path.is_file():
        old = json.loads(path.read_text()).get("fingerprint")
        if old != fingerprint:
            raise UserError(
                f"{folder} was made from other {what} (an earlier stage changed); remove it "
                "or choose a new --out"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, {"fingerprint": fingerprint}, indent=2)


def _with_label(cut, name: str, value: Any):
    """``cut`` with label ``name`` set where :func:`~speechssl.data.batching.get_label`
    looks first (the first supervision's custom fields; the cut's own without supervisions)."""
    from lhotse.utils import fastcopy

    if cut.supervisions:
        sup = cut.supervisions[0]
        first = fastcopy(sup, custom={**(sup.custom or {}), name: value})
        return fastcopy(cut, supervisions=[first, *cut.supervisions[1:]])
    return fastcopy(cut, custom={**(cut.custom or {}), name: value})


def _data(cfg: UnfusedConfig):
    """(the task or None, the cuts stages 1-3 use)."""
    from speechssl.data.manifest import load_cuts
    from speechssl.evaluation.tasks import build_task

    if cfg.label == PSEUDO:
        raise UserError(f"--label {PSEUDO}: that name is taken by the pseudo-labels")
    if cfg.task is None and cfg.label is None:
        if cfg.finetune.mode != "none":
            raise UserError(
                "stage 4 fine-tunes on true labels: give --label (or --task), or pass "
                "--finetune.mode none to stop after the unsupervised stages"
            )
        if cfg.cuts is None:
            raise UserError("give --cuts (the task's audio) or --task")
        return None, list(load_cuts(cfg.cuts))
    task = build_task(
        cfg.task, cuts=cfg.cuts, label=cfg.label, split_by=cfg.split_by,
        data_root=cfg.data_root, cache_dir=cfg.cache_dir, seed=cfg.split_seed,
    )  # fmt: skip
    if task.kind != "utterance":
        raise UserError(f"task {task.name} is of kind {task.kind}; unfused needs an utterance task")
    if cfg.cluster.on == "all":
        return task, task.all_cuts()
    train = task.splits.get("train")
    if train is None or len(train) == 0:
        raise UserError(f"task {task.name} has no training split to cluster")
    return task, list(train)


# -- stage 1: teacher embeddings ----------------------------------------------------------------


def teacher_embeddings(cfg: UnfusedConfig, cuts: list, folder: Path):
    """Stage 1: ``(embeddings [N, D], info)``, from ``folder`` when already complete."""
    import numpy as np
    import torch

    from speechssl.evaluation.features import upstream_frames
    from speechssl.evaluation.verification import embed_cuts, load_embeddings, save_embeddings
    from speechssl.models.registry import load_upstream, upstream_id
    from speechssl.models.student import count_parameters

    npz, meta = folder / "embeddings.npz", folder / "teacher.json"
    ids = [c.id for c in cuts]
    # the teacher's weights (path, size, time), so a teacher trained further is embedded again
    teacher_id = upstream_id(cfg.teacher)
    layer_name = "embed" if cfg.teacher_layer is None else cfg.teacher_layer
    if meta.is_file() and npz.is_file():
        emb, have = load_embeddings(npz)
        info = json.loads(meta.read_text())
        same = (info.get("teacher_id"), info.get("layer")) == (teacher_id, layer_name)
        if have == ids and same:
            log.info("stage 1: teacher embeddings from %s", npz)
            return emb, info
        log.info("stage 1: %s holds other cuts or another teacher; embedding again", npz)
    device, layer = _device(cfg.device), cfg.teacher_layer
    model = load_upstream(cfg.teacher, device=device)
    if layer is None:
        if not hasattr(model, "embed"):
            raise UserError(
                f"teacher {cfg.teacher} has no utterance embedding (embed()); give "
                f"--teacher-layer N to mean-pool one of its {model.num_layers} hidden states"
            )
        emb = embed_cuts(model, cuts, batch_size=cfg.embed_batch_size, device=device)
    else:
        if layer >= model.num_layers:
            raise UserError(
                f"--teacher-layer {layer}: teacher {cfg.teacher} has hidden states "
                f"0..{model.num_layers - 1}"
            )
        rows: list = [None] * len(cuts)
        with torch.inference_mode():
            for i, (frames,) in upstream_frames(model, cuts, [layer], cfg.embed_batch_size,
                                                device=device):  # fmt: skip
                rows[i] = frames.mean(0) if len(frames) else np.zeros(frames.shape[1], np.float32)
        emb = np.stack(rows).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = save_embeddings(folder / "embeddings.tmp.npz", emb, ids)
    tmp.replace(npz)
    info = {"upstream": cfg.teacher, "teacher_id": teacher_id, "layer": layer_name,
            "dim": int(emb.shape[1]), "utterances": len(ids),
            "parameters": count_parameters(model)}  # fmt: skip
    write_json(meta, info, indent=2)
    log.info("stage 1: %d teacher embeddings of dim %d -> %s", len(ids), emb.shape[1], npz)
    return emb, info


# -- stage 2: pseudo-labels -------------------------------------------------------------------


def pseudo_labels(cfg: UnfusedConfig, cuts: list, emb, folder: Path, label: str | None):
    """Stage 2: ``(CutSet with label "pseudo", clusters info)``, from ``folder`` when complete."""
    import numpy as np
    from lhotse import CutSet

    from speechssl.data.batching import get_label
    from speechssl.data.manifest import load_cuts, save_cuts
    from speechssl.kmeans.whiten import cluster_embeddings, label_agreement

    c = cfg.cluster
    cut_path, meta = folder / "cuts.jsonl.gz", folder / "clusters.json"
    asked = {"k": c.k, "dims_asked": c.dims, "iterations": c.iterations, "seed": c.seed,
             "embeddings": _fingerprint(np.asarray(emb, np.float32))}  # fmt: skip
    if meta.is_file() and cut_path.is_file():
        info = json.loads(meta.read_text())
        done = load_cuts(cut_path)
        if all(info.get(key) == v for key, v in asked.items()) and [x.id for x in done] == [
            x.id for x in cuts
        ]:
            log.info("stage 2: pseudo-labels from %s", cut_path)
            return done, info
    if c.k > len(cuts):
        raise UserError(
            f"--cluster.k {c.k} is larger than the {len(cuts)} utterances to cluster; "
            "lower --cluster.k"
        )
    result = cluster_embeddings(emb, k=c.k, dims=c.dims, n_iter=c.iterations, seed=c.seed)
    labels = result.labels.tolist()
    folder.mkdir(parents=True, exist_ok=True)
    labelled = CutSet.from_cuts(
        _with_label(x, PSEUDO, int(y)) for x, y in zip(cuts, labels, strict=True)
    )
    save_cuts(labelled, cut_path)
    np.save(folder / "centroids.npy", result.centroids)
    sizes = result.sizes()
    info = asked | {
        "dims": result.whitening.dims,
        "utterances": len(cuts),
        "sizes": sizes,
        "empty_clusters": sum(1 for s in sizes if s == 0),
        "inertia": result.inertia,
        "fingerprint": _fingerprint([x.id for x in cuts], labels),
    }
    if label is not None:
        info["agreement"] = {"label": label} | label_agreement(
            labels, [get_label(x, label) for x in cuts]
        )
    write_json(meta, info, indent=2)  # last: its presence marks the stage complete
    log.info("stage 2: k=%d on %d utterances (whitened to %d dims), sizes %s", c.k, len(cuts),
             result.whitening.dims, sizes)  # fmt: skip
    return load_cuts(cut_path), info


# -- stage 3: unsupervised fine-tuning --------------------------------------------------------


def distill_student(
    cfg: UnfusedConfig, cuts, k: int, folder: Path, teacher_params: int, made_from: str
) -> dict:
    """Stage 3: train a fresh student on the pseudo-labels; its run folder is ``folder``."""
    from lhotse.dataset import SimpleCutSampler

    from speechssl.data.batching import LabelEncoder
    from speechssl.data.chunks import ChunkDataset
    from speechssl.models.registry import model_spec
    from speechssl.models.student import build_student, count_parameters
    from speechssl.objectives.self_distill import (
        SelfDistillLoss,
        SelfDistillModel,
        SelfDistillObjective,
    )
    from speechssl.training import Trainer, seed_everything
    from speechssl.training.checkpoint import find_latest

    done = folder / "done.json"
    made_from = _fingerprint(made_from, to_dict(cfg.student), to_dict(cfg.distill),
                             {k: getattr(cfg.train, k) for k in _TRAINING})  # fmt: skip
    _check_made_from(folder, made_from, "pseudo-labels or student/distill/train options")
    if done.is_file():
        log.info("stage 3: student already trained (%s)", done)
        return json.loads(done.read_text())
    d, t = cfg.distill, cfg.train
    seed_everything(t.seed)
    encoder = build_student(cfg.student)
    n_student = count_parameters(encoder)
    if teacher_params and n_student > teacher_params:
        message = (
            f"the student ({cfg.student.kind}, {n_student:,} parameters) is larger than the "
            f"teacher ({teacher_params:,}); UnFuSeD distils into a smaller model"
        )
        warnings.warn(message, stacklevel=2)
        log.warning(message)
    model = SelfDistillModel(encoder, k, d.head_hidden)
    batch = min(d.batch_size, len(cuts))
    if batch < 2:
        raise UserError("stage 3 needs at least 2 utterances (batch norm over a batch)")
    steps = d.epochs * math.ceil(len(cuts) / batch) if d.epochs is not None else t.max_steps
    resume = find_latest(folder / "checkpoints") is not None
    tcfg = dataclasses.replace(
        t, max_steps=steps, resume=resume, warmup_steps=min(t.warmup_steps, steps),
        ckpt_every=min(t.ckpt_every, steps), log_every=min(t.log_every, steps),
    )  # fmt: skip
    labels = LabelEncoder(PSEUDO, range(k))  # every cluster, even an empty one
    dataset = ChunkDataset(labels, d.crop_seconds, None, t.seed)
    sampler = SimpleCutSampler(cuts, max_cuts=batch, shuffle=True, drop_last=True, seed=t.seed)
    loss = SelfDistillLoss(d.alpha, d.beta, d.gamma, d.temperature, d.detach)
    spec = model_spec(encoder) | {
        "prefix": "encoder.",
        "self_distill": {"classes": k, "heads": len(model.heads)},
    }
    if not resume:
        start_run(folder, "unfused-distill", tcfg, seed=t.seed)
    log.info("stage 3: %s student, %d parameters, %d heads, %d steps of %d crops",
             cfg.student.kind, n_student, len(model.heads), steps, batch)  # fmt: skip
    trainer = Trainer(
        model, SelfDistillObjective(PSEUDO, loss), sampler, dataset, tcfg, folder, spec
    )
    last = trainer.fit()
    info = {"kind": cfg.student.kind, "parameters": n_student, "heads": len(model.heads),
            "steps": steps, "checkpoint": str(last or find_latest(folder / "checkpoints"))}  # fmt: skip
    write_json(done, info, indent=2)
    return info


# -- stage 4: fine-tuning on the true labels ---------------------------------------------------


def _accuracy(model, cuts, labels, field: str, device) -> float:
    """Top-1 accuracy of ``model`` (a FinetuneModel) on whole utterances; a class unseen in
    training counts as an error."""
    import torch

    from speechssl.data.batching import get_label
    from speechssl.evaluation.verification import embed_cuts

    cuts = list(cuts)
    with torch.no_grad():
        emb = embed_cuts(model.encoder, cuts, device=device)
        logits = model.head(torch.from_numpy(emb).float().to(device))
    y = [get_label(c, field) for c in cuts]
    truth = torch.tensor([labels.encode(v) if v in labels else -1 for v in y], device=device)
    return float((logits.argmax(1) == truth).float().mean())


def labelled_subset(cuts: list, label: str, fraction: float, seed: int) -> list:
    """A stratified share ``fraction`` of ``cuts``: per class ``round(fraction * n)`` utterances
    (at least one), drawn with ``seed``; ``cuts``' order is kept. The low-resource setting of
    the evidence (10 % of the labels); dev and test are never subsampled."""
    import numpy as np

    from speechssl.data.batching import get_label

    if fraction >= 1.0:
        return list(cuts)
    by_class: dict[Any, list[int]] = {}
    for i, c in enumerate(cuts):
        by_class.setdefault(get_label(c, label), []).append(i)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for value in sorted(by_class, key=str):
        idx = by_class[value]
        n = max(1, round(fraction * len(idx)))
        keep += rng.choice(idx, size=n, replace=False).tolist()
    return [cuts[i] for i in sorted(keep)]


class _DevSelection:
    """Trainer monitor: dev accuracy every ``every`` steps; the best weights (first of
    equals) are written to ``folder`` (``model.safetensors``, ``best.json``)."""

    def __init__(self, dev, labels, field: str, folder: Path, every: int):
        self.dev, self.labels, self.field, self.folder, self.every = (
            dev,
            labels,
            field,
            folder,
            every,
        )
        meta = folder / "best.json"
        self.best = json.loads(meta.read_text()) if meta.is_file() else None

    def __call__(self, model, step: int) -> dict:
        from safetensors.torch import save_file

        start = time.perf_counter()
        device = next(model.parameters()).device
        acc = _accuracy(model, self.dev, self.labels, self.field, device)
        if self.best is None or acc > self.best["dev_accuracy"]:
            self.folder.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            tmp = self.folder / "model.safetensors.tmp"
            save_file(state, str(tmp))
            tmp.replace(self.folder / "model.safetensors")
            self.best = {"step": step, "dev_accuracy": acc}
            write_json(self.folder / "best.json", self.best, indent=2)
        return {"dev_acc": acc, "best_dev_acc": self.best["dev_accuracy"],
                "monitor_seconds": time.perf_counter() - start}  # fmt: skip


def finetune_student(cfg: UnfusedConfig, task, student: Path, folder: Path) -> dict:
    """Stage 4: the student plus a linear classifier on the true labels, selected on dev."""
    import torch
    from lhotse import CutSet
    from lhotse.dataset import SimpleCutSampler
    from safetensors.torch import load_file

    from speechssl.data.batching import LabelEncoder, get_label
    from speechssl.data.chunks import ChunkDataset
    from speechssl.models.finetune import FinetuneModel
    from speechssl.models.registry import load_upstream, model_spec, upstream_id
    from speechssl.objectives.classify import ClassifyObjective
    from speechssl.training import Trainer
    from speechssl.training.checkpoint import find_latest

    results_path = folder / "results.json"
    made_from = _fingerprint(upstream_id(student), to_dict(cfg.finetune), cfg.train.seed)
    _check_made_from(folder, made_from, "student weights or finetune options")
    if results_path.is_file():
        log.info("stage 4: already fine-tuned (%s)", results_path)
        return json.loads(results_path.read_text())
    f, t = cfg.finetune, cfg.train
    train, dev, test = (list(task.splits.get(n) or []) for n in ("train", "dev", "test"))
    labels = LabelEncoder(task.label, [get_label(c, task.label) for c in train])
    train = labelled_subset(train, task.label, f.label_fraction, t.seed)
    torch.manual_seed(t.seed)
    model = FinetuneModel(load_upstream(student), len(labels))
    if f.mode == "linear":
        for p in model.encoder.parameters():
            p.requires_grad = False
    batch = min(f.batch_size, len(train))
    if batch < 2:
        raise UserError("stage 4 needs at least 2 training utterances")
    per_epoch = math.ceil(len(train) / batch)
    steps = f.epochs * per_epoch
    resume = find_latest(folder / "checkpoints") is not None
    tcfg = TrainConfig(
        max_steps=steps, lr=f.lr, min_lr=f.lr, warmup_steps=0, weight_decay=0.0,
        log_every=max(1, min(10, steps // 10)), ckpt_every=per_epoch,
        seed=t.seed, num_workers=t.num_workers, resume=resume,
    )  # fmt: skip
    best = folder / "best"
    monitor = (
        _DevSelection(dev, labels, task.label, best, f.eval_every or per_epoch) if dev else None
    )
    dataset = ChunkDataset(labels, f.crop_seconds, None, t.seed)
    sampler = SimpleCutSampler(
        CutSet.from_cuts(train), max_cuts=batch, shuffle=True, drop_last=True, seed=t.seed
    )
    spec = model_spec(model.encoder) | {"prefix": "encoder.", "classes": len(labels)}
    if not resume:
        start_run(folder, f"unfused-finetune-{f.mode}", tcfg, seed=t.seed)
    trainer = Trainer(model, ClassifyObjective(task.label), sampler, dataset, tcfg, folder, spec,
                      monitor=monitor)  # fmt: skip
    trainer.fit()
    device = next(model.parameters()).device
    results: dict[str, Any] = {"mode": f.mode, "steps": steps, "classes": len(labels),
                               "split_sizes": {n: len(s) for n, s in task.splits.items()},
                               "label_fraction": f.label_fraction, "labelled": len(train)}  # fmt: skip
    if monitor is not None and monitor.best is not None:
        model.load_state_dict(load_file(str(best / "model.safetensors"), device=str(device)))
        results |= {"selection": "dev", "selected_step": monitor.best["step"],
                    "dev_accuracy": monitor.best["dev_accuracy"]}  # fmt: skip
    else:
        results |= {"selection": "last step (no dev split)", "selected_step": steps}
    model.eval()
    results["test_accuracy"] = _accuracy(model, test, labels, task.label, device)
    write_json(results_path, results, indent=2)
    return results


# -- the pipeline ------------------------------------------------------------------------------


def run_unfused(cfg: UnfusedConfig) -> dict:
    """Run (or continue) the four stages; returns what ``<out>/results.json`` holds."""
    run_dir = start_run(cfg.out, "unfused", cfg, seed=cfg.train.seed)
    task, cuts = _data(cfg)
    label = task.label if task is not None else None
    emb, teacher = teacher_embeddings(cfg, cuts, run_dir / "teacher")
    pseudo, clusters = pseudo_labels(cfg, cuts, emb, run_dir / "pseudo", label)
    student = distill_student(cfg, pseudo, cfg.cluster.k, run_dir / "student",
                              teacher["parameters"], clusters["fingerprint"])  # fmt: skip
    results: dict[str, Any] = {"task": task.name if task else None, "label": label,
                               "teacher": teacher, "clusters": clusters, "student": student}  # fmt: skip
    if cfg.finetune.mode != "none":
        results["finetune"] = finetune_student(cfg, task, run_dir / "student", run_dir / "finetune")
    results["config"] = to_dict(cfg)
    write_json(run_dir / "results.json", results, indent=2)
    return results
