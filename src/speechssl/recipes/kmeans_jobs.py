"""``speechssl kmeans fit`` / ``speechssl kmeans label``: offline targets for masked prediction.

    speechssl kmeans fit --cuts train.jsonl.gz --upstream mfcc --k 100 --out km/mfcc-100
    speechssl kmeans label --kmeans km/mfcc-100 --cuts train.jsonl.gz --out labels/train

``fit`` streams the upstream over the cuts, keeps a seeded sample of at most ``max_frames``
frames (memory stays bounded by that sample) and writes ``centroids.npy`` + ``kmeans.json``.
``label`` streams again and writes every frame's cluster id through
:class:`~speechssl.kmeans.labels.LabelWriter`; a killed labelling job, rerun with the same
arguments, continues where it stopped. Labelling other cuts than the k-means was fitted on is
allowed (fit on train, label train and dev) and recorded in the label set's info.

Under torchrun (one node or several) both jobs split the cuts across ranks by
:func:`speechssl.training.sharded.run_sharded`: ``fit`` gathers the one-process frame sample
on rank 0, ``label`` merges the ranks' shards into the label folder. The results are those
of one process.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
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
    """Fit k-means centroids on frames of one layer of an upstream.

    On many processes or nodes each rank streams its share of the cuts and keeps its part of
    the seeded frame sample; rank 0 fits on the whole sample (the one-process sample, so the
    one-process centroids; its peak is about 2.4 x max-frames x dim x 4 bytes): `torchrun
    --nnodes N --node-rank R --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint
    HEAD:29500 -m speechssl.cli kmeans fit ...` (the output folder on storage every node sees).
    """

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
    """Label every frame of a CutSet with its nearest centroid (resumable).

    On many processes or nodes the ranks split the cuts, each writes resumable shards into
    OUT/parts and rank 0 merges them (labels identical to a one-process run): `torchrun
    --nnodes N --node-rank R --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint
    HEAD:29500 -m speechssl.cli kmeans label ...` (OUT on storage every node sees; rerun the
    same command to resume).
    """

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


def _cached(cache_dir: Path | None, uid: str, cuts: Sequence[Cut]) -> bool:
    """Whether the probe feature cache already holds these cuts (then no upstream runs)."""
    from speechssl.evaluation.features import cache_key

    return (
        cache_dir is not None and (Path(cache_dir) / cache_key(uid, cuts) / "meta.json").is_file()
    )


def fit(cfg: KmeansFitConfig) -> dict[str, Any]:
    """Fit centroids; writes ``<out>/centroids.npy`` and ``<out>/kmeans.json`` (returned)."""
    import numpy as np

    from speechssl.data.manifest import load_cuts
    from speechssl.data.sorted_batches import duration_sorted_batches
    from speechssl.evaluation.features import layer_frames, upstream_frames
    from speechssl.kmeans.fit import fit_kmeans, seeding_trials, subsample_frames, thin_frames
    from speechssl.kmeans.folder import save_kmeans
    from speechssl.kmeans.labels import centroids_id, cuts_hash
    from speechssl.models.registry import load_upstream, upstream_id
    from speechssl.training.distributed import init_distributed
    from speechssl.training.sharded import rank_device, run_sharded, wait_complete, wait_merged

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
    started = time.time()
    dinfo = init_distributed()
    parts = out / "parts"
    if dinfo.enabled and not _cached(cfg.cache_dir, uid, cuts):
        # Each rank thins the frames of its batches; rank 0 puts the kept frames in the order
        # one process streams them, so the sample (and the fit) is the one-process one.
        device = rank_device(cfg.device, dinfo)
        model = model.to(device)

        def compute(batch):
            stream = upstream_frames(model, batch, [layer], cfg.batch_size,
                                     cfg.max_batch_seconds, device)  # fmt: skip
            for i, (frames,) in stream:
                x = thin_frames(frames, batch[i].id, keep_p, cfg.seed).astype(np.float32)
                yield i, [x, np.array([len(frames)], np.int64)]

        shards = run_sharded(
            cuts, compute, parts, f"kmeans-fit|{uid}|{layer}|{keep_p!r}|{cfg.seed}", dinfo,
            desc="k-means frames", batch_size=cfg.batch_size,
            max_batch_seconds=cfg.max_batch_seconds,
        )  # fmt: skip
        if shards is None:
            wait_merged(parts)
            return json.loads((out / "kmeans.json").read_text())
        got = {cut_id: (x, int(n[0])) for cut_id, (x, n) in shards}
        order = duration_sorted_batches(cuts, cfg.batch_size, cfg.max_batch_seconds)
        kept = [got[cuts[i].id][0] for b in order for i in b]
        total = sum(n for _, n in got.values())
        del got
    elif dinfo.enabled and not dinfo.is_main:  # frames from the feature cache: rank 0 alone
        wait_complete(out / "kmeans.json", newer_than=started)
        return json.loads((out / "kmeans.json").read_text())
    else:
        bar = Progress(len(cuts), "k-means frames", "cut")
        stream = layer_frames(model, uid, cuts, layer, cfg.batch_size, cfg.max_batch_seconds,
                              cfg.device, cfg.cache_dir)  # fmt: skip
        for cut, frames in stream:
            total += len(frames)
            x = thin_frames(frames, cut.id, keep_p, cfg.seed)
            kept.append(x.astype(np.float32, copy=False))
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
    if dinfo.enabled:
        shutil.rmtree(parts, ignore_errors=True)  # the other ranks wait for this
    log.info("k-means fitted: k=%d, %d of %d frames, inertia/frame %.4g",
             cfg.k, len(x), total, inertia / len(x))  # fmt: skip
    return meta


def label(cfg: KmeansLabelConfig) -> KmeansLabels:
    """Label every frame of ``cfg.cuts``; resumes an unfinished ``cfg.out``; returns the set."""
    import numpy as np

    from speechssl.data.manifest import load_cuts
    from speechssl.evaluation.features import layer_frames, upstream_frames
    from speechssl.kmeans.fit import assign
    from speechssl.kmeans.folder import load_kmeans
    from speechssl.kmeans.labels import KmeansLabels, LabelSetInfo, LabelWriter, cuts_hash
    from speechssl.models.registry import load_upstream, upstream_id
    from speechssl.training.distributed import init_distributed
    from speechssl.training.sharded import rank_device, run_sharded, wait_complete, wait_merged

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
    dinfo = init_distributed()
    layer = int(feature["layer"])
    if (
        dinfo.enabled
        and not _cached(cfg.cache_dir, uid, cuts)
        and not (cfg.out / "index.json").is_file()
    ):
        parts = cfg.out / "parts"
        device = rank_device(cfg.device, dinfo)
        model = load_upstream(spec, device)
        if float(model.frame_rate) != info.label_rate:
            raise UserError(
                f"{spec} now makes {model.frame_rate:g} frames/s but the k-means was fitted at "
                f"{info.label_rate:g}"
            )

        def compute(batch):
            stream = upstream_frames(model, batch, [layer], cfg.batch_size,
                                     cfg.max_batch_seconds, device)  # fmt: skip
            for i, (frames,) in stream:
                yield i, [assign(frames, centroids)[0] if len(frames) else np.zeros(0, np.int64)]

        # rank 0 opens the label folder first: one made for other labels is refused now
        writer = LabelWriter(cfg.out, info, shard_size=cfg.shard_size) if dinfo.is_main else None
        shards = run_sharded(
            cuts, compute, parts, f"kmeans-label|{info.kmeans_id}|{uid}|{layer}", dinfo,
            desc="k-means labels", batch_size=cfg.batch_size,
            max_batch_seconds=cfg.max_batch_seconds,
        )  # fmt: skip
        if shards is None or writer is None:
            wait_merged(parts)
            return KmeansLabels(cfg.out)
        for cut_id, (lab,) in shards:  # rank by rank: the order of a label folder is free
            if not writer.done(cut_id):
                writer.add(cut_id, lab)
        writer.close()
        shards.remove()
        return KmeansLabels(cfg.out)
    if dinfo.enabled and not dinfo.is_main:  # labels from the feature cache: rank 0 alone
        wait_complete(cfg.out / "index.json")
        return KmeansLabels(cfg.out)
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
        stream = layer_frames(model, uid, todo, layer, cfg.batch_size,
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
