"""Probes on frozen features: a layer weighting, a small classifier, a plain training loop.

Features come from :mod:`speechssl.evaluation.features` and fit in memory (pooled vectors,
or frames of a small corpus), so training a probe is a short function over tensors: Adam, a
fixed number of epochs, early stopping on a dev split. The probes do not need the DDP
engine of ``speechssl.training``: they are small enough for a CPU.

Utterance probes weight *pooled* layer statistics: for the mean this equals pooling the
weighted sum of layers (pooling is linear); for the std it is an approximation that keeps
the training tensors at ``[N, L, 2D]`` instead of every frame of every layer.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

__all__ = [
    "FrameProbe",
    "LayerWeights",
    "ProbeTraining",
    "UtteranceProbe",
    "classification_metrics",
    "frame_labels",
    "macro_f1",
    "predict",
    "summarize",
    "train_probe",
]


class LayerWeights(nn.Module):
    """Softmax-weighted sum over the layer axis of ``[..., L, D]``, or one chosen layer."""

    def __init__(self, num_layers: int, layer: int | None = None):
        super().__init__()
        if layer is not None and not -num_layers <= layer < num_layers:
            raise ValueError(f"layer {layer} out of range for {num_layers} layers")
        self.num_layers = num_layers
        self.layer = None if layer is None else layer % num_layers
        self.logits = nn.Parameter(torch.zeros(num_layers), requires_grad=layer is None)

    def weights(self) -> torch.Tensor:
        if self.layer is not None:
            return nn.functional.one_hot(torch.tensor(self.layer), self.num_layers).float()
        return torch.softmax(self.logits, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer is not None:
            return x[..., self.layer, :]
        return torch.einsum("...ld,l->...d", x, self.weights())


class _Standardize(nn.Module):
    """Per layer and dimension z-scoring with training-set statistics (fbank is ~-10 +- 3)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std.clamp(min=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


class UtteranceProbe(nn.Module):
    """Pooled statistics ``[B, L, D]`` -> layer weighting -> linear or one-hidden-layer MLP."""

    def __init__(
        self,
        mean: torch.Tensor,
        std: torch.Tensor,
        num_classes: int,
        layer: int | None = None,
        classifier: Literal["linear", "mlp"] = "linear",
        hidden: int = 256,
        dropout: float = 0.1,
    ):
        super().__init__()
        num_layers, dim = mean.shape
        self.norm = _Standardize(mean, std)
        self.layers = LayerWeights(num_layers, layer)
        if classifier == "linear":
            self.head: nn.Module = nn.Linear(dim, num_classes)
        elif classifier == "mlp":
            self.head = nn.Sequential(
                nn.Linear(dim, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )
        else:
            raise ValueError(f"classifier must be 'linear' or 'mlp', got {classifier!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.norm(x)))


class FrameProbe(UtteranceProbe):
    """The same module applied to single frames ``[B, L, D]``: a linear per-frame classifier."""


@dataclass
class ProbeTraining:
    """How a probe is trained."""

    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    patience: int = 5  # epochs without dev improvement before stopping (with a dev split)


def train_probe(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    x_dev: torch.Tensor | None = None,
    y_dev: torch.Tensor | None = None,
    training: ProbeTraining | None = None,
    seed: int = 0,
) -> tuple[nn.Module, dict]:
    """Adam on cross-entropy for ``training.epochs``; with a dev split, keep the best epoch.

    Returns the model (best dev accuracy state when a dev split is given) and a small
    history: epochs run, best epoch and dev accuracy.
    """
    t = training or ProbeTraining()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=t.lr, weight_decay=t.weight_decay
    )
    best, best_acc, best_epoch, stale, epoch = None, -1.0, -1, 0, 0
    for epoch in range(t.epochs):
        model.train()
        perm = torch.randperm(len(y), generator=gen)
        for s in range(0, len(perm), t.batch_size):
            idx = perm[s : s + t.batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if x_dev is not None and y_dev is not None and len(y_dev):
            acc = float((predict(model, x_dev) == y_dev.numpy()).mean())
            if acc > best_acc:
                best, best_acc, best_epoch, stale = copy.deepcopy(model.state_dict()), acc, epoch, 0
            else:
                stale += 1
                if stale >= t.patience:
                    break
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    return model, {"epochs_run": epoch + 1, "best_epoch": best_epoch + 1, "dev_accuracy": best_acc}


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    """Arg-max class of every row of ``x``."""
    model.eval()
    with torch.inference_mode():
        out = [model(x[s : s + batch_size]).argmax(-1) for s in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean F1 over the classes present in ``y_true`` or ``y_pred`` (as sklearn)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.union1d(y_true, y_pred)
    f1 = []
    for c in classes:
        tp = np.sum((y_true == c) & (y_pred == c))
        fp = np.sum((y_true != c) & (y_pred == c))
        fn = np.sum((y_true == c) & (y_pred != c))
        f1.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1)) if f1 else 0.0


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))),
        "macro_f1": macro_f1(y_true, y_pred),
    }


def frame_labels(
    alignment: np.ndarray, num_frames: int, frame_rate: float, align_rate: float = 100.0
) -> np.ndarray:
    """The alignment label nearest to the centre of each of ``num_frames`` upstream frames.

    Frame ``j`` at ``frame_rate`` is centred on ``(j + 0.5) / frame_rate`` seconds, which
    falls in alignment frame ``floor((j + 0.5) * align_rate / frame_rate)`` (clipped to the
    alignment's end); at equal rates this is the identity.
    """
    alignment = np.asarray(alignment)
    if alignment.size == 0:
        raise ValueError("empty alignment")
    idx = np.floor((np.arange(num_frames) + 0.5) * align_rate / frame_rate).astype(np.int64)
    return alignment[np.minimum(idx, alignment.size - 1)]


def summarize(per_seed: Sequence[dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """Mean and sample std of every numeric metric over seeds (std ``None`` for one seed: a
    spread of 0 would claim a certainty that one seed cannot give)."""
    out = {}
    for k in per_seed[0]:
        vals = np.array([float(r[k]) for r in per_seed])
        out[k] = {
            "mean": float(vals.mean()),
            "std": float(vals.std(ddof=1)) if len(vals) > 1 else None,
        }
    return out


def fit_and_score(
    x: dict[str, torch.Tensor],
    y: dict[str, torch.Tensor],
    num_classes: int,
    layer: int | None,
    classifier: Literal["linear", "mlp"],
    training: ProbeTraining,
    seeds: Sequence[int],
    frame: bool = False,
) -> tuple[list[dict], list[list[float]]]:
    """Train one probe per seed on ``x["train"]`` (early stopping on ``"dev"`` if present).

    Returns per-seed test metrics (plus the dev accuracy and epochs) and per-seed layer
    weights.
    """
    xt = x["train"].float()
    mean, std = xt.mean(0), xt.std(0) if len(xt) > 1 else torch.ones_like(xt[0])
    results, weights = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        cls = FrameProbe if frame else UtteranceProbe
        model = cls(mean, std, num_classes, layer, "linear" if frame else classifier)
        model, hist = train_probe(
            model, x["train"], y["train"], x.get("dev"), y.get("dev"), training, seed
        )
        pred = predict(model, x["test"])
        m = classification_metrics(y["test"].numpy(), pred)
        m.update({"dev_accuracy": hist["dev_accuracy"], "epochs_run": hist["epochs_run"]})
        results.append(m)
        weights.append(model.layers.weights().detach().tolist())
    return results, weights
