"""A toy model, objective and corpus for the training tests, and a script that trains them.

Not part of the library: the subprocess tests (kill + resume, torchrun) run this file, and the
in-process tests import its pieces. The objective is a denoising auto-encoder over 10 ms frames
of raw audio; its input noise is drawn from torch's global RNG, so an exact resume also proves
that RNG states are restored.

``--method`` picks what trains: ``toy`` (the auto-encoder on whole cuts), ``pretrain`` (the
auto-encoder on the pretraining data pipeline's seeded random crops) or ``dino`` (a tiny
ECAPA-TDNN through the DINO recipe, with random crops and augmentation).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from lhotse import CutSet
from lhotse.dataset import SimpleCutSampler

from speechssl.audio.io import recording
from speechssl.data.batching import CutDataset
from speechssl.data.pretrain import PretrainDataset
from speechssl.objectives.base import Objective, Step
from speechssl.training import TrainConfig, Trainer, seed_everything

FRAME = 160


class ToyModel(torch.nn.Module):
    """Frames of raw audio -> hidden -> frames (encoder + 'head' in one module, as recipes do)."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.enc = torch.nn.Linear(FRAME, hidden)
        self.norm = torch.nn.LayerNorm(hidden)
        self.head = torch.nn.Linear(hidden, FRAME)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.norm(self.enc(frames))))


class ToyObjective(Objective):
    """Mean squared error of reconstructing clean frames from noisy ones."""

    def __init__(self, noise: float = 0.1, sleep: float = 0.0, nan_at: int | None = None) -> None:
        self.noise, self.sleep, self.nan_at = noise, sleep, nan_at
        self.calls = 0
        self.seen_steps: list[int] = []
        self.momenta: list[float | None] = []
        self.steps: list[Step] = []  # every Step the trainer handed to __call__

    def __call__(self, model, batch, step):
        self.steps.append(step)
        if self.sleep:
            time.sleep(self.sleep)
        n = batch.audio.shape[1] // FRAME
        frames = batch.audio[:, : n * FRAME].reshape(len(batch), n, FRAME)
        noisy = frames + self.noise * torch.randn(frames.shape) if self.noise else frames
        loss = ((model(noisy) - frames) ** 2).mean()
        self.calls += 1
        if self.nan_at is not None and self.calls > self.nan_at:
            loss = loss * float("nan")
        return loss, {"rms": frames.pow(2).mean().sqrt()}

    def after_step(self, model, step):
        self.seen_steps.append(step.index)
        self.momenta.append(step.momentum)

    def state_dict(self):
        return {"calls": torch.tensor(self.calls)}

    def load_state_dict(self, state):
        self.calls = int(state["calls"])


def make_cuts(folder: Path, n: int = 8, seconds: float = 0.1, seed: int = 0) -> CutSet:
    """``n`` cuts of noisy sines of equal length, written with soundfile into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    cuts = []
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * (100 + 40 * i) * t) + 0.05 * rng.standard_normal(len(t))
        path = folder / f"u{i:03d}.wav"
        sf.write(path, x.astype(np.float32), 16000, subtype="FLOAT")
        cuts.append(recording(path, recording_id=f"u{i:03d}").to_cut())
    return CutSet.from_cuts(cuts)


def dino_trainer(args: argparse.Namespace) -> Trainer:
    """The DINO recipe's trainer, sized for a test: 16-channel ECAPA, 32 prototypes."""
    from speechssl.config import build
    from speechssl.recipes.dino import DinoConfig, build_dino_trainer

    cli = {
        "data.train": [args.cuts], "data.batch_size": args.batch, "data.babble_pool": 4,
        "model.ecapa.channels": 16, "model.ecapa.mfa_dim": 32, "model.ecapa.emb_dim": 16,
        "model.ecapa.attention_dim": 8, "crops.global_seconds": 0.35, "crops.local_crops": 2,
        "crops.local_seconds": 0.1, "augment.gain_prob": 0.5, "augment.noise_prob": 0.8,
        "augment.reverb_prob": 0.5, "dino.out_dim": 32, "dino.hidden_dim": 16,
        "dino.bottleneck_dim": 8, "dino.tau_t_warmup_steps": 5, "train.max_steps": args.max_steps,
        "train.warmup_steps": 3, "train.log_every": 1, "train.ckpt_every": args.ckpt_every,
        "train.keep_last": 2, "train.num_workers": args.workers, "train.deterministic": True,
        "out": args.run_dir, "resume": args.resume,
    }  # fmt: skip
    return build_dino_trainer(build(DinoConfig, cli))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--method", choices=["toy", "pretrain", "dino"], default="toy")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--cuts", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--max-steps", type=int, default=20)
    p.add_argument("--ckpt-every", type=int, default=5)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--shard", action="store_true", help="each rank trains on its own cuts")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    cuts = CutSet.from_file(args.cuts).to_eager()
    if args.shard:  # uneven per-rank shards: rank r keeps cuts r, r+w, ... minus some
        cuts = cuts.subset(cut_ids=[c.id for c in cuts][rank::world][: 6 if rank == 0 else 2])
        sampler = SimpleCutSampler(
            cuts, max_cuts=args.batch, shuffle=True, drop_last=True, world_size=1, rank=0
        )
    else:
        sampler = SimpleCutSampler(
            cuts, max_cuts=args.batch, shuffle=True, drop_last=True, world_size=world, rank=rank
        )
    if args.method == "dino":
        trainer = dino_trainer(args)
        if args.sleep:  # leave the killing test time between checkpoints
            step = trainer.train_step
            trainer.train_step = lambda: (time.sleep(args.sleep), step())[1]
        _fit_and_save(trainer, args.run_dir, rank, world)
        return
    seed_everything(0)
    model = ToyModel(args.hidden)
    config = TrainConfig(
        max_steps=args.max_steps,
        lr=args.lr,
        min_lr=1e-4,
        warmup_steps=3,
        weight_decay=0.01,
        weight_decay_end=0.1,
        ema_start=0.99,
        grad_clip=1.0,
        accum_steps=args.accum,
        log_every=1,
        ckpt_every=args.ckpt_every,
        keep_last=2,
        num_workers=args.workers,
        deterministic=True,
        resume=args.resume,
    )
    if args.method == "pretrain":  # seeded crops of 0.2 s at whole-frame offsets
        dataset = PretrainDataset(lambda n: n // 320, crop_seconds=0.2, seed=7)
    else:
        dataset = CutDataset()
    trainer = Trainer(
        model,
        ToyObjective(noise=args.noise, sleep=args.sleep),
        sampler,
        dataset,
        config,
        args.run_dir,
        model_spec={"kind": "toy", "config": {"hidden": args.hidden}},
    )
    _fit_and_save(trainer, args.run_dir, rank, world)


def _fit_and_save(trainer: Trainer, run_dir: str, rank: int, world: int) -> None:
    """Train, then write this rank's weights and buffers (the tests compare them)."""
    trainer.fit()
    from safetensors.torch import save_file

    weights = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(weights, str(Path(run_dir) / f"final-rank{rank}.safetensors"))
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
