"""The training loop in one process: schedules, accumulation, clipping, NaN, retention, logs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet
from lhotse.dataset import SimpleCutSampler
from safetensors.torch import load_file

from speechssl.data.batching import CutDataset
from speechssl.errors import UserError
from speechssl.training import (
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    cosine_schedule,
    ema_schedule,
    find_latest,
    read_metrics,
    seed_everything,
)

sys.path.insert(0, str(Path(__file__).parent))
from train_toy import ToyModel, ToyObjective, make_cuts  # noqa: E402


@pytest.fixture(scope="module")
def cuts(tmp_path_factory) -> CutSet:
    return make_cuts(tmp_path_factory.mktemp("toy") / "audio", n=8)


def _config(**kw) -> TrainConfig:
    base = dict(max_steps=4, lr=1e-2, min_lr=1e-4, warmup_steps=1, log_every=1, ckpt_every=100,
                num_workers=0, grad_clip=None)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _train(cuts, run, batch=2, objective=None, **kw) -> tuple[Trainer, ToyModel]:
    seed_everything(0)
    model = ToyModel()
    sampler = SimpleCutSampler(cuts, max_cuts=batch, shuffle=True, drop_last=True)
    objective = objective or ToyObjective(noise=0.0)
    trainer = Trainer(model, objective, sampler, CutDataset(), _config(**kw), run)
    trainer.fit()
    return trainer, model


# -- schedules -----------------------------------------------------------------------------------


def test_cosine_schedule_with_warmup():
    s = cosine_schedule(1.0, 0.1, 100, warmup_steps=10)
    assert len(s) == 100
    assert s[0] == 0.0 and s[10] == pytest.approx(1.0) and s[-1] == pytest.approx(0.1)
    assert np.all(np.diff(s[:11]) > 0)  # linear warm-up
    np.testing.assert_allclose(np.diff(s[:10]), 0.1)
    assert np.all(np.diff(s[10:]) < 0) and s.max() == pytest.approx(1.0)
    assert len(cosine_schedule(1.0, 0.0, 5, warmup_steps=50)) == 5  # warm-up longer than the run
    wd = cosine_schedule(0.04, 0.4, 50)
    assert wd[0] == pytest.approx(0.04) and wd[-1] == pytest.approx(0.4)
    assert np.all(np.diff(wd) > 0)


def test_ema_schedule_rises_to_one():
    m = ema_schedule(0.996, 1.0, 1000)
    assert len(m) == 1000 and m[0] == pytest.approx(0.996) and m[-1] == pytest.approx(1.0)
    assert np.all(np.diff(m) >= 0)
    with pytest.raises(ValueError):
        ema_schedule(0.9, 1.5, 10)


# -- the step ------------------------------------------------------------------------------------


def test_ema_schedule_linear_ramp_then_constant():
    m = ema_schedule(0.999, 0.9999, 100, ramp_steps=31, shape="linear")
    assert m[0] == pytest.approx(0.999) and m[30] == pytest.approx(0.9999)
    np.testing.assert_allclose(np.diff(m[:31]), (0.9999 - 0.999) / 30)  # evenly spaced
    assert (m[30:] == 0.9999).all() and len(m) == 100


def test_betas_reach_the_optimizer(cuts, tmp_path):
    trainer, _ = _train(cuts, tmp_path / "run", max_steps=1, betas=[0.9, 0.98])
    assert trainer.optimizer.param_groups[0]["betas"] == (0.9, 0.98)


def test_accumulation_equals_a_larger_batch(cuts, tmp_path):
    _, big = _train(cuts, tmp_path / "big", batch=4, max_steps=3)
    _, acc = _train(cuts, tmp_path / "acc", batch=2, accum_steps=2, max_steps=3)
    _, other = _train(cuts, tmp_path / "b2", batch=2, max_steps=3)
    for (k, a), b in zip(big.state_dict().items(), acc.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=k)
    assert not torch.allclose(big.enc.weight, other.enc.weight, atol=1e-6)


class _Probe(ToyObjective):
    """Records the gradient norm the optimizer is about to use, and the hooks' arguments."""

    def __init__(self) -> None:
        super().__init__(noise=0.0)
        self.norms: list[float] = []

    def cancel_gradients(self, model, step):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


def test_gradient_clipping_bounds_the_norm(cuts, tmp_path):
    probe = _Probe()
    _train(cuts, tmp_path / "run", objective=probe, grad_clip=1e-3, max_steps=3)
    logged = [r["grad_norm"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert min(logged) > 1e-2  # the clip did something ...
    assert max(probe.norms) <= 1e-3 * (1 + 1e-4)  # ... and the update used the clipped norm


def test_nan_loss_is_a_clear_error_and_saves_nothing(cuts, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3 .*step-000002"):
        _train(cuts, run, objective=ToyObjective(noise=0.0, nan_at=2), ckpt_every=1, max_steps=6)
    assert find_latest(run / "checkpoints").name == "step-000002"
    kept = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert kept == ["step-000001", "step-000002"]


# -- checkpoints and logs -------------------------------------------------------------------------


def test_retention_keeps_last_n_and_every_mth(cuts, tmp_path):
    run = tmp_path / "run"
    _train(cuts, run, max_steps=12, ckpt_every=2, keep_last=2, keep_every=4)
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["latest", "step-000004", "step-000008", "step-000010", "step-000012"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000012"
    with pytest.raises(UserError, match="already holds checkpoints"):
        _train(cuts, run, max_steps=12)  # no silent mixing of two runs in one folder


def test_metrics_jsonl_and_hooks(cuts, tmp_path):
    run = tmp_path / "run"
    seed_everything(0)
    objective = ToyObjective()
    config = _config(max_steps=5, log_every=2, ema_start=0.99, batch_duration=0.25)
    trainer = Trainer(ToyModel(), objective, cuts, CutDataset(), config, run,
                      model_spec={"kind": "toy"})  # fmt: skip
    trainer.fit()
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 4, 5]
    expected = {"step", "epoch", "loss", "lr", "wd", "ema_momentum", "grad_norm",
                "audio_h_per_h", "seconds", "rms"}  # fmt: skip
    for r in records:
        assert set(r) == expected, set(r) ^ expected
        assert np.isfinite(r["loss"]) and r["audio_h_per_h"] > 0
    assert objective.seen_steps == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(objective.momenta, ema_schedule(0.99, 1.0, 5))
    assert records[-1]["ema_momentum"] == pytest.approx(1.0)
    # model.json holds the recipe's spec plus the step; the weights are safetensors.
    ckpt = find_latest(run / "checkpoints")
    assert (ckpt / "model.json").read_text().count('"kind": "toy"') == 1
    assert set(load_file(ckpt / "model.safetensors")) == set(ToyModel().state_dict())


def test_max_minutes_stops_cleanly_with_a_checkpoint(cuts, tmp_path):
    run = tmp_path / "run"
    trainer, _ = _train(cuts, run, objective=ToyObjective(noise=0.0, sleep=0.05), max_steps=1000,
                        max_minutes=0.2 / 60)  # fmt: skip
    assert 1 <= trainer.step < 20
    assert find_latest(run / "checkpoints").name == f"step-{trainer.step:06d}"
    assert read_metrics(run / "metrics.jsonl")[-1]["step"] == trainer.step


def test_bf16_on_cpu_is_ignored_with_a_note(cuts, tmp_path, caplog):
    with caplog.at_level("INFO", logger="speechssl"):
        trainer, _ = _train(cuts, tmp_path / "run", precision="bf16", max_steps=1)
    assert not trainer.use_bf16 and "training in fp32" in caplog.text


def test_tensorboard_gets_the_same_scalars_as_the_jsonl(cuts, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    _train(cuts, run, max_steps=4, log_every=2)
    records = read_metrics(run / "metrics.jsonl")
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    losses = {e.step: e.value for e in events.Scalars("loss")}
    assert losses == pytest.approx({r["step"]: r["loss"] for r in records}, rel=1e-6)


# -- the objective contract --------------------------------------------------------------------


def test_every_schedule_reaches_the_objective_as_step_data(cuts, tmp_path):
    """Schedules are data: each call gets this step's index, lr, EMA momentum and the
    recipe's arrays, so no objective counts steps itself."""
    seed_everything(0)
    objective = ToyObjective(noise=0.0)
    tau = np.linspace(0.04, 0.07, 5)
    config = _config(max_steps=5, accum_steps=2, ema_start=0.99, batch_duration=0.25)
    trainer = Trainer(ToyModel(), objective, cuts, CutDataset(), config, tmp_path / "run",
                      schedules={"tau_t": tau})  # fmt: skip
    trainer.fit()
    assert [s.index for s in objective.steps] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # 2 micro-batches
    every_other = objective.steps[::2]
    np.testing.assert_array_equal([s["tau_t"] for s in every_other], tau)
    np.testing.assert_array_equal([s.lr for s in every_other], trainer.lr)
    np.testing.assert_array_equal([s.momentum for s in every_other], trainer.ema)
    with pytest.raises(KeyError, match="no schedule 'tau_s'.*tau_t"):
        every_other[0]["tau_s"]
    with pytest.raises(ValueError, match="one value per step"):
        Trainer(ToyModel(), objective, cuts, CutDataset(), config, tmp_path / "r2",
                schedules={"tau_t": tau[:4]})  # fmt: skip


def test_a_plain_function_is_an_objective_without_hooks(cuts, tmp_path):
    seen = []

    def mse(model, batch, step):
        seen.append(step.index)
        return ToyObjective(noise=0.0)(model, batch, step)

    _train(cuts, tmp_path / "run", objective=mse, max_steps=3)
    assert seen == [0, 1, 2]


class _Grads(ToyObjective):
    """Records the gradients the optimizer is about to apply."""

    def __init__(self) -> None:
        super().__init__(noise=0.0)
        self.grads: list[list[torch.Tensor]] = []

    def cancel_gradients(self, model, step):
        self.grads.append([p.grad.detach().clone() for p in model.parameters()])


def test_sgd_with_momentum_follows_the_textbook_update(cuts, tmp_path):
    """``train.optimizer sgd``: v <- mu v + g, p <- p - lr v (constant lr, no decay)."""
    seed_everything(0)
    start = [p.detach().clone() for p in ToyModel().parameters()]
    probe = _Grads()
    trainer, model = _train(cuts, tmp_path / "run", objective=probe, max_steps=3,
                            optimizer="sgd", momentum=0.9, lr=0.05, min_lr=0.05,
                            warmup_steps=0)  # fmt: skip
    assert type(trainer.optimizer) is torch.optim.SGD
    expected = []
    for p0, *grads in zip(start, *probe.grads, strict=True):
        v, p = torch.zeros_like(p0), p0.clone()
        for g in grads:
            v = 0.9 * v + g
            p = p - 0.05 * v
        expected.append(p)
    for got, want in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-7)


def test_methods_bring_their_own_optimisation_defaults():
    """The trainer's defaults are neutral; DINO's weight decay and clipping stay in DINO."""
    from speechssl.recipes.dino import DinoConfig
    from speechssl.recipes.pretrain import PretrainConfig

    neutral = TrainConfig()
    assert (neutral.weight_decay, neutral.grad_clip, neutral.optimizer) == (0.0, None, "adamw")
    dino, pretrain = DinoConfig().train, PretrainConfig().train
    assert (dino.weight_decay, dino.weight_decay_end, dino.grad_clip) == (0.04, 0.4, 3.0)
    assert pretrain.weight_decay == 0.01 and pretrain.weight_decay_end is None
