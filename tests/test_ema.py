"""The one EMA update: parameters averaged, buffers copied (or kept, for DINO)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from speechssl.models.ema import ema_update


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


def _pair() -> tuple[nn.Module, nn.Module]:
    """Teacher and student with known, different parameters and running statistics."""
    teacher, student = _net(), _net()
    with torch.no_grad():
        teacher[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        teacher[0].bias.copy_(torch.tensor([0.0, 10.0]))
        student[0].weight.copy_(torch.tensor([[11.0, 12.0], [13.0, 14.0]]))
        student[0].bias.copy_(torch.tensor([10.0, 0.0]))
    teacher[1].running_mean.fill_(1.0)
    teacher[1].running_var.fill_(4.0)
    teacher[1].num_batches_tracked.fill_(3)
    student[1].running_mean.copy_(torch.tensor([5.0, -5.0]))
    student[1].running_var.copy_(torch.tensor([9.0, 16.0]))
    student[1].num_batches_tracked.fill_(7)
    return teacher, student


def test_parameters_are_averaged_and_buffers_copied():
    teacher, student = _pair()
    ema_update(teacher, student, 0.75)
    # by hand: 0.75 * teacher + 0.25 * student
    want_w = torch.tensor([[3.5, 4.5], [5.5, 6.5]])
    assert torch.equal(teacher[0].weight, want_w)
    assert torch.equal(teacher[0].bias, torch.tensor([2.5, 7.5]))
    assert torch.equal(teacher[1].weight, torch.ones(2))  # equal on both sides: unchanged
    # running statistics are the student's, not 0.75 * 1 + 0.25 * 5 = 2
    assert torch.equal(teacher[1].running_mean, torch.tensor([5.0, -5.0]))
    assert torch.equal(teacher[1].running_var, torch.tensor([9.0, 16.0]))
    assert int(teacher[1].num_batches_tracked) == 7
    assert torch.equal(student[0].weight, torch.tensor([[11.0, 12.0], [13.0, 14.0]]))  # read only


def test_buffers_can_be_kept_and_momentum_ends_are_exact():
    teacher, student = _pair()
    ema_update(teacher, student, 0.5, copy_buffers=False)
    assert torch.equal(teacher[0].bias, torch.tensor([5.0, 5.0]))
    assert torch.equal(teacher[1].running_mean, torch.ones(2))  # the teacher's own
    assert int(teacher[1].num_batches_tracked) == 3
    before = teacher[0].weight.clone()
    ema_update(teacher, student, 1.0)
    assert torch.equal(teacher[0].weight, before)
    ema_update(teacher, student, 0.0)
    assert torch.equal(teacher[0].weight, student[0].weight)
    with pytest.raises(ValueError, match="momentum"):
        ema_update(teacher, student, 1.5)


def test_dino_teacher_moves_parameters_and_keeps_its_statistics():
    """DINO's update is this function with the teacher's own BatchNorm statistics (as the
    DINO code, whose teacher tracks them in its own train-mode forwards)."""
    from speechssl.objectives.dino import DinoModel

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _net()

        def embed(self, audio, lengths):
            return self.net(audio)

    model = DinoModel(Encoder(), nn.Linear(2, 3))
    teacher, student = _pair()
    model.encoder.net.load_state_dict(student.state_dict())
    model.teacher_encoder.net.load_state_dict(teacher.state_dict())
    head_t = model.teacher_head.weight.clone()
    with torch.no_grad():
        model.head.weight.add_(1.0)
    model.update_teacher(0.75)
    assert torch.equal(model.teacher_encoder.net[0].bias, torch.tensor([2.5, 7.5]))
    assert torch.equal(model.teacher_encoder.net[1].running_mean, torch.ones(2))
    torch.testing.assert_close(
        model.teacher_head.weight, 0.75 * head_t + 0.25 * model.head.weight, rtol=0, atol=1e-7
    )
