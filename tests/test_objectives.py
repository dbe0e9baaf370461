"""Span masking, teacher targets, EMA, masked CE and padding for the masked-prediction objectives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from speechssl.data.batching import Batch
from speechssl.data.pretrain import PretrainBatch, PretrainDataset
from speechssl.errors import UserError
from speechssl.models.pretrain import PretrainModel, PretrainOutput
from speechssl.models.transformer import FrameTransformer
from speechssl.models.transformer_config import preset
from speechssl.objectives import (
    KmeansCE,
    MultiTarget,
    PretextRegression,
    TeacherRegression,
    expected_mask_fraction,
    span_mask,
)
from speechssl.objectives.base import Step

pytestmark = pytest.mark.usefixtures("one_thread")


def _valid(counts: list[int]) -> torch.Tensor:
    c = torch.tensor(counts)
    return torch.arange(max(counts))[None, :] < c[:, None]


def test_span_mask_fraction_padding_and_determinism():
    counts = [400] * 50 + [123] * 50
    valid = _valid(counts)
    m = span_mask(valid, 0.65, 10, torch.Generator().manual_seed(0))
    assert not (m & ~valid).any()  # padding never masked
    frac_long = m[:50].sum() / valid[:50].sum()
    frac_short = m[50:].sum() / valid[50:].sum()
    assert abs(frac_long - expected_mask_fraction(400)) < 0.02
    assert abs(frac_short - expected_mask_fraction(123)) < 0.03
    # Far from the start edge the fraction is the overlapping-spans value, ~0.49 for 0.65/10.
    assert abs(expected_mask_fraction(10_000) - (1 - (1 - 0.065) ** 10)) < 1e-3
    again = span_mask(valid, 0.65, 10, torch.Generator().manual_seed(0))
    other = span_mask(valid, 0.65, 10, torch.Generator().manual_seed(1))
    assert torch.equal(m, again) and not torch.equal(m, other)


def test_span_mask_forces_one_span_and_leaves_empty_rows():
    valid = _valid([12, 12, 5, 1])
    valid = torch.cat([valid, torch.zeros(1, 12, dtype=torch.bool)])
    for seed in range(20):
        m = span_mask(valid, 0.001, 10, torch.Generator().manual_seed(seed))
        assert (m[:2].sum(1) >= 10).all()  # rows with >= length frames get a whole span
        assert not m[4].any() and not (m & ~valid).any()


def _tiny(**kw) -> FrameTransformer:
    torch.manual_seed(0)
    return FrameTransformer(preset("tiny", layers=3, dropout=0.0, attn_dropout=0.0, **kw))


def _batch(seconds=(1.0, 0.6), seed=0) -> PretrainBatch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([int(s * 16000) for s in seconds])
    audio = 0.1 * torch.randn(len(seconds), int(lengths.max()), generator=g)
    mask = torch.arange(audio.shape[1])[None, :] < lengths[:, None]
    audio = audio * mask
    frames = _tiny().num_frames(lengths)
    return PretrainBatch(audio, lengths, mask, frames=frames)


@pytest.mark.parametrize("frontend", ["logmel", "waveform"])
def test_dataset_counts_the_frames_the_encoder_makes(tmp_path, frontend):
    """The dataset asks the encoder: its frame counts are those of the encoder's own output,
    and the counter it is given pickles without the weights (it travels to workers)."""
    import pickle

    import numpy as np
    import soundfile as sf
    from lhotse import CutSet

    from speechssl.audio.io import recording

    cuts = []
    for i, n in enumerate((320, 421, 8000, 16324)):
        sf.write(tmp_path / f"a{i}.wav", np.full(n, 0.1, np.float32), 16000)
        cuts.append(recording(tmp_path / f"a{i}.wav", recording_id=f"a{i}").to_cut())
    enc = _tiny(frontend=frontend)
    counter = enc.frame_counter()
    assert len(pickle.dumps(counter)) < 1000
    batch = PretrainDataset(pickle.loads(pickle.dumps(counter)))[CutSet.from_cuts(cuts)]
    with torch.no_grad():
        out = enc(batch.audio, batch.lengths)
    assert torch.equal(batch.frames, out.mask.sum(1))
    assert batch.valid_frames.shape == out.mask.shape
    # by hand: log-mel (1 + (T - 400) // 160 + 1) // 2; waveform, conv by conv (module doc)
    assert batch.frames.tolist() == [0, 1, 24, 50]


@pytest.mark.parametrize("target", ["ffn", "residual"])
def test_teacher_targets_equal_a_loop_over_utterances(target):
    """Padding changes no target: the batch's targets are each utterance's alone, 0 beyond.
    (The targets themselves are checked by hand in test_data2vec_targets.py.)"""
    model = PretrainModel(_tiny(), teacher_top_k=2, teacher_target=target)
    model.teacher.load_state_dict({k: v + 0.01 for k, v in model.teacher.state_dict().items()})
    batch = _batch()
    got = model.teacher_forward(batch.audio, batch.lengths)
    for b, n in enumerate(batch.frames.tolist()):
        alone = model.teacher_forward(
            batch.audio[b : b + 1, : batch.lengths[b]], batch.lengths[b : b + 1]
        )
        torch.testing.assert_close(got[b, :n], alone[0], rtol=1e-4, atol=1e-4)
        assert (got[b, n:] == 0).all()


def test_teacher_has_no_grad_and_ema_formula_is_exact():
    model = PretrainModel(_tiny(), teacher_top_k=2)
    assert all(not p.requires_grad for p in model.teacher.parameters())
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert not trainable & {id(p) for p in model.teacher.parameters()}
    model.train()
    assert not model.teacher.training  # no dropout in the teacher
    torch.manual_seed(0)
    loss, _ = TeacherRegression()(model, _batch(), Step(0))
    loss.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in model.teacher.parameters()]
    TeacherRegression().after_step(model, Step(0, momentum=0.9))
    student = model.encoder.blocks.parameters()  # the teacher is the blocks' EMA only
    for t, s, b in zip(model.teacher.parameters(), student, before, strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s, rtol=0, atol=1e-6)
    with pytest.raises(UserError, match="ema"):
        TeacherRegression().after_step(model, Step(0))


def test_masked_ce_equals_cross_entropy_on_masked_frames():
    g = torch.Generator().manual_seed(0)
    b, f, k = 3, 20, 7
    logits = torch.randn(b, f, k, generator=g)
    valid = _valid([20, 15, 9])
    targets = torch.randint(0, k, (b, f), generator=g).masked_fill(~valid, -100)
    targets[0, 3] = -100  # a frame without a label is ignored
    mask = span_mask(valid, 0.65, 4, torch.Generator().manual_seed(1))
    out = PretrainOutput(hidden=torch.zeros(b, f, 4), valid=valid, kmeans_logits=logits)
    batch = PretrainBatch(torch.zeros(b, 1), torch.ones(b), torch.ones(b, 1), targets=targets)
    loss, metrics = KmeansCE().loss(out, batch, mask)
    rows, want_sum, hits = [], 0.0, 0
    for i in range(b):
        for j in range(f):
            if mask[i, j] and targets[i, j] >= 0:
                rows.append((i, j))
                want_sum += F.cross_entropy(logits[i, j][None], targets[i, j][None]).item()
                hits += int(logits[i, j].argmax() == targets[i, j])
    assert loss.item() == pytest.approx(want_sum / len(rows), rel=1e-5)
    assert metrics["kmeans_acc"].item() == pytest.approx(hits / len(rows))
    loss_u, m_u = KmeansCE(unmasked_weight=0.5).loss(out, batch, mask)
    unmasked = ~mask & valid & (targets >= 0)
    want_u = F.cross_entropy(logits[unmasked], targets[unmasked])
    assert loss_u.item() == pytest.approx(loss.item() + 0.5 * want_u.item(), rel=1e-5)


def test_losses_ignore_padding():
    k = 9
    model = PretrainModel(_tiny(), kmeans_classes=k, kmeans_proj_dim=16, teacher_top_k=2)
    model.train()
    objective = MultiTarget({"kmeans": (KmeansCE(), 1.0), "teacher": (TeacherRegression(), 1.0)})
    batch = _batch((1.0, 0.6))
    g = torch.Generator().manual_seed(3)
    batch.targets = torch.randint(0, k, tuple(batch.valid_frames.shape), generator=g)
    batch.targets[~batch.valid_frames] = -100
    noisy = Batch(batch.audio.clone(), batch.lengths, batch.mask)
    noisy.audio[~batch.mask] = 1.0  # garbage after the second row's end
    noisy = PretrainBatch(**vars(noisy), frames=batch.frames, targets=batch.targets)
    torch.manual_seed(5)
    loss_a, m_a = objective(model, batch, Step(0))
    torch.manual_seed(5)
    loss_b, m_b = objective(model, noisy, Step(0))
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-5)
    assert {"kmeans_ce", "kmeans_acc", "teacher_mse", "loss_kmeans", "loss_teacher"} <= set(m_a)


def test_multi_target_refuses_no_target():
    with pytest.raises(UserError, match="no target"):
        MultiTarget({"kmeans": (KmeansCE(), 0.0)})


def test_pretext_regression_is_the_weighted_loss_on_masked_valid_frames():
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(0)
    pred = {"f0": torch.randn(2, 6, 1, generator=g), "mfcc": torch.randn(2, 6, 3, generator=g)}
    tgt = {"f0": torch.randn(2, 6, 1, generator=g), "mfcc": torch.randn(2, 6, 3, generator=g)}
    valid = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    masked = torch.tensor(
        [[True, False, True, True, False, False], [False, True, True, False, True, True]]
    )
    out = PretrainOutput(hidden=torch.zeros(2, 6, 4), valid=valid, pretext=pred)
    objective = PretextRegression({"f0": 0.5, "mfcc": 2.0}, losses={"mfcc": "mse"})
    loss, metrics = objective.loss(out, SimpleNamespace(pretext=tgt), masked)
    # independent: list the frames that are masked and valid, average by hand
    frames = [(b, t) for b in range(2) for t in range(6) if masked[b, t] and valid[b, t]]
    l1 = sum((pred["f0"][b, t] - tgt["f0"][b, t]).abs().sum() for b, t in frames) / len(frames)
    mse = sum(((pred["mfcc"][b, t] - tgt["mfcc"][b, t]) ** 2).sum() for b, t in frames) / (
        3 * len(frames)
    )
    assert loss.item() == pytest.approx(0.5 * l1.item() + 2.0 * mse.item(), rel=1e-6)
    assert metrics["pretext_f0"].item() == pytest.approx(l1.item(), rel=1e-6)
    with pytest.raises(UserError, match="pretext target 'pitch'"):
        PretextRegression({"pitch": 1.0}).loss(out, SimpleNamespace(pretext=tgt), masked)
