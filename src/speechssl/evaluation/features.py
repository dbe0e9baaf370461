"""Run a frozen upstream once over a CutSet and keep every layer's frames on disk.

Probing 12 layers, several seeds and two classifiers must not run the encoder 12 x 3 x 2
times, so features are extracted once per (upstream, cuts) into
``<cache>/<upstream id>-<hash of cut ids and durations>/``::

    meta.json          cut ids, frames per cut, layers, dims, frame rate
    offsets.npy        int64 [N + 1]: cut i's frames are rows offsets[i]:offsets[i+1]
    layer-00.npy ...   float16 [total frames, D], one file per hidden state

and memory-mapped when they are read again. Everything else (pooled statistics, padded
frame batches) is computed from these arrays.

:func:`upstream_frames` is the one loop that runs an upstream over cuts in duration-sorted
batches (used here, and by ``speechssl kmeans`` through :func:`layer_frames`).

Under torchrun (``probe``, ``assess``), every rank extracts its share of the batches and
rank 0 writes the cache (:func:`speechssl.training.sharded.run_sharded`); the arrays are
the ones a single process writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lhotse.cut import Cut

from speechssl.data.shards import ShardSet
from speechssl.data.sorted_batches import run_sorted_batches
from speechssl.progress import Progress
from speechssl.training.distributed import DistInfo, init_distributed
from speechssl.training.sharded import rank_device, run_sharded, wait_merged

__all__ = [
    "LayerFeatures",
    "cache_key",
    "extract_features",
    "layer_frames",
    "upstream_frames",
    "upstream_label",
]

log = logging.getLogger("speechssl")


@dataclass
class LayerFeatures:
    """All hidden states of an upstream for a list of cuts, as flat frame arrays."""

    cut_ids: list[str]
    offsets: np.ndarray  # int64 [N + 1]
    layers: list[np.ndarray]  # float16 [total frames, D] each (possibly memory-mapped)
    frame_rate: float
    path: Path | None = None

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_dim(self) -> int:
        return int(self.layers[0].shape[1])

    def __len__(self) -> int:
        return len(self.cut_ids)

    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.cut_ids)}

    def frames(self, i: int, layer: int) -> np.ndarray:
        """Frames ``[F_i, D]`` (float32) of cut ``i`` at ``layer``."""
        return np.asarray(self.layers[layer][self.offsets[i] : self.offsets[i + 1]], np.float32)

    def pooled(self, std: bool = True) -> np.ndarray:
        """Per-utterance mean (and std) over valid frames of every layer: ``[N, L, D or 2D]``.

        A cut with no frames (shorter than one window) pools to zeros.
        """
        counts = np.diff(self.offsets)
        seg = np.repeat(np.arange(len(counts)), counts)
        out = []
        for arr in self.layers:
            x = torch.from_numpy(np.asarray(arr, dtype=np.float32))
            idx = torch.from_numpy(seg)
            n = torch.from_numpy(np.maximum(counts, 1)).float()[:, None]
            s = torch.zeros(len(counts), x.shape[1]).index_add_(0, idx, x)
            mean = s / n
            parts = [mean]
            if std:
                s2 = torch.zeros(len(counts), x.shape[1]).index_add_(0, idx, x * x)
                parts.append((s2 / n - mean**2).clamp(min=0).sqrt())
            out.append(torch.cat(parts, 1).numpy())
        return np.stack(out, axis=1)


def cache_key(upstream_id: str, cuts: Sequence[Cut]) -> str:
    """``<upstream id>-<hash>``: the same cuts (ids, durations, order) give the same key."""
    h = hashlib.sha1()
    for c in cuts:
        h.update(f"{c.id}\t{c.duration:.4f}\n".encode())
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in upstream_id)[-80:]
    return f"{safe}-{h.hexdigest()[:16]}"


def extract_features(
    upstream: torch.nn.Module | Callable[[], torch.nn.Module],
    cuts: Sequence[Cut],
    cache_dir: str | Path | None,
    upstream_id: str,
    batch_size: int = 16,
    max_batch_seconds: float = 160.0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> LayerFeatures:
    """Features of every layer for ``cuts``, from the cache when present.

    Args:
        upstream: an :class:`~speechssl.models.upstream.Upstream`, or a function that makes
            one (so a cache hit does not even load the model).
        cuts: the cuts, in the order the result keeps.
        cache_dir: where features are kept; ``None`` keeps them in memory only.
        upstream_id: a stable name of the upstream (part of the cache key).
        batch_size, max_batch_seconds: batch limits (count and padded audio seconds).
        device: where the upstream runs.
        progress: show progress (a bar on a terminal, a line every so often elsewhere).
    """
    cuts = list(cuts)
    key = cache_key(upstream_id, cuts)
    folder = Path(cache_dir) / key if cache_dir is not None else None
    if folder is not None and (folder / "meta.json").is_file():
        log.info("features from cache %s", folder)
        return _load(folder)

    dinfo = init_distributed()
    if dinfo.enabled and folder is not None:
        device = rank_device(str(device), dinfo)
        return _extract_sharded(upstream, cuts, folder, upstream_id, batch_size,
                                max_batch_seconds, device, dinfo)  # fmt: skip
    model = upstream if isinstance(upstream, torch.nn.Module) else upstream()
    model = model.to(device).eval()
    counts = np.zeros(len(cuts), dtype=np.int64)
    results: dict[int, list[np.ndarray]] = {}
    frame_rate = float(getattr(model, "frame_rate", 100.0))
    name = upstream_label(upstream_id)
    t0 = time.perf_counter()
    bar = Progress(len(cuts), f"features of {name}", "cut", enabled=progress, leave=False)
    for i, frames in upstream_frames(model, cuts, None, batch_size, max_batch_seconds, device):
        counts[i] = len(frames[0])
        results[i] = [f.astype(np.float16) for f in frames]
        bar.update()
    bar.close()
    log.info("features of %s: %d cuts in %.1f s", name, len(cuts), time.perf_counter() - t0)
    num_layers = len(next(iter(results.values())))
    per_layer = [[results[i][k] for i in range(len(cuts))] for k in range(num_layers)]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    layers = [np.concatenate(p, axis=0) for p in per_layer]
    feats = LayerFeatures([c.id for c in cuts], offsets, layers, frame_rate, folder)
    if folder is not None:
        _save(feats, folder, upstream_id)
        return _load(folder)
    return feats


def upstream_label(upstream_id: str) -> str:
    """A short human name for an upstream id: ``fbank``; a checkpoint's id (resolved weights
    path, size, mtime) -> ``pretrain/step-000150``; an HF folder -> its folder name."""
    first = upstream_id.split("|")[0]
    path, *stamp = first.rsplit(":", 2)
    if len(stamp) != 2 or not all(p.isdigit() for p in stamp):
        return upstream_id[-40:]
    parts = Path(path).parent.parts  # the weights file's folder
    if len(parts) >= 3 and parts[-2] == "checkpoints":  # <run>/checkpoints/step-N/
        return f"{parts[-3]}/{parts[-1]}"
    return parts[-1] if parts else path


def upstream_frames(
    model: torch.nn.Module,
    cuts: Sequence[Cut],
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    max_batch_seconds: float = 160.0,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[int, list[np.ndarray]]]:
    """``(cut index, [frames [F_i, D] float32 per layer])``, one batch in memory at a time.

    The one loop that runs an upstream over cuts (probe features, k-means fit and label):
    longest cuts first (see :func:`~speechssl.data.sorted_batches.run_sorted_batches`),
    each cut's valid frames (by the upstream's mask) of ``layers`` (default: every hidden
    state). Cuts come back in batch order, not input order.
    """

    def run(audio: torch.Tensor, lengths: torch.Tensor):
        out = model(audio, lengths)
        chosen = range(len(out.hidden_states)) if layers is None else layers
        hs = [out.hidden_states[k].float().cpu().numpy() for k in chosen]
        return out.mask.sum(1).cpu().numpy(), hs

    for idx, (valid, hs) in run_sorted_batches(run, cuts, batch_size, max_batch_seconds, device):
        for row, i in enumerate(idx):
            n = int(valid[row])
            yield i, [np.ascontiguousarray(h[row, :n]) for h in hs]


def layer_frames(
    upstream: torch.nn.Module | None,
    upstream_id: str,
    cuts: Sequence[Cut],
    layer: int,
    batch_size: int = 16,
    max_batch_seconds: float = 160.0,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> Iterator[tuple[Cut, np.ndarray]]:
    """``(cut, frames [F, D] float32)`` of one layer for every cut, one batch at a time.

    Reads the feature cache of :func:`extract_features` instead when ``cache_dir`` already
    holds exactly these cuts (then ``upstream`` may be ``None`` and cuts come in input order).
    """
    if (
        cache_dir is not None
        and (Path(cache_dir) / cache_key(upstream_id, cuts) / "meta.json").is_file()
    ):
        feats = extract_features(lambda: None, cuts, cache_dir, upstream_id, progress=False)
        log.info("frames from feature cache %s", feats.path)
        for i, cut in enumerate(cuts):
            yield cut, feats.frames(i, layer)
        return
    if upstream is None:
        raise ValueError(
            f"no upstream given and no cached features of {upstream_id} for these cuts"
        )
    stream = upstream_frames(upstream, cuts, [layer], batch_size, max_batch_seconds, device)
    for i, (frames,) in stream:
        yield cuts[i], frames


def _extract_sharded(
    upstream: torch.nn.Module | Callable[[], torch.nn.Module],
    cuts: list[Cut],
    folder: Path,
    upstream_id: str,
    batch_size: int,
    max_batch_seconds: float,
    device: str,
    dinfo: DistInfo,
) -> LayerFeatures:
    """Under torchrun: each rank extracts its batches into ``<cache>/<key>.parts/``, rank 0
    writes the cache (the same arrays as one process would), and every rank reads it."""
    parts = folder.with_name(folder.name + ".parts")
    model = upstream if isinstance(upstream, torch.nn.Module) else upstream()
    model = model.to(device).eval()
    frame_rate = float(getattr(model, "frame_rate", 100.0))

    def compute(batch):
        for i, frames in upstream_frames(model, batch, None, batch_size, max_batch_seconds, device):
            yield i, [f.astype(np.float16) for f in frames]

    shards = run_sharded(
        cuts, compute, parts, f"features|{folder.name}", dinfo,
        desc=f"features of {upstream_label(upstream_id)}", batch_size=batch_size,
        max_batch_seconds=max_batch_seconds,
    )  # fmt: skip
    if shards is None:
        wait_merged(parts)
        return _load(folder)
    _save_shards(shards, cuts, folder, upstream_id, frame_rate)
    shards.remove()
    return _load(folder)


def _save_shards(
    shards: ShardSet, cuts: Sequence[Cut], folder: Path, upstream_id: str, frame_rate: float
) -> None:
    """The cache of :func:`_save` from every rank's shards, one shard in memory at a time."""
    lengths = shards.lengths()
    counts = np.array([lengths[c.id][0] for c in cuts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    where = {c.id: i for i, c in enumerate(cuts)}
    tmp = _temp_folder(folder)
    layers: list[np.ndarray] = []
    for cut_id, frames in shards:
        if not layers:
            layers = [
                np.lib.format.open_memmap(
                    tmp / f"layer-{k:02d}.npy", "w+", np.float16, (int(offsets[-1]), f.shape[1])
                )
                for k, f in enumerate(frames)
            ]
        i = where[cut_id]
        for arr, f in zip(layers, frames, strict=True):
            arr[offsets[i] : offsets[i + 1]] = f
    for arr in layers:
        arr.flush()
    meta = _meta(upstream_id, [c.id for c in cuts], len(layers), layers[0].shape[1], frame_rate)
    del layers
    _publish(tmp, folder, offsets, meta)


def _save(feats: LayerFeatures, folder: Path, upstream_id: str) -> None:
    """Write into a temporary folder and rename it, so a killed run leaves no half cache."""
    tmp = _temp_folder(folder)
    for k, arr in enumerate(feats.layers):
        np.save(tmp / f"layer-{k:02d}.npy", arr)
    meta = _meta(upstream_id, feats.cut_ids, feats.num_layers, feats.hidden_dim, feats.frame_rate)
    _publish(tmp, folder, feats.offsets, meta)


def _temp_folder(folder: Path) -> Path:
    """An empty folder beside ``folder``, private to this process."""
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _meta(upstream_id: str, cut_ids, num_layers: int, hidden_dim: int, frame_rate: float):
    return {
        "upstream": upstream_id,
        "cut_ids": list(cut_ids),
        "num_layers": num_layers,
        "hidden_dim": int(hidden_dim),
        "frame_rate": frame_rate,
    }


def _publish(tmp: Path, folder: Path, offsets: np.ndarray, meta: dict) -> None:
    """Offsets and meta.json into ``tmp`` (the layers are there), then ``tmp`` becomes
    ``folder``: a reader sees the whole cache or none."""
    np.save(tmp / "offsets.npy", offsets)
    (tmp / "meta.json").write_text(json.dumps(meta))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def _load(folder: Path) -> LayerFeatures:
    meta = json.loads((folder / "meta.json").read_text())
    layers = [
        np.load(folder / f"layer-{k:02d}.npy", mmap_mode="r") for k in range(meta["num_layers"])
    ]
    offsets = np.load(folder / "offsets.npy")
    return LayerFeatures(meta["cut_ids"], offsets, layers, float(meta["frame_rate"]), folder)
