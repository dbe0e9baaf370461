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

import json
import logging
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse.cut import Cut
from tqdm import tqdm

from speechssl.config import opt
from speechssl.data.batching import collate_cuts
from speechssl.data.manifest import load_cuts
from speechssl.errors import UserError
from speechssl.evaluation.features import cache_key, extract_features
from speechssl.kmeans.fit import assign, fit_kmeans, subsample_frames
from speechssl.kmeans.labels import (
    KmeansLabels,
    LabelSetInfo,
    LabelWriter,
    centroids_id,
    check_centroids,
    cuts_hash,
)
from speechssl.models.registry import load_upstream, upstream_id
from speechssl.models.upstream import Upstream
from speechssl.runs import start_run

__all__ = ["KmeansFitConfig", "KmeansLabelConfig", "fit", "label", "load_kmeans"]

log = logging.getLogger("speechssl")

CENTROIDS, META = "centroids.npy", "kmeans.json"


@dataclass
class KmeansFitConfig:
    """Fit k-means centroids on frames of one layer of an upstream."""

    cuts: Path = opt(help="CutSet whose frames are clustered (usually the training split)")
    out: Path = opt(help="folder for centroids.npy, kmeans.json and the run files")
    upstream: str = opt("mfcc", "mfcc | fbank | tiny | small | base | checkpoint | HF folder")
    layer: int | None = opt(None, "hidden state to cluster (default: last; 0 for mfcc/fbank)")
    k: int = opt(100, "number of clusters")
    max_frames: int = opt(200_000, "fit on a seeded sample of at most this many frames")
    seed: int = opt(0, "seed of the frame sample, k-means++ and faiss")
    n_iter: int = opt(50, "Lloyd iterations after k-means++ seeding")
    batch_size: int = opt(16, "cuts per upstream batch")
    max_batch_seconds: float = opt(160.0, "padded audio seconds per upstream batch")
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
    batch_size: int = opt(16, "cuts per upstream batch")
    max_batch_seconds: float = opt(160.0, "padded audio seconds per upstream batch")
    device: str = opt("cpu", "device the upstream runs on")
    shard_size: int = opt(1_000_000, "labels per shard file")
    cache_dir: Path | None = opt(
        None, "feature cache of `speechssl probe`; used when it already holds these cuts"
    )


def _batches(cuts: Sequence[Cut], batch_size: int, max_seconds: float) -> list[list[int]]:
    """Indices by decreasing duration, cut into batches bounded in count and padded seconds."""
    order = sorted(range(len(cuts)), key=lambda i: cuts[i].duration, reverse=True)
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) >= batch_size or cuts[cur[0]].duration * (len(cur) + 1) > max_seconds):
            out.append(cur)
            cur = []
        cur.append(i)
    return out + [cur] if cur else out


def _stream_layer(
    model: Upstream | None,
    uid: str,
    cuts: Sequence[Cut],
    layer: int,
    batch_size: int,
    max_seconds: float,
    device: str,
    cache_dir: Path | None,
) -> Iterator[tuple[Cut, np.ndarray]]:
    """``(cut, frames [F, D] float32)`` for every cut, one batch in memory at a time.

    Reads the probe feature cache instead when it already holds exactly these cuts.
    """
    if cache_dir is not None and (Path(cache_dir) / cache_key(uid, cuts) / "meta.json").is_file():
        feats = extract_features(lambda: None, cuts, cache_dir, uid, progress=False)
        log.info("frames from feature cache %s", feats.path)
        for i, cut in enumerate(cuts):
            yield cut, feats.frames(i, layer)
        return
    assert model is not None
    with torch.inference_mode():
        for idx in _batches(cuts, batch_size, max_seconds):
            batch = collate_cuts([cuts[i] for i in idx], label_fields=[])
            out = model(batch.audio.to(device), batch.lengths.to(device))
            valid = out.mask.sum(1).cpu().numpy()
            hs = out.hidden_states[layer].float().cpu().numpy()
            for row, i in enumerate(idx):
                yield cuts[i], np.ascontiguousarray(hs[row, : int(valid[row])])


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
    bar = tqdm(total=len(cuts), desc="k-means frames", unit="cut", disable=not sys.stderr.isatty())
    stream = _stream_layer(
        model, uid, cuts, layer, cfg.batch_size, cfg.max_batch_seconds, cfg.device, cfg.cache_dir
    )
    for cut, frames in stream:
        total += len(frames)
        if keep_p < 1.0:
            rng = np.random.default_rng([cfg.seed, zlib.crc32(cut.id.encode())])
            frames = frames[rng.random(len(frames)) < keep_p]
        kept.append(frames.astype(np.float32, copy=False))
        bar.update()
    bar.close()
    x = np.concatenate(kept) if kept else np.zeros((0, int(model.hidden_dim)), np.float32)
    del kept
    x = subsample_frames(x, cfg.max_frames, cfg.seed)
    if len(x) < cfg.k:
        raise UserError(
            f"{cfg.cuts} gives only {len(x)} frames of {cfg.upstream} for k={cfg.k} clusters"
        )
    centroids, inertia = fit_kmeans(x, cfg.k, seed=cfg.seed, n_iter=cfg.n_iter)
    meta = {
        "k": cfg.k,
        "feature": {
            "upstream": cfg.upstream,
            "upstream_id": uid,
            "layer": layer,
            "dim": x.shape[1],
        },
        "label_rate": frame_rate,
        "kmeans_id": centroids_id(centroids),
        "inertia": inertia,
        "inertia_per_frame": inertia / len(x),
        "seed": cfg.seed,
        "n_iter": cfg.n_iter,
        "fitted_on": {"cuts": str(cfg.cuts), "cuts_hash": cuts_hash(cuts), "num_cuts": len(cuts)},
        "frames_used": len(x),
        "frames_total": total,
    }
    np.save(out / CENTROIDS, centroids)
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    log.info(
        "k-means fitted: k=%d, %d of %d frames, inertia/frame %.4g",
        cfg.k,
        len(x),
        total,
        inertia / len(x),
    )
    return meta


def load_kmeans(folder: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """``(centroids, kmeans.json)`` of a fit folder; UserError if missing, empty or altered."""
    folder = Path(folder)
    if not (folder / META).is_file() or not (folder / CENTROIDS).is_file():
        raise UserError(f"{folder} is not a k-means folder ({CENTROIDS} + {META} expected)")
    try:
        meta = json.loads((folder / META).read_text())
        centroids = np.load(folder / CENTROIDS)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read k-means folder {folder}: {exc}") from None
    centroids = check_centroids(centroids, where=str(folder))
    if meta.get("k") != len(centroids):
        raise UserError(
            f"{folder}: {META} says k={meta.get('k')} but there are {len(centroids)} centroids"
        )
    if meta.get("kmeans_id") != centroids_id(centroids):
        raise UserError(f"{folder}: {CENTROIDS} does not match the kmeans_id in {META} (altered?)")
    return centroids, meta


def label(cfg: KmeansLabelConfig) -> KmeansLabels:
    """Label every frame of ``cfg.cuts``; resumes an unfinished ``cfg.out``; returns the set."""
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
        log.warning(
            "labelling %s with a k-means fitted on other cuts (%s); recorded in labels.json",
            cfg.cuts,
            info.fit_cuts,
        )
    writer = LabelWriter(cfg.out, info, shard_size=cfg.shard_size)
    todo = [c for c in cuts if not writer.done(c.id)]
    if todo:
        model = load_upstream(spec, cfg.device)
        if float(model.frame_rate) != info.label_rate:
            raise UserError(
                f"{spec} now makes {model.frame_rate:g} frames/s but the k-means was fitted at "
                f"{info.label_rate:g}"
            )
        bar = tqdm(
            total=len(cuts),
            initial=len(cuts) - len(todo),
            desc="k-means labels",
            unit="cut",
            disable=not sys.stderr.isatty(),
        )
        stream = _stream_layer(
            model,
            uid,
            todo,
            int(feature["layer"]),
            cfg.batch_size,
            cfg.max_batch_seconds,
            cfg.device,
            cfg.cache_dir,
        )
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
