"""``speechssl kmeans fit`` / ``speechssl kmeans label``: offline targets for masked prediction.

    speechssl kmeans fit --cuts train.jsonl.gz --upstream mfcc --k 100 --out km/mfcc-100
    speechssl kmeans label --kmeans km/mfcc-100 --cuts train.jsonl.gz --out labels/train

``fit`` streams the upstream over the cuts, keeps a seeded sample of at most ``max_frames``
frames (memory stays bounded by that sample) and writes ``centroids.npy`` + ``kmeans.json``.
``label`` streams again and writes every frame's cluster id through
:class:`~speechssl.kmeans.labels.LabelWriter`; a killed labelling job, rerun with the same
arguments, continues where it stopped. Labelling other cuts than the k-means was fitted on is
allowed (fit on train, label train and dev) and recorded in the label set's info.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from speechssl.config import opt
from speechssl.errors import UserError
from speechssl.progress import Progress
from speechssl.runs import start_run

if TYPE_CHECKING:
    from lhotse.cut import Cut

    from speechssl.kmeans.labels import KmeansLabels
    from speechssl.models.upstream import Upstream

# The configs import nothing heavy (a command's --help reads them); the jobs below import
# numpy, torch, lhotse and the library where they run.

__all__ = ["KmeansFitConfig", "KmeansLabelConfig", "fit", "label"]

log = logging.getLogger("speechssl")


@dataclass
class KmeansFitConfig:
    """Fit k-means centroids on frames of one layer of an upstream."""

    cuts: Path = opt(help="CutSet whose frames are clustered (usually the training split)")
    out: Path = opt(help="folder for centroids.npy, kmeans.json and the run files")
    upstream: str = opt("mfcc", "mfcc | fbank | tiny | small | base | checkpoint | HF folder")
    layer: int | None = opt(None, "hidden state to cluster (default: last; 0 for mfcc/fbank)")
    k: int = opt(100, "number of clusters", ge=1)
    max_frames: int = opt(200_000, "fit on a seeded sample of at most this many frames", ge=1)
    seed: int = opt(0, "seed of the frame sample, k-means++ and faiss", ge=0)
    n_iter: int = opt(50, "Lloyd iterations after k-means++ seeding", ge=0)
    seeding: Literal["greedy", "plain"] = opt(
        "greedy", "k-means++ seeding: greedy (2 + ln k candidates per centre) or plain (1)"
    )
    batch_size: int = opt(16, "cuts per upstream batch", ge=1)
    max_batch_seconds: float = opt(160.0, "padded audio seconds per upstream batch", gt=0)
    device: str = opt("cpu", "device the upstream runs on")
    cache_dir: Path | None = opt(
        None, "feature cache of `speechssl probe`; used when it already holds these cuts"
    )


@dataclass
class KmeansLabelConfig:
    """Label every frame of a CutSet with its nearest centroid (resumable)."""

    kmeans: Path = opt(help="folder written by `speechssl kmeans fit`")
    cuts: Path = opt(help="CutSet to label (may differ from the one the k-means was fitted on)")
    out: Path = opt(help="label folder (rerun with the same arguments to resume)")
    batch_size: int = opt(16, "cuts per upstream batch", ge=1)
    max_batch_seconds: float = opt(160.0, "padded audio seconds per upstream batch", gt=0)
    device: str = opt("cpu", "device the upstream runs on")
    shard_size: int = opt(1_000_000, "labels per shard file", ge=1)
    cache_dir: Path | None = opt(
        None, "feature cache of `speechssl probe`; used when it already holds these cuts"
    )


def _resolve_layer(model: Upstream, layer: int | None, spec: str) -> int:
    n = int(model.num_layers)
    if layer is None:
        return n - 1
    if not -n <= layer < n:
        raise UserError(
            f"upstream {spec} has {n} hidden states (layers 0..{n - 1}); got layer {layer}"
        )
    return layer % n


def _check_unique(cuts: Sequence[Cut], path: Path) -> None:
    ids = [c.id for c in cuts]
    if len(set(ids)) != len(ids):
        raise UserError(f"{path} holds duplicate cut ids; labels are keyed by cut id")


def fit(cfg: KmeansFitConfig) -> dict[str, Any]:
    """Fit centroids; writes ``<out>/centroids.npy`` and ``<out>/kmeans.json`` (returned)."""
    import numpy as np

    from speechssl.data.manifest import load_cuts
    from speechssl.evaluation.features import layer_frames
    from speechssl.kmeans.fit import fit_kmeans, seeding_trials, subsample_frames, thin_frames
    from speechssl.kmeans.folder import save_kmeans
    from speechssl.kmeans.labels import centroids_id, cuts_hash
    from speechssl.models.registry import load_upstream, upstream_id

    if cfg.k < 1 or cfg.max_frames < 1:
        raise UserError(
            f"k and max_frames must be positive (k={cfg.k}, max_frames={cfg.max_frames})"
        )
    cuts = list(load_cuts(cfg.cuts))
    out = start_run(cfg.out, "kmeans fit", cfg, seed=cfg.seed)
    model = load_upstream(cfg.upstream, cfg.device)
    uid = upstream_id(cfg.upstream)
    layer = _resolve_layer(model, cfg.layer, cfg.upstream)
    frame_rate = float(model.frame_rate)

    # Keep each frame with a probability that lands a bit above max_frames in expectation,
    # drawn per cut (seed, cut id) so the sample does not depend on batching; trim after.
    expected = sum(c.duration for c in cuts) * frame_rate
    keep_p = min(1.0, 1.2 * cfg.max_frames / max(expected, 1.0))
    kept: list[np.ndarray] = []
    total = 0
    bar = Progress(len(cuts), "k-means frames", "cut")
    stream = layer_frames(
        model, uid, cuts, layer, cfg.batch_size, cfg.max_batch_seconds, cfg.device, cfg.cache_dir
    )
    for cut, frames in stream:
        total += len(frames)
        kept.append(thin_frames(frames, cut.id, keep_p, cfg.seed).astype(np.float32, copy=False))
        bar.update()
    bar.close()
    x = np.concatenate(kept) if kept else np.zeros((0, int(model.hidden_dim)), np.float32)
    del kept
    x = subsample_frames(x, cfg.max_frames, cfg.seed)
    if len(x) < cfg.k:
        raise UserError(
            f"{cfg.cuts} gives only {len(x)} frames of {cfg.upstream} for k={cfg.k} clusters"
        )
    trials = seeding_trials(cfg.seeding, cfg.k)
    centroids, inertia = fit_kmeans(x, cfg.k, seed=cfg.seed, n_iter=cfg.n_iter, local_trials=trials)
    meta = {
        "k": cfg.k,
        "feature": {
            "upstream": cfg.upstream,
            "upstream_id": uid,
            "layer": layer,
            "dim": x.shape[1],
        },  # fmt: skip
        "label_rate": frame_rate,
        "kmeans_id": centroids_id(centroids),
        "inertia": inertia,
        "inertia_per_frame": inertia / len(x),
        "seed": cfg.seed,
        "n_iter": cfg.n_iter,
        "seeding": cfg.seeding,
        "seeding_trials": trials,
        "fitted_on": {"cuts": str(cfg.cuts), "cuts_hash": cuts_hash(cuts), "num_cuts": len(cuts)},
        "frames_used": len(x),
        "frames_total": total,
    }
    save_kmeans(out, centroids, meta)
    log.info("k-means fitted: k=%d, %d of %d frames, inertia/frame %.4g",
             cfg.k, len(x), total, inertia / len(x))  # fmt: skip
    return meta


def label(cfg: KmeansLabelConfig) -> KmeansLabels:
    """Label every frame of ``cfg.cuts``; resumes an unfinished ``cfg.out``; returns the set."""
    import numpy as np

    from speechssl.data.manifest import load_cuts
    from speechssl.evaluation.features import layer_frames
    from speechssl.kmeans.fit import assign
    from speechssl.kmeans.folder import load_kmeans
    from speechssl.kmeans.labels import KmeansLabels, LabelSetInfo, LabelWriter, cuts_hash
    from speechssl.models.registry import load_upstream, upstream_id

    centroids, meta = load_kmeans(cfg.kmeans)
    cuts = list(load_cuts(cfg.cuts))
    _check_unique(cuts, cfg.cuts)
    feature = dict(meta["feature"])
    spec = feature["upstream"]
    uid = upstream_id(spec)
    if uid != feature.get("upstream_id", uid):
        raise UserError(
            f"the upstream {spec} changed since the k-means in {cfg.kmeans} was fitted "
            f"({feature['upstream_id']} -> {uid}); refit the k-means"
        )
    fitted_on = meta.get("fitted_on", {})
    info = LabelSetInfo(
        k=int(meta["k"]),
        feature=feature,
        label_rate=float(meta["label_rate"]),
        kmeans_id=meta["kmeans_id"],
        num_cuts=len(cuts),
        cuts_hash=cuts_hash(cuts),
        fit_cuts_hash=fitted_on.get("cuts_hash", ""),
        fit_cuts=fitted_on.get("cuts", ""),
        labelled_cuts=str(cfg.cuts),
    )
    start_run(cfg.out, "kmeans label", cfg)
    if info.same_cuts_as_fit is False:
        log.warning("labelling %s with a k-means fitted on other cuts (%s); recorded in "
                    "labels.json", cfg.cuts, info.fit_cuts)  # fmt: skip
    writer = LabelWriter(cfg.out, info, shard_size=cfg.shard_size)
    todo = [c for c in cuts if not writer.done(c.id)]
    if todo:
        model = load_upstream(spec, cfg.device)
        if float(model.frame_rate) != info.label_rate:
            raise UserError(
                f"{spec} now makes {model.frame_rate:g} frames/s but the k-means was fitted at "
                f"{info.label_rate:g}"
            )
        bar = Progress(len(cuts), "k-means labels", "cut", initial=len(cuts) - len(todo))
        stream = layer_frames(model, uid, todo, int(feature["layer"]), cfg.batch_size,
                              cfg.max_batch_seconds, cfg.device, cfg.cache_dir)  # fmt: skip
        try:
            for cut, frames in stream:
                labels, _ = (
                    assign(frames, centroids) if len(frames) else (np.zeros(0, np.int64), None)
                )
                writer.add(cut.id, labels)
                bar.update()
        finally:
            bar.close()
            writer.close()  # keeps finished cuts for a resumed run, or completes the set
    else:
        writer.close()
    return KmeansLabels(cfg.out)
