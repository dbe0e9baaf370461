"""Frame-level k-means labels on disk: written in shards, resumable, memory-mapped on read.

A label folder holds::

    labels.json          LabelSetInfo (k, feature, label rate, kmeans id, cut count, hashes)
    shard-00000.npy      int16 (k <= 32767) or int32 labels of many cuts, back to back
    shard-00000.json     that shard's index: [[cut id, offset, length], ...]
    index.json           written last: cut id -> [shard, offset, length]; marks the set complete

A shard's ``.json`` is written after its ``.npy``, both by rename, so a killed job leaves
only whole shards; reopening the folder with :class:`LabelWriter` keeps them and says which
cuts are done. Readers refuse a folder without ``index.json`` rather than guessing.

The checks here exist because of fairseq pitfalls users hit with HuBERT-style targets: a
label rate that does not match the model's frame rate (:func:`align_labels` refuses more than
one frame of slack), a cluster dictionary that silently maps every label to "unknown"
(labels outside ``[0, k)`` or an empty centroid set are errors here), and k-means fitted on
one split but used on another (both cut hashes are kept in :class:`LabelSetInfo`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speechssl.errors import UserError
from speechssl.runs import write_json

__all__ = [
    "KmeansLabels",
    "LabelSetInfo",
    "LabelWriter",
    "align_labels",
    "centroids_id",
    "check_centroids",
    "cuts_hash",
]

log = logging.getLogger("speechssl")

INFO, INDEX = "labels.json", "index.json"
FORMAT_VERSION = 1


@dataclass
class LabelSetInfo:
    """What a label set was made from; stored as ``labels.json``.

    ``fit_cuts_hash`` / ``fit_cuts`` name the cuts the k-means was fitted on; they may differ
    from the labelled cuts (fit on train, label train + dev), which :attr:`same_cuts_as_fit`
    exposes so that a user sees it instead of discovering it in the WER.
    """

    k: int
    feature: dict  # {"upstream": "mfcc", "upstream_id": "...", "layer": 0, "dim": 39}
    label_rate: float  # labels per second
    kmeans_id: str  # content hash of the centroids
    num_cuts: int
    cuts_hash: str  # hash of the labelled cut ids + durations
    fit_cuts_hash: str = ""
    fit_cuts: str = ""
    labelled_cuts: str = ""

    @property
    def same_cuts_as_fit(self) -> bool | None:
        """True if the k-means was fitted on exactly the labelled cuts; None if unknown."""
        if not self.fit_cuts_hash:
            return None
        return self.fit_cuts_hash == self.cuts_hash

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelSetInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def cuts_hash(cuts: Iterable[Any]) -> str:
    """A hash of cut ids and durations (in order): the same cuts give the same hash."""
    h = hashlib.sha1()
    for c in cuts:
        h.update(f"{c.id}\t{c.duration:.4f}\n".encode())
    return h.hexdigest()[:16]


def check_centroids(centroids: np.ndarray, where: str = "k-means") -> np.ndarray:
    """Return ``centroids`` as float32 ``[k, D]``; refuse empty, non-finite or degenerate ones.

    An empty dictionary is what turned every fairseq label into "unknown"; here it stops.
    """
    c = np.asarray(centroids)
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0:
        raise UserError(f"{where}: empty or malformed centroid set (shape {c.shape}); refit it")
    if not np.all(np.isfinite(c)):
        raise UserError(f"{where}: centroids contain NaN or inf; refit it")
    if c.shape[0] > 1 and len(np.unique(c, axis=0)) == 1:
        raise UserError(f"{where}: all {c.shape[0]} centroids are identical (degenerate fit)")
    return np.ascontiguousarray(c, dtype=np.float32)


def centroids_id(centroids: np.ndarray) -> str:
    """Content hash of a centroid matrix (float32 bytes and shape)."""
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    h = hashlib.sha1(f"{c.shape}".encode())
    h.update(c.tobytes())
    return h.hexdigest()[:16]


def _label_dtype(k: int) -> np.dtype:
    return np.dtype(np.int16) if k <= np.iinfo(np.int16).max else np.dtype(np.int32)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not readable ({what}): {exc}") from None


class LabelWriter:
    """Write labels cut by cut into shards of about ``shard_size`` labels.

    Reopening a folder that an earlier (killed) writer left keeps its finished shards;
    :meth:`done` / :attr:`done_ids` tell which cuts to skip. The folder must have been
    started for the same labels (k, feature, kmeans id, cut hash), else UserError.

    Args:
        folder: the label folder (created if missing).
        info: what the labels are; ``info.num_cuts`` cuts make the set complete.
        shard_size: labels per shard (a shard is written once it holds this many).
    """

    def __init__(self, folder: str | Path, info: LabelSetInfo, shard_size: int = 1_000_000):
        if info.k <= 0:
            raise UserError(f"label set {folder}: k must be positive, got {info.k}")
        self.folder = Path(folder)
        self.info = info
        self.shard_size = max(1, int(shard_size))
        self.dtype = _label_dtype(info.k)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create label folder {self.folder}: {exc.strerror}") from None
        self._index: dict[str, tuple[int, int, int]] = {}
        self._num_shards = 0
        self._buf: list[np.ndarray] = []
        self._buf_ids: list[tuple[str, int]] = []
        self._buf_names: set[str] = set()
        self._buf_len = 0
        self._closed = False
        info_path = self.folder / INFO
        if info_path.is_file():
            self._resume(_read_json(info_path, "label set info"))
        else:
            write_json(info_path, {"format": FORMAT_VERSION, **info.to_dict()})

    def _resume(self, stored: dict[str, Any]) -> None:
        old = LabelSetInfo.from_dict(stored)
        for name in ("k", "kmeans_id", "cuts_hash", "num_cuts", "label_rate"):
            if getattr(old, name) != getattr(self.info, name):
                raise UserError(
                    f"{self.folder} already holds labels with {name}={getattr(old, name)!r}, "
                    f"not {getattr(self.info, name)!r}; choose another output folder or delete it"
                )
        n = 0
        while (self.folder / f"shard-{n:05d}.json").is_file():
            n += 1
        for s in range(n):
            for cut_id, offset, length in _read_json(self._shard(s, ".json"), "shard index"):
                self._index[cut_id] = (s, int(offset), int(length))
        self._num_shards = n
        # a shard .npy without its .json is a shard a killed writer never finished
        for p in self.folder.glob("shard-*.npy"):
            if int(p.stem.split("-")[1]) >= n:
                p.unlink()
        if self._index:
            log.info(
                "resuming %s: %d of %d cuts done", self.folder, len(self._index), self.info.num_cuts
            )

    def _shard(self, s: int, ext: str) -> Path:
        return self.folder / f"shard-{s:05d}{ext}"

    @property
    def done_ids(self) -> set[str]:
        """Cut ids already written (finished shards, plus those buffered in this session)."""
        return set(self._index) | self._buf_names

    def done(self, cut_id: str) -> bool:
        """Whether ``cut_id`` is already written (a resumed job skips it)."""
        return cut_id in self._index or cut_id in self._buf_names

    @property
    def complete(self) -> bool:
        return (self.folder / INDEX).is_file()

    def add(self, cut_id: str, labels: np.ndarray) -> None:
        """Queue one cut's labels (integers in ``[0, k)``); writes a shard when one is full."""
        if self._closed:
            raise ValueError("LabelWriter is closed")
        lab = np.asarray(labels)
        if lab.ndim != 1 or (lab.size and not np.issubdtype(lab.dtype, np.integer)):
            raise ValueError(
                f"labels of {cut_id} must be a 1-d integer array, got {lab.dtype} {lab.shape}"
            )
        if lab.size and (lab.min() < 0 or lab.max() >= self.info.k):
            raise UserError(
                f"labels of {cut_id} span [{lab.min()}, {lab.max()}], outside [0, {self.info.k})"
            )
        if cut_id in self._index or cut_id in self._buf_names:
            raise ValueError(f"cut {cut_id} is already labelled in {self.folder}")
        self._buf.append(lab.astype(self.dtype))
        self._buf_ids.append((cut_id, lab.size))
        self._buf_names.add(cut_id)
        self._buf_len += lab.size
        if self._buf_len >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self._buf_ids:
            return
        s = self._num_shards
        data = np.concatenate(self._buf) if self._buf else np.zeros(0, self.dtype)
        tmp = self._shard(s, ".npy.tmp")
        with open(tmp, "wb") as f:
            np.save(f, data.astype(self.dtype, copy=False))
        os.replace(tmp, self._shard(s, ".npy"))
        entries, offset = [], 0
        for cut_id, n in self._buf_ids:
            entries.append([cut_id, offset, n])
            self._index[cut_id] = (s, offset, n)
            offset += n
        write_json(self._shard(s, ".json"), entries)
        self._num_shards += 1
        self._buf, self._buf_ids, self._buf_len = [], [], 0
        self._buf_names = set()

    def close(self) -> bool:
        """Write what is buffered; if all ``num_cuts`` cuts are in, write ``index.json``.

        Returns whether the set is complete. Calling it on an unfinished job (say in a
        ``finally``) is right: it keeps the work done so far for the next run.
        """
        if self._closed:
            return self.complete
        self._flush()
        self._closed = True
        if len(self._index) > self.info.num_cuts:
            raise ValueError(
                f"{len(self._index)} cuts labelled but the label set expects {self.info.num_cuts}"
            )
        if len(self._index) == self.info.num_cuts and not self.complete:
            index = {c: list(v) for c, v in self._index.items()}
            write_json(
                self.folder / INDEX,
                {"format": FORMAT_VERSION, "num_shards": self._num_shards, "cuts": index},
            )
        return self.complete

    def __enter__(self) -> LabelWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class KmeansLabels:
    """A complete label folder, read through memory-mapped shards.

    Raises UserError when the folder is missing, unfinished or corrupt.
    """

    folder: Path
    info: LabelSetInfo

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not (self.folder / INFO).is_file():
            raise UserError(f"no label set in {self.folder} ({INFO} missing)")
        self.info = LabelSetInfo.from_dict(_read_json(self.folder / INFO, "label set info"))
        if not (self.folder / INDEX).is_file():
            n = sum(1 for _ in self.folder.glob("shard-*.json"))
            raise UserError(
                f"label set {self.folder} is incomplete ({n} shard(s) written, {INDEX} missing): "
                "rerun `speechssl kmeans label` with the same arguments to finish it"
            )
        index = _read_json(self.folder / INDEX, "label index")
        try:
            self._index = {c: (int(s), int(o), int(n)) for c, (s, o, n) in index["cuts"].items()}
            num_shards = int(index["num_shards"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{self.folder / INDEX} is malformed: {exc}") from None
        if len(self._index) != self.info.num_cuts:
            raise UserError(
                f"label set {self.folder} indexes {len(self._index)} cuts but "
                f"{INFO} says {self.info.num_cuts}"
            )
        self._shards: list[np.ndarray] = []
        for s in range(num_shards):
            path = self.folder / f"shard-{s:05d}.npy"
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise UserError(f"label shard {path} is missing or corrupt: {exc}") from None
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
                raise UserError(
                    f"label shard {path} holds {arr.dtype} {arr.shape}, not 1-d integers"
                )
            self._shards.append(arr)
        for c, (s, o, n) in self._index.items():
            if not 0 <= s < num_shards or o < 0 or n < 0 or o + n > len(self._shards[s]):
                raise UserError(
                    f"label set {self.folder}: index entry of {c} points outside its shard"
                )

    def __contains__(self, cut_id: object) -> bool:
        return cut_id in self._index

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def keys(self) -> list[str]:
        return list(self._index)

    def __getitem__(self, cut_id: str) -> np.ndarray:
        """Labels of ``cut_id`` as int64 (a copy out of the memory-mapped shard)."""
        try:
            s, o, n = self._index[cut_id]
        except KeyError:
            raise KeyError(f"cut {cut_id!r} is not in label set {self.folder}") from None
        lab = np.asarray(self._shards[s][o : o + n], dtype=np.int64)
        if n and (lab.min() < 0 or lab.max() >= self.info.k):
            raise UserError(
                f"label set {self.folder}: labels of {cut_id} fall outside [0, {self.info.k})"
            )
        return lab

    def check_compatible(self, k: int, feature: dict | None = None) -> None:
        """Refuse a prediction head of another size, or a config naming another feature.

        ``feature`` may give any of ``upstream``, ``layer``, ``upstream_id``; the upstream
        and layer are compared when given, the upstream id only when both sides have one.
        """
        if int(k) != self.info.k:
            raise UserError(
                f"label set {self.folder} has k={self.info.k} but the prediction head has {k} classes"
            )
        if not feature:
            return
        mine = self.info.feature or {}
        differs = any(
            name in feature and name in mine and feature[name] != mine[name]
            for name in ("upstream", "layer")
        )
        a, b = mine.get("upstream_id"), feature.get("upstream_id")
        differs = differs or bool(a and b and a != b)
        if differs:
            raise UserError(
                f"labels were made from {_describe(mine)} but the config says {_describe(feature)}"
                f" (label set {self.folder})"
            )


def _describe(feature: dict) -> str:
    text = f"{feature.get('upstream', '?')} layer {feature.get('layer', '?')}"
    if feature.get("upstream_id") and feature.get("upstream_id") != feature.get("upstream"):
        text += f" [{feature['upstream_id']}]"
    return text


def align_labels(
    labels: np.ndarray,
    num_frames: int,
    label_rate: float,
    frame_rate: float,
    name: str = "label sequence",
) -> tuple[np.ndarray, int]:
    """Labels resampled to the model's frames, trimmed or padded by at most one frame.

    Frame ``j`` (centre ``(j + 0.5) / frame_rate``) takes the label whose centre
    ``(i + 0.5) / label_rate`` is nearest, ties to the earlier one: 100 Hz labels for a
    50 Hz model are labels ``0, 2, 4, ...`` (as fairseq's HuBERT picks them). Windowing makes
    encoders differ by a frame at the ends, which is padded (last label repeated) or trimmed;
    more than that means the label rate is wrong, and is refused.

    Returns:
        (int64 array of length ``num_frames``, number of frames trimmed or padded: 0 or 1).
    """
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-d, got shape {lab.shape}")
    if label_rate <= 0 or frame_rate <= 0:
        raise ValueError(f"rates must be positive (label {label_rate}, frame {frame_rate})")
    num_frames = int(num_frames)
    n = len(lab)
    covered = math.floor(n * frame_rate / label_rate + 0.5)
    adjusted = abs(num_frames - covered)
    if adjusted > 1 or (n == 0 and num_frames > 0):
        raise UserError(
            f"{name} has {n} labels at {label_rate:g} Hz = {n * frame_rate / label_rate:g} frames "
            f"at {frame_rate:g} Hz but the model makes {num_frames} frames: label rate mismatch?"
        )
    if num_frames == 0:
        return np.zeros(0, np.int64), adjusted
    ratio = label_rate / frame_rate
    centre = (np.arange(num_frames) + 0.5) * ratio - 0.5
    idx = np.ceil(centre - 0.5 - 1e-9).astype(np.int64)
    idx = np.clip(idx, 0, n - 1)
    return lab[idx].astype(np.int64), adjusted
