"""Probe one task over already extracted features: utterance, frame or verification.

``speechssl probe`` extracts (or reuses) every layer's features once with
:func:`~speechssl.evaluation.features.extract_features`, then calls :func:`run_probe_on`:

* utterance tasks: mean+std pooled layers, one probe per seed (:func:`fit_and_score`);
* frame tasks: every upstream frame with the alignment label at its centre, linear probes;
* ctc tasks: a space-separated token label per cut (phones), CTC probes scored by PER
  (:mod:`~speechssl.evaluation.ctc_probe`);
* verification: no training; cosine trials of centred mean-pooled features of the test
  speakers, EER and minDCF for every layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
import torch

from speechssl.data.batching import LabelEncoder, get_label
from speechssl.errors import UserError
from speechssl.evaluation.ctc_probe import (
    CtcHead,
    CtcProbe,
    CtcTraining,
    ctc_min_frames,
    score,
    train_ctc_probe,
)
from speechssl.evaluation.features import LayerFeatures
from speechssl.evaluation.probes import ProbeTraining, fit_and_score, frame_labels, summarize
from speechssl.evaluation.tasks import Task
from speechssl.evaluation.verification import cosine_scores, make_trials, verification_metrics

__all__ = [
    "ctc_data",
    "frame_data",
    "run_ctc_probe",
    "run_probe_on",
    "utterance_data",
    "verification_by_layer",
]


def run_probe_on(
    task: Task,
    feats: LayerFeatures,
    *,
    layer: int | None = None,
    classifier: Literal["linear", "mlp"] = "linear",
    seeds: Sequence[int] = (0, 1, 2),
    training: ProbeTraining | None = None,
    split_seed: int = 0,
    ctc: CtcTraining | None = None,
    ctc_head: CtcHead = "linear",
    skip_short: bool = False,
    select_layer: bool = False,
) -> dict:
    """The probe of ``task`` on ``feats`` (features of every cut of the task).

    Args:
        task: the task and its splits.
        feats: features of (at least) every cut of ``task``.
        layer: probe one hidden state; ``None`` learns a weighted sum of all.
        classifier: utterance classifier on pooled mean+std (frame probes are linear).
        seeds: one probe per seed; mean and std are reported.
        training: epochs, learning rate and batch size (utterances; frame tasks use 16 x
            this many frames per batch).
        split_seed: seed of the verification trials.
        ctc, ctc_head: training and head of a ctc task's probe.
        skip_short: leave training utterances shorter than their label (at the upstream's
            frame rate) out of CTC training, counted in the results, instead of an error.
        select_layer: probe every layer alone on the first seed, keep the one best on dev
            (PER or accuracy) and report all seeds on it; the dev score of every layer is in
            ``layer_selection``. A learned weighting can under-read a model whose best layer
            is in the middle (``benchmarks/results/layers.md``).

    Returns:
        What ``results.json`` of ``speechssl probe`` holds, less the upstream and config.
    """
    training = training or ProbeTraining()
    index = feats.index()
    if layer is not None and not -feats.num_layers <= layer < feats.num_layers:
        raise UserError(f"--layer {layer} out of range: the upstream has {feats.num_layers} layers")
    if select_layer:
        return _dev_selected_layer(
            task, feats, layer=layer, classifier=classifier, seeds=seeds, training=training,
            split_seed=split_seed, ctc=ctc, ctc_head=ctc_head, skip_short=skip_short,
        )  # fmt: skip
    base = {
        "task": task.name,
        "kind": task.kind,
        "label": task.label,
        "split_sizes": {n: len(s) for n, s in task.splits.items()},
        "num_layers": feats.num_layers,
        "layer": layer,
    }
    if task.kind == "verification":
        return base | verification_by_layer(task, feats, index, layer, split_seed)
    if task.kind == "ctc":
        return base | run_ctc_probe(
            task, feats, index, layer, seeds, ctc or CtcTraining(), ctc_head, skip_short
        )
    if task.kind == "utterance":
        x, y, enc = utterance_data(task, feats, index)
        per_seed, weights = fit_and_score(x, y, len(enc), layer, classifier, training, seeds)
        base["classes"] = [str(c) for c in enc.classes]
    else:
        x, y, num_classes = frame_data(task, feats, index)
        frames = replace(training, batch_size=training.batch_size * 16)
        per_seed, weights = fit_and_score(
            x, y, num_classes, layer, "linear", frames, seeds, frame=True
        )
        base["frames"] = {n: len(v) for n, v in y.items()}
    return base | {
        "seeds": list(seeds),
        "per_seed": per_seed,
        "summary": summarize(per_seed),
        "layer_weights": np.mean(weights, axis=0).tolist(),
    }


def _dev_selected_layer(task: Task, feats: LayerFeatures, *, layer, seeds, **kw) -> dict:
    """:func:`run_probe_on` on the layer with the best dev score of a first-seed probe."""
    if layer is not None:
        raise UserError("give --layer N or --select-layer, not both")
    if task.kind == "verification":
        raise UserError(
            "--select-layer needs a trained probe; verification already scores every layer"
        )
    if not len(task.splits.get("dev", [])):
        raise UserError("--select-layer needs a dev split to choose on; this task has none")
    key, pick = ("dev_per", np.argmin) if task.kind == "ctc" else ("dev_accuracy", np.argmax)
    dev = [
        run_probe_on(task, feats, layer=k, seeds=seeds[:1], **kw)["per_seed"][0][key]
        for k in range(feats.num_layers)
    ]
    chosen = int(pick(dev))
    out = run_probe_on(task, feats, layer=chosen, seeds=seeds, **kw)
    by = {"by": key, "seed": seeds[0], "dev_by_layer": dev, "chosen": chosen}
    return out | {"layer_selection": by}


def utterance_data(task: Task, feats: LayerFeatures, index: dict[str, int]):
    """Pooled features ``[n, L, 2D]`` and class indices per non-empty split, and the encoder
    (classes of the training split; a label value unseen in training is a UserError)."""
    pooled = torch.from_numpy(feats.pooled(std=True))
    enc = LabelEncoder(task.label, [get_label(c, task.label) for c in task.splits["train"]])
    x, y = {}, {}
    for name, split in task.splits.items():
        if len(split) == 0:
            continue
        missing = sorted(
            {str(get_label(c, task.label)) for c in split} - {str(v) for v in enc.classes}
        )
        if missing:
            raise UserError(
                f"{name} split has label values never seen in train: {', '.join(missing[:10])}"
            )
        x[name] = pooled[[index[c.id] for c in split]]
        y[name] = torch.tensor([enc.encode(get_label(c, task.label)) for c in split])
    return x, y, enc


def frame_data(task: Task, feats: LayerFeatures, index: dict[str, int]):
    """Frames ``[frames, L, D]`` (float16) and their alignment labels per non-empty split,
    and the number of classes (largest label + 1)."""
    x, y, top = {}, {}, 0
    for name, split in task.splits.items():
        if len(split) == 0:
            continue
        xs, ys = [], []
        for c in split:
            i = index[c.id]
            n = int(feats.offsets[i + 1] - feats.offsets[i])
            if n == 0:
                continue
            ali = np.asarray(c.load_custom(task.label))
            ys.append(frame_labels(ali, n, feats.frame_rate))
            rows = slice(feats.offsets[i], feats.offsets[i + 1])
            xs.append(np.stack([feats.layers[k][rows] for k in range(feats.num_layers)], 1))
        x[name] = torch.from_numpy(np.concatenate(xs))  # float16 [frames, L, D]
        y[name] = torch.from_numpy(np.concatenate(ys).astype(np.int64))
        top = max(top, int(y[name].max()) + 1)
    return x, y, top


def verification_by_layer(
    task: Task, feats: LayerFeatures, index: dict[str, int], layer: int | None, seed: int
) -> dict:
    """EER and minDCF of cosine trials among the test split's speakers, for every layer;
    ``metrics`` is the chosen ``layer`` (default: the last)."""
    cuts = list(task.splits["test"])
    speakers = [str(get_label(c, task.label)) for c in cuts]
    trials = make_trials(speakers, seed=seed)
    pooled = feats.pooled(std=False)[[index[c.id] for c in cuts]]  # [N, L, D] means
    per_layer = [
        verification_metrics(cosine_scores(pooled[:, k], trials), trials[:, 2])
        for k in range(feats.num_layers)
    ]
    chosen = feats.num_layers - 1 if layer is None else layer % feats.num_layers
    return {
        "trials": int(len(trials)),
        "scored_layer": chosen,
        "metrics": per_layer[chosen],
        "per_layer": per_layer,
    }


def ctc_data(task: Task, feats: LayerFeatures, index: dict[str, int]) -> dict:
    """Per non-empty split: frames ``[T, L, D]`` (float16) and the token strings of every cut;
    the training vocabulary; per split, the reference tokens never seen in training and the
    cuts with fewer frames than CTC needs for their label."""
    data: dict = {"x": {}, "refs": {}, "short": {}, "unseen": {}}
    for name, split in task.splits.items():
        if len(split) == 0:
            continue
        xs, refs, short = [], [], []
        for c in split:
            i = index[c.id]
            rows = slice(feats.offsets[i], feats.offsets[i + 1])
            tokens = str(get_label(c, task.label)).split()
            if not tokens:
                raise UserError(f"ctc task: cut {c.id} has an empty '{task.label}' token sequence")
            frames = np.stack([feats.layers[k][rows] for k in range(feats.num_layers)], 1)
            if len(frames) < ctc_min_frames(tokens):
                short.append(c.id)
            xs.append(torch.from_numpy(np.ascontiguousarray(frames)))
            refs.append(" ".join(tokens))
        data["x"][name], data["refs"][name], data["short"][name] = xs, refs, short
    data["vocab"] = sorted({t for r in data["refs"]["train"] for t in r.split()})
    known = set(data["vocab"])
    for name, refs in data["refs"].items():
        data["unseen"][name] = sorted(t for r in refs for t in r.split() if t not in known)
    return data


def run_ctc_probe(
    task: Task,
    feats: LayerFeatures,
    index: dict[str, int],
    layer: int | None,
    seeds: Sequence[int],
    training: CtcTraining,
    head: CtcHead,
    skip_short: bool,
) -> dict:
    """CTC probes (one per seed) over the training vocabulary plus blank; test PER with
    substitutions, deletions and insertions.

    A test or dev token never seen in training stays in the reference: no output can match
    it, so each one is an error (a substitution or deletion); their count is reported.
    """
    d = ctc_data(task, feats, index)
    fps = f"{feats.frame_rate:g} Hz"
    short_train = d["short"]["train"]
    if short_train and not skip_short:
        n = sum(len(v) for v in d["short"].values())
        raise UserError(
            f"{n} cuts ({len(short_train)} in train; first: {short_train[0]}) have fewer "
            f"frames at the upstream's {fps} than CTC needs for their '{task.label}' label; "
            "use --skip-short to train without them (counted in the results)"
        )
    if len(short_train) == len(d["x"]["train"]):
        raise UserError(f"every training cut is shorter than its label at {fps}: nothing to learn")
    keep = [i for i, c in enumerate(task.splits["train"]) if c.id not in set(short_train)]
    vocab = d["vocab"]
    ids = {t: k + 1 for k, t in enumerate(vocab)}
    x = [d["x"]["train"][i] for i in keep]
    y = [torch.tensor([ids[t] for t in d["refs"]["train"][i].split()]) for i in keep]
    mean, std = _frame_stats(x)
    x_dev, refs_dev = d["x"].get("dev", []), d["refs"].get("dev", [])
    per_seed, weights, curves = [], [], []
    for seed in seeds:
        torch.manual_seed(seed)
        model = CtcProbe(mean, std, len(vocab) + 1, layer, head, training.hidden, training.context)
        model, hist = train_ctc_probe(model, x, y, x_dev, refs_dev, vocab, training, seed)
        m = score(model, d["x"]["test"], d["refs"]["test"], vocab)
        curves.append(hist.pop("dev_curve"))
        per_seed.append(m | hist)
        weights.append(model.layers.weights().detach().tolist())
    return {
        "head": head,
        "frame_rate": feats.frame_rate,
        "vocab": vocab,
        "tokens": {n: sum(len(r.split()) for r in refs) for n, refs in d["refs"].items()},
        "unseen_tokens": {n: len(v) for n, v in d["unseen"].items()},
        "unseen_types": sorted({t for v in d["unseen"].values() for t in v}),
        "too_short": {n: len(v) for n, v in d["short"].items()},
        "training": vars(training).copy(),
        "seeds": list(seeds),
        "per_seed": per_seed,
        "summary": summarize(per_seed),
        "dev_curves": curves,
        "layer_weights": np.mean(weights, axis=0).tolist(),
    }


def _frame_stats(xs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std ``[L, D]`` over all frames, one utterance at a time (no float32 copy of
    every frame at once)."""
    total = sum(len(x) for x in xs)
    s1 = sum(x.double().sum(0) for x in xs)
    s2 = sum((x.double() ** 2).sum(0) for x in xs)
    mean = s1 / total
    var = (s2 / total - mean**2).clamp(min=0) * total / max(total - 1, 1)
    return mean.float(), var.sqrt().float()
