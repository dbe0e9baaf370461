"""Per-cut jobs (labels, embeddings, features) on many processes and nodes under torchrun.

:func:`run_sharded` is the one loop they share: every rank takes its batches by the rule of
:func:`speechssl.data.shards.deal_batches` (the one-process batches, dealt round-robin),
computes them, and writes its own resumable shards; rank 0 shows the progress of all ranks
(audio hours per hour, ETA), waits for every rank's ``done.json`` and gets a
:class:`~speechssl.data.shards.ShardSet` to merge in whatever order its job needs. Other
ranks get ``None`` and are free to exit. Waiting goes through files, not collectives, so a
rank that has far more left to do (a resumed run) cannot time a barrier out; the only
collective is a check, at the start, that all ranks see the same cuts and settings.

The shards are on the output's filesystem, so with several nodes the output folder must be
one every node sees (NFS, Lustre, ...). Launch, on each of the nodes::

    torchrun --nnodes 2 --node-rank $NODE --nproc-per-node 8 \\
        --rdzv-backend c10d --rdzv-endpoint $HEAD_HOST:29500 -m speechssl.cli kmeans label ...
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch.distributed as dist

from speechssl.data.shards import (
    ShardSet,
    ShardWriter,
    deal_batches,
    ids_hash,
    rank_folder,
    read_progress,
)
from speechssl.errors import UserError
from speechssl.progress import Progress, console
from speechssl.training.distributed import DistInfo, all_gather_objects

__all__ = ["Compute", "rank_device", "run_sharded", "wait_complete", "wait_merged"]

log = logging.getLogger("speechssl")

# compute(batch cuts) -> (position in the batch, [arrays of that cut]) for every cut
Compute = Callable[[list], Iterable[tuple[int, Sequence[np.ndarray]]]]


def rank_device(device: str, info: DistInfo) -> str:
    """``cuda`` / ``cuda:N`` becomes this rank's own GPU under torchrun; anything else stays."""
    if info.enabled and str(device).startswith("cuda"):
        return str(info.device)
    return device


def run_sharded(
    cuts: Sequence,
    compute: Compute,
    folder: str | Path,
    key: str,
    info: DistInfo,
    *,
    desc: str,
    batch_size: int,
    max_batch_seconds: float = math.inf,
    longest_first: bool = True,
    shard_cuts: int = 256,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
) -> ShardSet | None:
    """Run ``compute`` over this rank's batches of ``cuts``; on rank 0, every rank's shards.

    Args:
        cuts: all cuts of the job (the same list, in the same order, on every rank).
        compute: the work of one batch (see :data:`Compute`); it is given exactly the cuts
            of one one-process batch and should batch them with the same limits.
        folder: where the ranks' shard folders go (shared by all nodes).
        key: what is computed; shards made for another key are not reused.
        info: this process's rank and world size.
        desc: the progress label.
        batch_size, max_batch_seconds, longest_first: the batch limits the job uses.
        shard_cuts: cuts per shard (a killed rank loses at most one shard of work).
        poll_s, timeout_s: rank 0 looks for the other ranks' ``done.json`` every ``poll_s``
            seconds, for at most ``timeout_s`` (``None``: until torchrun stops the job).
    """
    cuts = list(cuts)
    world, rank = info.world_size, info.rank
    if len({c.id for c in cuts}) != len(cuts):
        raise UserError(f"{desc}: the cut list holds duplicate cut ids; shards are keyed by id")
    mine = deal_batches(cuts, world, batch_size, max_batch_seconds, longest_first)[rank]
    my_cuts = [cuts[i] for b in mine for i in b]
    writer = ShardWriter(
        rank_folder(folder, rank, world), key, [c.id for c in my_cuts],
        [c.duration for c in my_cuts], shard_cuts=shard_cuts,
    )  # fmt: skip
    # After every rank has opened its folder (so rank 0 cannot merge and remove a finished
    # rank's folder under it), check that all ranks run the same job.
    check = (key, len(cuts), ids_hash([c.id for c in cuts]), world)
    if dist.is_available() and dist.is_initialized():
        seen = all_gather_objects(check, info)
        if any(s != check for s in seen):
            raise UserError(
                f"the ranks of this job do not see the same cuts and settings ({desc}): "
                "give every node the same manifest and arguments"
            )
    todo = [b for b in mine if not all(writer.done(cuts[i].id) for i in b)]
    if len(todo) < len(mine):
        log.info("%s: rank %d resumes, %d of %d batches done", desc, rank, len(mine) - len(todo),
                 len(mine))  # fmt: skip
    total_s = sum(c.duration for c in cuts)
    bar = _AllRanks(folder, world, desc, len(cuts), total_s, enabled=info.is_main)
    try:
        for batch in todo:
            batch_cuts = [cuts[i] for i in batch]
            for j, arrays in compute(batch_cuts):
                writer.add(batch_cuts[j].id, arrays)
            writer.end_batch()
            bar.poll()
    finally:
        writer.close()
    if not info.is_main:
        bar.close()
        return None
    t0 = time.monotonic()
    try:
        while not all(
            (rank_folder(folder, r, world) / "done.json").is_file() for r in range(world)
        ):
            if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                raise UserError(f"{desc}: other ranks did not finish within {timeout_s:g} s")
            time.sleep(poll_s)
            bar.poll()
        bar.poll(force=True)
    finally:
        bar.close()
    log.info("%s: merging the shards of %d ranks", desc, world)
    return ShardSet(folder, world)


class _AllRanks:
    """Rank 0's progress over all ranks: audio seconds done (summed from their
    ``progress.json``), audio hours per hour since this run started, ETA."""

    def __init__(
        self, folder: str | Path, world: int, desc: str, total: int, total_s: float, enabled: bool
    ):
        self.folder, self.world, self.enabled = folder, world, enabled
        self.total, self.total_s = total, total_s
        if not enabled:
            return
        _, seconds, _, _ = read_progress(folder, world)  # what earlier runs did
        self._t0, self._s0 = time.monotonic(), seconds
        self._bar = Progress(
            max(1, round(total_s)), f"{desc} ({world} ranks)", "audio second",
            initial=round(seconds),
        )  # fmt: skip
        self._next = 0.0

    def poll(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + 1.0
        cuts, seconds, _, _ = read_progress(self.folder, self.world)
        elapsed = max(now - self._t0, 1e-9)
        rate = (seconds - self._s0) / elapsed  # audio s per s = audio h per h
        # the line's ETA comes from Progress: audio seconds left at this all-rank rate
        self._bar.set_status(f"{cuts}/{self.total} cuts, {rate:.1f} audio-h/h")
        self._bar.update(round(seconds) - self._bar.n, emit=False)
        if self._bar.plain and (force or self._bar.due()):
            console(self._bar.line())

    def close(self) -> None:
        if self.enabled:
            self._bar.close()


def wait_merged(folder: str | Path, poll_s: float = 0.5) -> None:
    """On a rank other than 0: wait until rank 0 has merged and removed the shard folder
    (by files, so a long merge or fit cannot time a collective out)."""
    while Path(folder).exists():
        time.sleep(poll_s)


def wait_complete(path: str | Path, newer_than: float = 0.0, poll_s: float = 0.5) -> None:
    """On a rank other than 0: wait until rank 0 has written ``path`` (its job's result),
    modified after ``newer_than`` (a ``time.time()``; 0: any)."""
    p = Path(path)
    while not (p.exists() and p.stat().st_mtime > newer_than):
        time.sleep(poll_s)
