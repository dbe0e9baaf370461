"""UnFuSeD's self-distillation loss against a hand computation in numpy, and its options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from speechssl.objectives.self_distill import SelfDistillLoss, self_distill_loss


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _numpy_loss(heads, q, y, alpha, beta, gamma, t):
    """Every term written out: CE = -log softmax at the target; KL summed over classes and
    averaged over the batch, times T^2; 2 - 2 cos between the logit vectors."""
    n = len(y)
    ce = lambda z: -np.mean(np.log(_softmax(z)[np.arange(n), y]))  # noqa: E731
    pq = _softmax(q / t)
    kl = cos = 0.0
    for p in heads:
        pp = _softmax(p / t)
        kl += np.mean(np.sum(pq * (np.log(pq) - np.log(pp)), 1)) * t * t
        c = np.sum(p * q, 1) / (np.linalg.norm(p, axis=1) * np.linalg.norm(q, axis=1))
        cos += np.mean(2 - 2 * c)
    return alpha * sum(ce(p) for p in heads) + ce(q) + beta * kl + gamma * cos


@pytest.mark.parametrize("temperature", [1.0, 3.0])
@pytest.mark.parametrize("detach", [False, True])
def test_loss_matches_a_hand_computation(temperature, detach):
    rng = np.random.default_rng(0)
    heads = [rng.normal(size=(5, 4)) * s for s in (0.5, 1.0, 2.0)]
    q = rng.normal(size=(5, 4))
    y = np.array([0, 3, 1, 1, 2])
    want = _numpy_loss(heads, q, y, 0.7, 0.3, 0.003, temperature)
    loss, parts = self_distill_loss(
        [torch.tensor(h) for h in heads], torch.tensor(q), torch.tensor(y),
        temperature=temperature, detach=detach,
    )  # fmt: skip
    assert float(loss) == pytest.approx(want, rel=1e-10)
    assert set(parts) == {"ce_heads", "ce_final", "kl", "cos"}
    assert float(parts["kl"]) > 0 and float(parts["cos"]) > 0


def test_weights_are_the_released_ones_and_change_the_loss():
    rng = np.random.default_rng(1)
    heads = [torch.tensor(rng.normal(size=(6, 3))) for _ in range(3)]
    q, y = torch.tensor(rng.normal(size=(6, 3))), torch.tensor([0, 1, 2, 0, 1, 2])
    assert SelfDistillLoss() == SelfDistillLoss(0.7, 0.3, 0.003, 1.0, False)
    base, parts = SelfDistillLoss()(heads, q, y)
    expected = 0.7 * parts["ce_heads"] + parts["ce_final"] + 0.3 * parts["kl"]
    expected = expected + 0.003 * parts["cos"]
    assert float(base) == pytest.approx(float(expected))
    more_kl, _ = SelfDistillLoss(beta=1.0)(heads, q, y)
    assert float(more_kl) > float(base)


@pytest.mark.parametrize("detach", [False, True])
def test_detach_stops_the_distillation_gradients_into_the_final_classifier(detach):
    """Released code: the KL and cos terms also pull the final logits towards the heads;
    detached (Be Your Own Teacher), only CE(q, y) reaches them."""
    rng = np.random.default_rng(2)
    heads = [torch.tensor(rng.normal(size=(4, 5)), requires_grad=True) for _ in range(2)]
    q = torch.tensor(rng.normal(size=(4, 5)), requires_grad=True)
    y = torch.tensor([1, 0, 4, 2])
    loss, _ = self_distill_loss(heads, q, y, alpha=0.0, beta=1.0, gamma=1.0, detach=detach)
    (g,) = torch.autograd.grad(loss, q)
    q2 = q.detach().clone().requires_grad_(True)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(q2, y), q2)
    assert torch.allclose(g, g_ce) == detach
    # the heads get the distillation gradient either way
    loss, _ = self_distill_loss(heads, q, y, alpha=0.0, beta=1.0, gamma=0.0, detach=detach)
    assert all(float(t.abs().sum()) > 0 for t in torch.autograd.grad(loss, heads))
