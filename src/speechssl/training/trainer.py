"""The one training loop that every method uses; objectives plug in, the loop knows none of them.

A recipe builds one ``nn.Module`` that holds everything that trains (encoder *and* the
objective's heads/projectors, so that DDP, the optimizer and checkpoints see them all), an
objective, the data, and calls ``Trainer(...).fit()``.

An objective is a :class:`speechssl.objectives.base.Objective`: ``objective(model, batch, step)
-> (loss, metrics)`` plus optional hooks declared there (``cancel_gradients``, ``after_step``,
``state_dict``/``load_state_dict``). ``step`` is a :class:`~speechssl.objectives.base.Step`
with this iteration's index, learning rate, weight decay, EMA momentum and the value of every
schedule the recipe passed as ``schedules`` (arrays indexed by step: DINO's teacher
temperature). A plain callable ``fn(model, batch, step)`` is accepted too (no hooks).

One iteration, in this order (the DINO order): schedules -> forward -> finite-loss check ->
backward (``no_sync`` on all but the last micro-batch) -> clip -> cancel gradients ->
optimizer step -> EMA hook -> metrics.

Distributed: started by ``torchrun`` (see :mod:`speechssl.training.distributed` for the
multi-node command); one process per GPU, NCCL on GPU, gloo on CPU. Checkpoints are written
by rank 0 and read by every rank, so multi-node runs need a shared run folder.

Data and uneven shards: the loop is driven by the step count, never by the end of an epoch.
Each rank pulls ``accum_steps`` micro-batches per step from its own sampler and starts a new
epoch (``sampler.set_epoch``) whenever its sampler runs dry, so every rank makes exactly the
same number of optimizer steps and DDP's collectives cannot hang, whatever the shard sizes.
With a lhotse sampler over the same CutSet on every rank (``rank``/``world_size`` set), lhotse
already hands every rank the same number of batches per epoch; with per-rank shards (a sampler
built with ``world_size=1`` on each rank's own cuts) a smaller shard simply wraps around
sooner, so its cuts are seen more often.

Resume: a checkpoint holds, per rank, the epoch and how many batches of it were consumed, and
the python/numpy/torch RNG states. Resuming calls ``set_epoch`` and skips that many batches
of the sampler's (deterministic, seed + epoch) order -- only cut metadata, no audio is read
(over a Shar directory the skipped cuts' tars are streamed, their audio not decoded).
This is exact even when DataLoader workers prefetch ahead (a sampler's own ``state_dict``
would count the prefetched batches as consumed). The data pipeline's randomness needs no state:
each batch reaches the dataset as a :class:`speechssl.data.batching.SeededCuts` whose seed
mixes (seed, rank, epoch, index of the batch in its epoch), and the library's datasets draw
their crops and augmentation from it (:class:`speechssl.data.batching.BatchRNG`), so a batch
draws the same with 0 or N workers, before and after a resume. Weights after a resume are
bit-identical to an uninterrupted run when ``deterministic`` is set for GPU kernels.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from speechssl.data.batching import SeededCuts, mix_seed
from speechssl.errors import UserError
from speechssl.objectives.base import Objective, Step
from speechssl.training.checkpoint import (
    capture_rng,
    find_latest,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from speechssl.training.distributed import (
    DistInfo,
    all_gather_objects,
    init_distributed,
    reduce_sum,
)
from speechssl.training.metrics_log import MetricsLog
from speechssl.training.schedules import cosine_schedule, ema_schedule
from speechssl.training.train_config import TrainConfig

__all__ = ["NonFiniteLossError", "Trainer", "seed_everything"]

log = logging.getLogger("speechssl")
SAMPLE_RATE = 16000


class _Callable(Objective):
    """A plain ``fn(model, batch, step)`` as an objective without hooks."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, model: torch.nn.Module, batch: Any, step: Step):
        return self.fn(model, batch, step)


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; nothing was saved for that step."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (call before building the model: every rank the same)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def too_little_data(sampler: Any) -> str:
    """Why a sampler yields no batch, in terms of the data: what one batch needs (cuts, audio)
    against what the training set has (incomplete batches are dropped)."""
    constraint = getattr(sampler, "time_constraint", sampler)
    max_cuts = getattr(sampler, "max_cuts", None) or getattr(constraint, "max_cuts", None)
    max_s = getattr(sampler, "max_duration", None) or getattr(constraint, "max_duration", None)
    world = getattr(sampler, "world_size", None) or 1
    needs = [f"{max_cuts} cuts"] if max_cuts else []
    needs += [f"{max_s:g} s of audio (--train.batch-duration)"] if max_s else []
    need = " or ".join(needs) if needs else "more cuts than there are"
    ranks = f" on each of {world} ranks" if world > 1 else ""
    sources = getattr(sampler, "cuts", None) or [getattr(sampler, "data_source", None) or []]
    try:
        cuts = [c for source in sources for c in source]
        have = f"{len(cuts)} cuts, {sum(c.duration for c in cuts):.1f} s of audio"
    except TypeError:
        have = "fewer"
    return f"too little training data for one batch: a batch needs {need}{ranks}; there are {have}"


class _SkipFirst:
    """The sampler, minus the batches already consumed before a resume (on its next pass only),
    each batch as :class:`SeededCuts` seeded from (seed, rank, ``epoch``, index in the epoch)."""

    def __init__(self, sampler: Any, seed: int, rank: int) -> None:
        self.sampler, self.seed, self.rank = sampler, seed, rank
        self.skip = 0
        self.epoch = 0  # set by the trainer before each pass

    def __iter__(self):
        # Only next(), never iter() again: a lhotse sampler is its own iterator, and iter()
        # restarts its epoch.
        it = iter(self.sampler)
        skip, self.skip, epoch = self.skip, 0, self.epoch
        index = 0
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            if index >= skip:  # skipped batches keep their index: the seeds do not shift
                yield SeededCuts(batch, mix_seed(self.seed, self.rank, epoch, index))
            index += 1


class Trainer:
    """Train ``model`` with ``objective`` on the batches ``dataset`` makes from the sampler's cuts.

    Args:
        model: one module holding every trainable part (encoder + the objective's heads).
        objective: an :class:`~speechssl.objectives.base.Objective` (or a plain callable
            ``fn(model, batch, step)``); see the module docstring.
        train_cuts_or_sampler: a CutSet (a ``DynamicBucketingSampler`` is built with this
            process's rank and world size, ``batch_duration`` seconds per batch) or a ready
            lhotse sampler (its ``rank``/``world_size`` must match the process group, or be
            ``0``/``1`` for a per-rank shard).
        dataset: map-style dataset indexed by the sampler's CutSets (e.g. ``CutDataset``).
        config: a :class:`TrainConfig`.
        run_dir: the run folder (``metrics.jsonl``, ``checkpoints/``); the recipe records the
            config in it with :func:`speechssl.runs.start_run`.
        model_spec: JSON-able description of the model (e.g. ``{"kind": ..., "config": ...}``)
            written to each checkpoint's ``model.json``; resuming refuses another spec.
        monitor: optional ``monitor(model, step) -> dict`` with an ``every`` attribute, run on
            rank 0 before the first step and every ``every`` steps (e.g. label-free indicators,
            :mod:`speechssl.indicators.live`); its dict is logged with the step, and its
            ``monitor_seconds`` are summed into ``monitor_share`` of the training time.
        schedules: name -> array of ``max_steps`` values the recipe precomputed (e.g. DINO's
            teacher temperature); the objective reads ``step[name]``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        objective: Objective,
        train_cuts_or_sampler: Any,
        dataset: torch.utils.data.Dataset,
        config: TrainConfig,
        run_dir: str | Path,
        model_spec: dict[str, Any] | None = None,
        monitor: Any = None,
        schedules: Mapping[str, Any] | None = None,
    ) -> None:
        c = config
        self.monitor = monitor if monitor is not None and getattr(monitor, "every", 0) else None
        for name in ("max_steps", "accum_steps", "log_every", "ckpt_every"):
            if getattr(c, name) < 1:
                raise UserError(
                    f"train.{name.replace('_', '-')} = {getattr(c, name)}: must be >= 1"
                )
        self.schedules = {k: np.asarray(v, dtype=np.float64) for k, v in (schedules or {}).items()}
        for name, values in self.schedules.items():
            if values.shape != (c.max_steps,):
                raise ValueError(
                    f"schedule {name!r} has shape {values.shape}, need ({c.max_steps},): one "
                    "value per step"
                )
        self.config = c
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.model_spec = dict(model_spec or {})
        self.dist: DistInfo = init_distributed()
        if c.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        seed_everything(c.seed + self.dist.rank)  # dropout/masking differ per rank on purpose
        device = self.dist.device
        self.model = model.to(device)
        self.objective = objective if isinstance(objective, Objective) else _Callable(objective)
        if isinstance(objective, torch.nn.Module):
            objective.to(device)
        self.ddp = (
            DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
            if self.dist.enabled
            else model
        )
        self.sampler = self._make_sampler(train_cuts_or_sampler)
        self._batches = _SkipFirst(self.sampler, c.seed, self.dist.rank)
        self._loader_rng = torch.Generator()  # keeps the loader off the global RNG
        self.loader = DataLoader(
            dataset,
            sampler=self._batches,
            batch_size=None,
            num_workers=c.num_workers,
            generator=self._loader_rng,
            pin_memory=device.type == "cuda",
        )
        self.use_bf16 = c.precision == "bf16" and device.type == "cuda"
        if c.precision == "bf16" and not self.use_bf16:
            log.info("precision bf16 asks for CUDA autocast; training in fp32 on %s", device)
        self.optimizer = self._make_optimizer()
        # Schedules are data: index by step.
        self.lr = cosine_schedule(c.lr, c.min_lr, c.max_steps, c.warmup_steps)
        wd_end = c.weight_decay if c.weight_decay_end is None else c.weight_decay_end
        self.wd = cosine_schedule(c.weight_decay, wd_end, c.max_steps)
        self.ema = (
            None
            if c.ema_start is None
            else ema_schedule(c.ema_start, c.ema_end, c.max_steps, c.ema_steps, c.ema_shape)
        )
        self.step = 0  # optimizer steps done
        self.epoch = 0
        self.batches_in_epoch = 0  # consumed from the current epoch on this rank
        self._iter = None

    # -- setup -------------------------------------------------------------------------------

    def _make_sampler(self, source: Any) -> Any:
        from lhotse import CutSet
        from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler

        rank, world = self.dist.rank, self.dist.world_size
        if isinstance(source, CutSet):
            common = dict(
                max_duration=self.config.batch_duration,
                shuffle=True,
                drop_last=True,
                seed=self.config.seed,
                rank=rank,
                world_size=world,
            )
            # Bucketing needs more cuts than buckets; a handful of cuts needs no buckets. Lazy
            # sets (a Shar directory) count their manifests' lines; some cannot count at all.
            try:
                buckets = min(10, len(source))
            except (TypeError, NotImplementedError):
                buckets = 10
            if buckets < 2:
                return SimpleCutSampler(source, **common)
            with warnings.catch_warnings():  # "eagerly read CutSet": fine, just slower
                warnings.filterwarnings("ignore", message=".*eagerly read CutSet")
                return DynamicBucketingSampler(source, num_buckets=buckets, **common)
        s_rank, s_world = getattr(source, "rank", rank), getattr(source, "world_size", world)
        if (s_rank, s_world) not in ((rank, world), (0, 1)):
            raise UserError(
                f"the sampler was built for rank {s_rank} of {s_world}, but this process is rank "
                f"{rank} of {world}; pass rank= and world_size= to the sampler"
            )
        if world > 1 and s_world == 1:
            log.info("rank %d cycles its own shard (sampler built with world_size=1)", rank)
        return source

    def _make_optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        groups = [
            {"params": decay, "decay": True},
            {"params": no_decay, "decay": False, "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
        c = self.config
        if c.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum)
        if c.optimizer != "adamw":
            raise UserError(f"train.optimizer = {c.optimizer!r}: use adamw or sgd")
        if len(c.betas) != 2:
            raise UserError(f"train.betas = {c.betas}: must be two numbers")
        return torch.optim.AdamW(groups, lr=c.lr, betas=(float(c.betas[0]), float(c.betas[1])))

    # -- data ----------------------------------------------------------------------------------

    def _next_batch(self) -> Any:
        while True:
            if self._iter is None:
                if hasattr(self.sampler, "set_epoch"):
                    self.sampler.set_epoch(self.epoch)
                self._batches.epoch = self.epoch
                seed = (self.config.seed * 1_000_003 + self.dist.rank * 7_919 + self.epoch) % 2**63
                self._loader_rng.manual_seed(seed)  # worker seeds depend on (seed, rank, epoch)
                self._iter = iter(self.loader)
            try:
                batch = next(self._iter)
            except StopIteration:
                if self.batches_in_epoch == 0:
                    raise UserError(too_little_data(self.sampler)) from None
                self.epoch += 1
                self.batches_in_epoch = 0
                self._iter = None
                continue
            self.batches_in_epoch += 1
            return batch

    # -- one iteration -------------------------------------------------------------------------

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over ``accum_steps`` micro-batches; returns this rank's metrics."""
        c, step, model = self.config, self.step, self.model
        # 1. schedules
        lr, wd = float(self.lr[step]), float(self.wd[step])
        momentum = None if self.ema is None else float(self.ema[step])
        now = Step(step, lr, wd, momentum, {k: float(v[step]) for k, v in self.schedules.items()})
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            group["weight_decay"] = wd if group["decay"] else 0.0
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, sums, audio_s = 0.0, {}, 0.0
        for micro in range(c.accum_steps):
            batch = self._next_batch()
            lengths = getattr(batch, "lengths", None)
            if lengths is not None:
                audio_s += float(lengths.sum()) / SAMPLE_RATE
            if hasattr(batch, "to"):
                batch = batch.to(self.dist.device, non_blocking=True)
            last = micro == c.accum_steps - 1
            # Only the last micro-batch all-reduces gradients.
            sync = contextlib.nullcontext() if last or not self.dist.enabled else self.ddp.no_sync()
            with sync:
                # 2. forward
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.use_bf16):
                    loss, metrics = self.objective(self.ddp, batch, now)
                # 3. finite-loss check, before anything is changed or saved
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise NonFiniteLossError(
                        f"loss is {value} at step {step + 1} (micro-batch {micro + 1} of "
                        f"{c.accum_steps}, rank {self.dist.rank}); nothing was saved for this "
                        f"step; last checkpoint: {find_latest(self.ckpt_dir) or 'none'}. "
                        "Lower the learning rate or check the data."
                    )
                # 4. backward (mean over micro-batches)
                (loss / c.accum_steps).backward()
            loss_sum += value
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
        # 5. clip (an infinite bound only measures the norm)
        bound = c.grad_clip if c.grad_clip else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), bound)
        # 6. optional cancel of gradients (e.g. DINO's last layer early on)
        self.objective.cancel_gradients(model, now)
        # 7. optimizer step
        self.optimizer.step()
        # 8. EMA / teacher update
        with torch.no_grad():
            self.objective.after_step(model, now)
        self.step += 1
        # 9. metrics (reduced over ranks only when logged)
        out = {k: v / c.accum_steps for k, v in sums.items()}
        out.update(loss=loss_sum / c.accum_steps, lr=lr, wd=wd, grad_norm=float(grad_norm))
        if momentum is not None:
            out["ema_momentum"] = momentum
        out["_audio_s"] = audio_s
        return out

    # -- the loop ------------------------------------------------------------------------------

    def fit(self) -> Path | None:
        """Train until ``max_steps`` (or ``max_minutes``); returns the last checkpoint folder."""
        c = self.config
        if c.resume:
            self._resume()
        elif find_latest(self.ckpt_dir) is not None:
            raise UserError(
                f"{self.run_dir} already holds checkpoints; pass --resume to continue that run, "
                "or choose a new run folder"
            )
        if self.step >= c.max_steps:
            log.info("nothing to do: step %d >= max_steps %d", self.step, c.max_steps)
            return find_latest(self.ckpt_dir)
        self.model.train()
        metrics = MetricsLog(self.run_dir, c.max_steps, self.step, enabled=self.dist.is_main)
        start = last_log = time.monotonic()
        pending: list[dict[str, Any]] = []
        last_ckpt = None
        self._monitor_s = 0.0
        try:
            if self.step == 0:
                self._run_monitor(metrics, start)
            while self.step < c.max_steps:
                pending.append(self.train_step())
                metrics.step()
                done = self.step >= c.max_steps
                out_of_time = self._out_of_time(start)
                if self.step % c.log_every == 0 or done or out_of_time:
                    now = time.monotonic()
                    metrics.write(self._reduce(pending, now - last_log, now - start))
                    pending, last_log = [], now
                if self.monitor is not None and (self.step % self.monitor.every == 0 or done):
                    self._run_monitor(metrics, start)
                if self.step % c.ckpt_every == 0 or done or out_of_time:
                    last_ckpt = self.save()
                if out_of_time:
                    log.info("max_minutes=%s reached at step %d; stopped", c.max_minutes, self.step)
                    break
        finally:
            metrics.close()
        if self.dist.enabled:
            torch.distributed.barrier()
        return last_ckpt

    def _run_monitor(self, metrics: MetricsLog, start: float) -> None:
        """The monitor on rank 0 (other ranks wait for it at their next collective)."""
        if self.monitor is None or not self.dist.is_main:
            return
        was_training = self.model.training
        record = dict(self.monitor(self.model, self.step))
        self.model.train(was_training)
        self._monitor_s += float(record.get("monitor_seconds", 0.0))
        if self.step > 0:
            record["monitor_share"] = self._monitor_s / max(time.monotonic() - start, 1e-9)
        metrics.write({"step": self.step, **record})

    def _out_of_time(self, start: float) -> bool:
        if self.config.max_minutes is None:
            return False
        late = time.monotonic() - start >= 60.0 * self.config.max_minutes
        flag = torch.tensor([float(late)], device=self.dist.device)
        return bool(reduce_sum(flag, self.dist).item() > 0)  # every rank stops at the same step

    def _reduce(self, steps: list[dict[str, Any]], window_s: float, total_s: float) -> dict:
        """Average the pending steps' metrics over steps and ranks; sum the audio."""
        last = steps[-1]
        keys = sorted(k for k in last if k not in ("lr", "wd", "ema_momentum", "_audio_s"))
        local = [sum(s[k] for s in steps) / len(steps) for k in keys]
        audio = sum(s["_audio_s"] for s in steps)
        vals = torch.tensor([*local, audio], dtype=torch.float64, device=self.dist.device)
        vals = reduce_sum(vals, self.dist).tolist()
        record: dict[str, Any] = {"step": self.step, "epoch": self.epoch}
        record.update({k: v / self.dist.world_size for k, v in zip(keys, vals[:-1], strict=True)})
        record.update(lr=last["lr"], wd=last["wd"])
        if "ema_momentum" in last:
            record["ema_momentum"] = last["ema_momentum"]
        record["audio_h_per_h"] = vals[-1] / max(window_s, 1e-9)
        record["seconds"] = total_s
        return record

    # -- checkpoints ---------------------------------------------------------------------------

    def _rank_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "rng": capture_rng(),
        }

    def save(self) -> Path | None:
        """Checkpoint the current step (every rank must call it; rank 0 writes)."""
        ranks = all_gather_objects(self._rank_state(), self.dist)
        if not self.dist.is_main:
            return None
        state = {
            "format": 1,
            "step": self.step,
            "world_size": self.dist.world_size,
            "optimizer": self.optimizer.state_dict(),
            "objective": self.objective.state_dict(),
            "ranks": ranks,
        }
        path = save_checkpoint(
            self.ckpt_dir,
            self.step,
            self.model,
            self.model_spec,
            state,
            keep_last=self.config.keep_last,
            keep_every=self.config.keep_every,
        )
        log.info("saved %s", path)
        return path

    def _resume(self) -> None:
        ckpt = find_latest(self.ckpt_dir)
        if ckpt is None:
            log.info("--resume: no checkpoint in %s yet; starting from step 0", self.ckpt_dir)
            return
        state = load_checkpoint(ckpt, self.model, self.model_spec, map_location=self.dist.device)
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("objective") is not None:
            self.objective.load_state_dict(state["objective"])
        self.step = int(state["step"])
        ranks = state["ranks"]
        if len(ranks) == self.dist.world_size:
            mine = ranks[self.dist.rank]
            self.epoch, self.batches_in_epoch = int(mine["epoch"]), int(mine["batches_in_epoch"])
            self._batches.skip = self.batches_in_epoch
            restore_rng(mine["rng"])
        else:  # another number of processes: the data order cannot be continued exactly
            self.epoch = max(int(r["epoch"]) for r in ranks) + 1
            log.warning(
                "checkpoint was written by %d processes, this run has %d: starting epoch %d "
                "afresh (not an exact continuation)",
                len(ranks),
                self.dist.world_size,
                self.epoch,
            )
        log.info("resumed from %s (step %d, epoch %d)", ckpt, self.step, self.epoch)
