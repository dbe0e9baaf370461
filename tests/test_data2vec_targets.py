"""data2vec's teacher targets checked by hand on a 2-block model, and its teacher's extent.

The reference below recomputes every block with plain torch ops from the teacher's own
weights (layer norm, multi-head attention with padded keys masked, residual adds, the
feed-forward branch), instance-normalises each utterance's valid frames by hand and averages
the top K: nothing of it goes through ``Block.forward`` or the model's target code.
"""

from __future__ import annotations

import math

import pytest
import torch

from speechssl.models.pretrain import PretrainModel
from speechssl.models.transformer import FrameTransformer
from speechssl.models.transformer_config import preset

pytestmark = pytest.mark.usefixtures("one_thread")

LENGTHS = (16000, 9000)  # 50 and 28 frames: the second utterance is padded


def _model(top_k: int = 2, target: str = "ffn") -> PretrainModel:
    torch.manual_seed(0)
    cfg = preset("tiny", layers=2, dropout=0.0, attn_dropout=0.0, conv_pos_kernel=16)
    model = PretrainModel(FrameTransformer(cfg), teacher_top_k=top_k, teacher_target=target)
    with torch.no_grad():  # a teacher that differs from the student, as after some EMA steps
        g = torch.Generator().manual_seed(1)
        for p in model.teacher.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _audio() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor(LENGTHS)
    audio = 0.1 * torch.randn(len(LENGTHS), max(LENGTHS), generator=g)
    return audio * (torch.arange(audio.shape[1]) < lengths[:, None]), lengths


def _layer_norm(x, ln):
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).square().mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _block_by_hand(x: torch.Tensor, blk, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One utterance's valid frames ``[n, d]`` -> (block output, FFN branch output)."""
    n, d = x.shape
    qkv = _layer_norm(x, blk.ln1) @ blk.qkv.weight.T + blk.qkv.bias
    q, k, v = (qkv[:, i * d : (i + 1) * d].reshape(n, heads, d // heads) for i in range(3))
    scores = torch.einsum("qhc,khc->hqk", q, k) / math.sqrt(d // heads)
    att = torch.einsum("hqk,khc->qhc", scores.softmax(-1), v).reshape(n, d)
    h = x + att @ blk.proj.weight.T + blk.proj.bias
    u = _layer_norm(h, blk.ln2) @ blk.fc1.weight.T + blk.fc1.bias
    u = 0.5 * u * (1 + torch.erf(u / math.sqrt(2)))  # exact GELU
    ffn = u @ blk.fc2.weight.T + blk.fc2.bias
    return h + ffn, ffn


def _instance_norm(y: torch.Tensor) -> torch.Tensor:
    mean = y.mean(0, keepdim=True)
    var = (y - mean).square().mean(0, keepdim=True)  # biased, as F.instance_norm
    return (y - mean) / torch.sqrt(var + 1e-5)


def _by_hand(model: PretrainModel, audio, lengths, top_k: int, target: str) -> list[torch.Tensor]:
    """Per utterance: the targets on its valid frames, from the student's first-block input
    (the front-end and positional conv the teacher shares) and the teacher's block weights."""
    with torch.no_grad():
        student = model.encoder.eval()(audio, lengths)  # hidden_states[0]: the blocks' input
        blocks = model.teacher.blocks
        out = []
        for b, n in enumerate(student.mask.sum(1).tolist()):
            x, layers = student.hidden_states[0][b, :n], []
            for blk in blocks:
                x, ffn = _block_by_hand(x, blk, model.encoder.config.heads)
                layers.append(ffn if target == "ffn" else x)
            top = layers[len(blocks) - top_k :]
            out.append(sum(_instance_norm(y) for y in top) / top_k)
        return out


@pytest.mark.parametrize(("top_k", "target"), [(2, "ffn"), (1, "ffn"), (2, "residual")])
def test_targets_equal_a_hand_computation(top_k, target):
    model = _model(top_k, target)
    audio, lengths = _audio()
    got = model.teacher_forward(audio, lengths)
    want = _by_hand(model, audio, lengths, top_k, target)
    for b, w in enumerate(want):
        n = len(w)
        torch.testing.assert_close(got[b, :n], w, rtol=1e-4, atol=1e-4)
        assert (got[b, n:] == 0).all()  # padded frames carry no target
    assert len(want[1]) < got.shape[1]  # the check covered a padded utterance


def test_ffn_targets_are_not_the_residual_stream():
    """The default reading (data2vec) differs from the block outputs of earlier versions: the
    hand FFN targets would fail against the residual reading."""
    audio, lengths = _audio()
    ffn = _model(2, "ffn").teacher_forward(audio, lengths)
    residual = _model(2, "residual").teacher_forward(audio, lengths)
    assert (ffn - residual).abs().max() > 0.1


def test_teacher_has_no_front_end_of_its_own():
    """Teacher parameters = one copy of the blocks; the front-end, its projection and the
    positional conv are read from the student: changing the student's changes the targets."""
    model = _model()
    names = {n for n, _ in model.teacher.named_parameters()}
    assert names == {f"blocks.{n}" for n, _ in model.encoder.blocks.named_parameters()}
    student_ids = {id(p) for p in model.encoder.parameters()}
    assert not student_ids & {id(p) for p in model.teacher.parameters()}  # a copy, not shared
    audio, lengths = _audio()
    before = model.teacher_forward(audio, lengths)
    for part in (model.encoder.frontend_proj, model.encoder.pos_conv):
        with torch.no_grad():
            part.weight.mul_(1.5)
        after = model.teacher_forward(audio, lengths)
        assert (after - before).abs().max() > 1e-3, part
        before = after


def test_ema_moves_only_the_transformer_blocks():
    model = _model()
    with torch.no_grad():  # the student trains on: every parameter moves
        for p in model.encoder.parameters():
            p.add_(0.1)
    teacher = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    student = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    model.update_teacher(0.75)
    for k, v in model.teacher.state_dict().items():
        s = student[k]  # the teacher's "blocks.i. ..." are the student's "blocks.i. ..."
        torch.testing.assert_close(v, 0.75 * teacher[k] + 0.25 * s, rtol=0, atol=1e-6)
    for k, v in model.encoder.state_dict().items():  # the student is read, never written
        assert torch.equal(v, student[k]), k
