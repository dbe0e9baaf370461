"""Probe one task over already extracted features: utterance, frame or verification.

``speechssl probe`` extracts (or reuses) every layer's features once with
:func:`~speechssl.evaluation.features.extract_features`, then calls :func:`run_probe_on`:

* utterance tasks: mean+std pooled layers, one probe per seed (:func:`fit_and_score`);
* frame tasks: every upstream frame with the alignment label at its centre, linear probes;
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
from speechssl.evaluation.features import LayerFeatures
from speechssl.evaluation.probes import ProbeTraining, fit_and_score, frame_labels, summarize
from speechssl.evaluation.tasks import Task
from speechssl.evaluation.verification import cosine_scores, make_trials, verification_metrics

__all__ = ["frame_data", "run_probe_on", "utterance_data", "verification_by_layer"]


def run_probe_on(
    task: Task,
    feats: LayerFeatures,
    *,
    layer: int | None = None,
    classifier: Literal["linear", "mlp"] = "linear",
    seeds: Sequence[int] = (0, 1, 2),
    training: ProbeTraining | None = None,
    split_seed: int = 0,
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

    Returns:
        What ``results.json`` of ``speechssl probe`` holds, less the upstream and config.
    """
    training = training or ProbeTraining()
    index = feats.index()
    if layer is not None and not -feats.num_layers <= layer < feats.num_layers:
        raise UserError(f"--layer {layer} out of range: the upstream has {feats.num_layers} layers")
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
