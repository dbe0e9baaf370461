"""A batch's randomness comes from its position (seed, rank, epoch, index), nothing else."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from lhotse import CutSet
from lhotse.dataset import SimpleCutSampler

from speechssl.data.batching import BatchRNG, CutDataset, SeededCuts, mix_seed
from speechssl.training import TrainConfig, Trainer
from speechssl.training.trainer import _SkipFirst

sys.path.insert(0, str(Path(__file__).parent))
from train_toy import ToyModel, ToyObjective, make_cuts  # noqa: E402


@pytest.fixture(scope="module")
def cuts(tmp_path_factory) -> CutSet:
    return make_cuts(tmp_path_factory.mktemp("toy") / "audio", n=6, seconds=0.3)


def _sampler(cuts: CutSet) -> SimpleCutSampler:
    return SimpleCutSampler(cuts, max_cuts=2, shuffle=True, drop_last=True, seed=0)


def test_mix_seed_is_order_sensitive_and_spread():
    seeds = {mix_seed(0, r, e, i) for r in range(2) for e in range(3) for i in range(50)}
    assert len(seeds) == 300 and all(0 <= s < 2**63 for s in seeds)
    assert mix_seed(0, 1, 2, 3) == mix_seed(0, 1, 2, 3) != mix_seed(0, 2, 1, 3)


def _draw(gen: torch.Generator) -> int:
    return int(torch.randint(2**62, (1,), generator=gen))


def test_batch_rng_seeds_from_the_item_and_falls_back_to_its_own():
    item = SeededCuts(["a"], 11)
    draw = [_draw(BatchRNG(seed)(item)[1]) for seed in (None, None, 5, 6)]
    assert draw[0] == draw[1] != draw[2] != draw[3]  # the dataset's seed is mixed in
    assert BatchRNG(None)(item)[0] == ["a"] and len(item) == 1 and list(item) == ["a"]
    # Plain cuts: one generator that advances from batch to batch; no seed, no generator.
    rng = BatchRNG(5)
    assert _draw(rng(["a"])[1]) != _draw(rng(["a"])[1])
    assert BatchRNG(None)(["a"]) == (["a"], None)


def _seeds(cuts: CutSet, rank: int, epoch: int, skip: int = 0) -> list[int]:
    batches = _SkipFirst(_sampler(cuts), seed=0, rank=rank)
    batches.sampler.set_epoch(epoch)
    batches.epoch, batches.skip = epoch, skip
    return [b.seed for b in batches]


def test_seeds_differ_across_ranks_and_epochs_and_survive_a_skip(cuts):
    base = _seeds(cuts, rank=0, epoch=0)
    assert len(base) == 3 and len(set(base)) == 3
    assert not set(base) & set(_seeds(cuts, rank=1, epoch=0))
    assert not set(base) & set(_seeds(cuts, rank=0, epoch=1))
    assert _seeds(cuts, rank=0, epoch=0, skip=2) == base[2:]  # what a resume sees


def _crops(cuts: CutSet, tmp: Path, workers: int) -> list[tuple[list[str], torch.Tensor]]:
    """Two epochs of randomly cropped batches, as the trainer's loader delivers them."""
    cfg = TrainConfig(max_steps=1, num_workers=workers, seed=3)
    trainer = Trainer(
        ToyModel(), ToyObjective(), _sampler(cuts), CutDataset(max_duration=0.1), cfg, tmp
    )
    return [(b.cut_ids, b.audio) for b in (trainer._next_batch() for _ in range(6))]


def test_crops_depend_on_position_not_on_workers(cuts, tmp_path):
    serial = _crops(cuts, tmp_path / "a", workers=0)
    parallel = _crops(cuts, tmp_path / "b", workers=2)
    for (ids_a, a), (ids_b, b) in zip(serial, parallel, strict=True):
        assert ids_a == ids_b and torch.equal(a, b)
    # Epoch 1 crops the same cuts at other offsets than epoch 0 did.
    by_cut = [{i: row for i, row in zip(ids, audio, strict=True)} for ids, audio in serial]
    first = {k: v for d in by_cut[:3] for k, v in d.items()}
    second = {k: v for d in by_cut[3:] for k, v in d.items()}
    assert first.keys() == second.keys()
    assert sum(not torch.equal(first[k], second[k]) for k in first) >= len(first) - 1
