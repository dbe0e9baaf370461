"""Split per-cut work across ranks, keep each rank's results in resumable shards, read them back.

The split rule (:func:`deal_batches`): form the batches a one-process run would form
(:func:`~speechssl.data.sorted_batches.duration_sorted_batches` over all cuts, with the same
count / padded-seconds limits and direction), then deal them round-robin: batch ``b`` goes to
rank ``b % world``. Every cut lands on exactly one rank, the rule depends only on the cut list
and the batch limits, and every rank runs *the same batches* as the one-process run (the same
cuts padded together, in the same row order), so per-cut outputs are bit-identical to it
whatever the batch size, not merely close. Ranks differ by at most one batch of work.

Each rank writes into its own folder ``rank-RRRRR-of-WWWWW/`` (no two ranks touch one file)::

    job.json           what is computed (a key) and the rank's cut count; another key: start over
    shard-00000.npz    slots s0, s1, ...: each cut's arrays, stacked along axis 0
    shard-00000.json   written after its .npz (both by rename): [[cut id, [rows per slot]], ...]
    progress.json      cuts and audio seconds done (rank 0 sums them for the progress line)
    done.json          written last: the rank has all its cuts

Shards hold whole batches, so a killed rank, rerun, skips its finished batches and forms the
rest exactly as before. :class:`ShardSet` reads every rank's shards (one shard in memory at a
time) for the merge.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechssl.data.sorted_batches import duration_sorted_batches
from speechssl.errors import UserError
from speechssl.runs import write_json

__all__ = ["ShardSet", "ShardWriter", "deal_batches", "ids_hash", "rank_folder"]

JOB, PROGRESS, DONE = "job.json", "progress.json", "done.json"


def deal_batches(
    cuts: Sequence[Any],
    world: int,
    max_cuts: int,
    max_seconds: float = math.inf,
    longest_first: bool = True,
) -> list[list[list[int]]]:
    """Per rank, the batches (lists of indices into ``cuts``) it runs, in one-process order.

    ``cuts`` need a ``duration``. Batch ``b`` of the one-process run goes to rank
    ``b % world``; ``[r][j]`` is rank ``r``'s ``j``-th batch.
    """
    if world < 1:
        raise ValueError(f"world size must be >= 1, got {world}")
    batches = duration_sorted_batches(cuts, max_cuts, max_seconds, longest_first)
    return [batches[r::world] for r in range(world)]


def ids_hash(ids: Sequence[str]) -> str:
    h = hashlib.sha1()
    for i in ids:
        h.update(f"{i}\n".encode())
    return h.hexdigest()[:16]


def rank_folder(folder: str | Path, rank: int, world: int) -> Path:
    return Path(folder) / f"rank-{rank:05d}-of-{world:05d}"


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class ShardWriter:
    """One rank's results, cut by cut, in shards of whole batches.

    Args:
        folder: the rank's own folder (:func:`rank_folder`).
        key: what is computed (job, model, settings, cut list); a folder holding another key
            is emptied, since its shards are of something else.
        cut_ids, durations: the rank's cuts (its whole share, done or not).
        shard_cuts: a shard is written at the first batch end with this many cuts buffered.
    """

    def __init__(
        self,
        folder: str | Path,
        key: str,
        cut_ids: Sequence[str],
        durations: Sequence[float],
        shard_cuts: int = 256,
    ):
        self.folder = Path(folder)
        self.key = key
        self.shard_cuts = max(1, int(shard_cuts))
        self._total = len(cut_ids)
        self._total_s = float(sum(durations))
        self._dur = dict(zip(cut_ids, durations, strict=True))
        self._done: set[str] = set()
        self._done_s = 0.0
        self._buf: list[tuple[str, list[np.ndarray]]] = []
        self._num_shards = 0
        self._last_progress = 0.0
        job = {"key": key, "num_cuts": self._total, "ids": ids_hash(cut_ids)}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create shard folder {self.folder}: {exc.strerror}") from None
        old = self.folder / JOB
        if old.is_file() and _read_json(old) != job:
            shutil.rmtree(self.folder)  # shards of another job or cut list: not ours to reuse
            self.folder.mkdir(parents=True)
        if not old.is_file():
            write_json(old, job)
        # A finished rank writes nothing more: rank 0 may be merging and removing its folder.
        self._readonly = self.complete
        self._resume()
        self._write_progress(force=True)

    def _shard(self, s: int, ext: str) -> Path:
        return self.folder / f"shard-{s:05d}{ext}"

    def _resume(self) -> None:
        n = 0
        while self._shard(n, ".json").is_file():
            for cut_id, _ in _read_json(self._shard(n, ".json")):
                self._done.add(cut_id)
                self._done_s += self._dur.get(cut_id, 0.0)
            n += 1
        self._num_shards = n
        for p in self.folder.glob("shard-*.npz"):  # an .npz without its .json is unfinished
            if int(p.name[6:11]) >= n:
                p.unlink()

    @property
    def complete(self) -> bool:
        return (self.folder / DONE).is_file()

    def done(self, cut_id: str) -> bool:
        """Whether ``cut_id`` is in a finished shard (a resumed rank skips it)."""
        return cut_id in self._done

    @property
    def num_done(self) -> int:
        return len(self._done)

    def add(self, cut_id: str, arrays: Sequence[np.ndarray]) -> None:
        """Queue one cut's arrays (each with a leading axis; a vector goes in as ``v[None]``)."""
        if self._readonly:
            raise ValueError(f"{self.folder} is complete; nothing is added to it")
        self._buf.append((cut_id, [np.asarray(a) for a in arrays]))

    def end_batch(self) -> None:
        """A batch is whole: write a shard if enough cuts are buffered."""
        if len(self._buf) >= self.shard_cuts:
            self._flush()
        self._write_progress()

    def _flush(self) -> None:
        if not self._buf:
            return
        s = self._num_shards
        slots = len(self._buf[0][1])
        data = {
            f"s{k}": np.concatenate([arrays[k] for _, arrays in self._buf], axis=0)
            for k in range(slots)
        }
        tmp = self._shard(s, ".npz.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **data)
        os.replace(tmp, self._shard(s, ".npz"))
        entries = [[c, [len(a) for a in arrays]] for c, arrays in self._buf]
        write_json(self._shard(s, ".json"), entries)
        for c, _ in self._buf:
            self._done.add(c)
            self._done_s += self._dur.get(c, 0.0)
        self._num_shards += 1
        self._buf = []

    def _write_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._readonly or (not force and now - self._last_progress < 2.0):
            return
        self._last_progress = now
        done = len(self._done) + len(self._buf)
        done_s = self._done_s + sum(self._dur.get(c, 0.0) for c, _ in self._buf)
        write_json(
            self.folder / PROGRESS,
            {"cuts": done, "seconds": done_s, "total_cuts": self._total,
             "total_seconds": self._total_s},
        )  # fmt: skip

    def close(self) -> bool:
        """Write what is buffered; mark the rank done when all its cuts are in. Returns that.

        Right in a ``finally``: a killed rank keeps its whole batches for the next run.
        ``done.json`` is the last file a rank writes.
        """
        if self._readonly:
            return True
        self._flush()
        self._write_progress(force=True)
        if len(self._done) >= self._total and not self.complete:
            write_json(self.folder / DONE, {"num_shards": self._num_shards})
        return self.complete


def read_progress(folder: str | Path, world: int) -> tuple[int, float, int, float]:
    """``(cuts, seconds, total cuts, total seconds)`` done over the ranks that reported."""
    cuts = seconds = total = total_s = 0
    for r in range(world):
        try:
            p = _read_json(rank_folder(folder, r, world) / PROGRESS)
        except (OSError, ValueError):
            continue
        cuts += p["cuts"]
        seconds += p["seconds"]
        total += p["total_cuts"]
        total_s += p["total_seconds"]
    return cuts, seconds, total, total_s


class ShardSet:
    """Every rank's finished shards under ``folder`` for a job run on ``world`` ranks."""

    def __init__(self, folder: str | Path, world: int):
        self.folder = Path(folder)
        self.world = world
        self._shards: list[tuple[Path, list[tuple[str, list[int]]]]] = []
        for r in range(world):
            rf = rank_folder(folder, r, world)
            if not (rf / DONE).is_file():
                raise UserError(
                    f"rank {r}'s shards are not finished or not visible in {rf}: the output "
                    "folder must be on storage every node sees"
                )
            n = int(_read_json(rf / DONE)["num_shards"])
            for s in range(n):
                entries = _read_json(rf / f"shard-{s:05d}.json")
                self._shards.append((rf / f"shard-{s:05d}.npz", entries))

    def lengths(self) -> dict[str, list[int]]:
        """Cut id -> rows of each slot, from the indexes only (no array is read)."""
        return {c: n for _, entries in self._shards for c, n in entries}

    def __len__(self) -> int:
        return sum(len(e) for _, e in self._shards)

    def __iter__(self) -> Iterator[tuple[str, list[np.ndarray]]]:
        """``(cut id, [array per slot])``, shard by shard (one shard in memory at a time)."""
        for path, entries in self._shards:
            with np.load(path) as z:
                data = [z[f"s{k}"] for k in range(len(entries[0][1]))] if entries else []
            offsets = [0] * len(data)
            for cut_id, rows in entries:
                out = []
                for k, n in enumerate(rows):
                    out.append(data[k][offsets[k] : offsets[k] + n])
                    offsets[k] += n
                yield cut_id, out

    def remove(self) -> None:
        """Delete the shards (after a merge that is safely on disk)."""
        shutil.rmtree(self.folder, ignore_errors=True)
