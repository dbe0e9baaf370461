"""Verification metrics against a slow, independent threshold sweep; trial-list properties."""

from __future__ import annotations

import numpy as np
import pytest

from speechssl.errors import UserError
from speechssl.evaluation.verification import (
    compute_eer,
    compute_min_dcf,
    cosine_scores,
    make_trials,
    verification_metrics,
)


def slow_rates(scores, labels):
    """(FAR, FRR) at every unique score and +inf, counted trial by trial (accept if s >= t)."""
    points = []
    for t in sorted(set(scores.tolist())) + [float("inf")]:
        fa = sum(1 for s, lab in zip(scores, labels, strict=True) if lab == 0 and s >= t)
        miss = sum(1 for s, lab in zip(scores, labels, strict=True) if lab == 1 and s < t)
        points.append((fa / sum(labels == 0), miss / sum(labels == 1)))
    return points


def slow_eer(scores, labels):
    points = slow_rates(scores, labels)
    for (far0, frr0), (far1, frr1) in zip(points, points[1:], strict=False):
        if frr1 - far1 >= 0:
            if frr1 == far1:
                return frr1
            d0, d1 = frr0 - far0, frr1 - far1
            a = -d0 / (d1 - d0)
            return far0 + a * (far1 - far0)
    raise AssertionError("no crossing")


def slow_min_dcf(scores, labels, p):
    costs = [frr * p + far * (1 - p) for far, frr in slow_rates(scores, labels)]
    return min(costs) / min(p, 1 - p)


@pytest.mark.parametrize("seed", range(8))
def test_against_slow_reference_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    n_t, n_n = rng.integers(3, 60, size=2)
    scores = np.concatenate([rng.normal(1.0, 1.0, n_t), rng.normal(0.0, 1.0, n_n)])
    if seed % 2:  # ties between and within classes
        scores = np.round(scores, 1)
    labels = np.array([1] * n_t + [0] * n_n)
    perm = rng.permutation(len(scores))
    scores, labels = scores[perm], labels[perm]
    assert compute_eer(scores, labels)[0] == pytest.approx(slow_eer(scores, labels), abs=1e-12)
    for p in (0.01, 0.05, 0.5):
        got = compute_min_dcf(scores, labels, p)[0]
        assert got == pytest.approx(slow_min_dcf(scores, labels, p), abs=1e-12)


def test_perfect_separation():
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3])
    labels = np.array([1, 1, 1, 0, 0, 0])
    assert compute_eer(scores, labels)[0] == 0.0
    assert compute_min_dcf(scores, labels, 0.01)[0] == 0.0


def test_identical_distributions():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=20000)
    labels = rng.integers(0, 2, size=20000)
    assert compute_eer(scores, labels)[0] == pytest.approx(0.5, abs=0.02)
    same = np.zeros(10)
    lab = np.array([1, 0] * 5)
    assert compute_eer(same, lab)[0] == 0.5
    assert compute_min_dcf(same, lab, 0.01)[0] == 1.0


def test_hand_computed_examples():
    # thresholds .1 .2 .3 .7 ...: at .7 FRR = FAR = 1/3 exactly.
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0])
    assert compute_eer(scores, labels)[0] == pytest.approx(1 / 3)
    # best at t=.8: FRR 1/3, FAR 0 -> .01/3, normalised by .01.
    assert compute_min_dcf(scores, labels, 0.01)[0] == pytest.approx(1 / 3)
    # (FAR, FRR): (1,0) (.5,0) (.5,1/3) (0,1/3): the crossing is on the flat FRR = 1/3 segment.
    scores = np.array([0.9, 0.6, 0.4, 0.5, 0.1])
    labels = np.array([1, 1, 1, 0, 0])
    assert compute_eer(scores, labels)[0] == pytest.approx(1 / 3)
    # p = .05: t=.6 costs .05/3 -> normalised 1/3; t=.4 costs .95*.5 -> 9.5.
    assert compute_min_dcf(scores, labels, 0.05)[0] == pytest.approx(1 / 3)
    m = verification_metrics(scores, labels)
    assert m["trials"] == 5 and m["target_trials"] == 3


def test_needs_both_classes():
    with pytest.raises(ValueError):
        compute_eer(np.array([0.1, 0.2]), np.array([1, 1]))


def test_trials_properties():
    speakers = [f"s{i % 5}" for i in range(40)]
    trials = make_trials(speakers, seed=3)
    a, b, lab = trials.T
    assert (a < b).all()  # unordered, never self
    assert len({(x, y) for x, y in zip(a, b, strict=True)}) == len(trials)
    same = np.array([speakers[x] == speakers[y] for x, y in zip(a, b, strict=True)])
    assert (same == (lab == 1)).all()
    assert lab.sum() == (lab == 0).sum() == 5 * 8 * 7 // 2  # every target pair, balanced
    assert (make_trials(speakers, seed=3) == trials).all()
    assert not (make_trials(speakers, seed=4) == trials).all()
    capped = make_trials(speakers, seed=0, max_targets=10)
    assert capped[:, 2].sum() == 10 and len(capped) == 20


def test_trials_need_two_speakers():
    with pytest.raises(UserError):
        make_trials(["a", "a", "a"])
    with pytest.raises(UserError):
        make_trials(["a", "b", "c"])  # no same-speaker pair


def test_cosine_scores():
    emb = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    trials = np.array([[0, 1, 1], [0, 2, 0]])
    assert cosine_scores(emb, trials, center=False) == pytest.approx([1.0, 0.0])
