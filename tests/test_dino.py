"""DINO and the supervised AAM baseline: loss, centring, EMA, crops, monitors, recipes."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from lhotse import CutSet, SupervisionSegment
from safetensors.torch import load_file
from torch import nn

from speechssl.audio.io import recording
from speechssl.config import build
from speechssl.models.ecapa import EcapaTdnn
from speechssl.models.registry import build_model, load_upstream, model_spec, resolve_checkpoint
from speechssl.models.resnet import ResNet
from speechssl.objectives.aam import AamHead
from speechssl.objectives.base import Step
from speechssl.objectives.dino import (
    CollapseMonitor,
    DinoHead,
    DinoLoss,
    DinoModel,
    DinoObjective,
    DinoOutput,
    embedding_std,
    entropy,
    teacher_temperature_schedule,
)
from speechssl.recipes.dino import DinoConfig, build_dino_trainer, run_dino
from speechssl.recipes.supervised import (
    SupervisedConfig,
    build_supervised_trainer,
    run_supervised,
)
from speechssl.training import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


# -- loss ------------------------------------------------------------------------------------


def reference_dino_loss(student, teacher, center, tau_s, tau_t, n_global):
    """The published formula, written out: loops over view pairs and over rows (float64)."""
    s, t, c = (np.asarray(a, dtype=np.float64) for a in (student, teacher, center))
    batch = t.shape[0] // n_global
    views = s.shape[0] // batch

    def softmax(x):
        e = np.exp(x - x.max())
        return e / e.sum()

    total, pairs, kl = 0.0, 0, 0.0
    for i in range(n_global):
        for j in range(views):
            if i == j:
                continue
            ce_sum, kl_sum = 0.0, 0.0
            for b in range(batch):
                q = softmax((t[i * batch + b] - c) / tau_t)
                p = softmax(s[j * batch + b] / tau_s)
                ce_sum += -np.sum(q * np.log(p))
                kl_sum += np.sum(q * (np.log(q) - np.log(p)))
            total += ce_sum / batch
            kl += kl_sum / batch
            pairs += 1
    return total / pairs, kl / pairs


@pytest.mark.parametrize("n_global,n_local", [(2, 3), (3, 0), (1, 2)])
def test_loss_matches_the_published_formula(n_global, n_local):
    gen = torch.Generator().manual_seed(n_global * 10 + n_local)
    batch, k = 4, 7
    student = torch.randn((n_global + n_local) * batch, k, generator=gen)
    teacher = torch.randn(n_global * batch, k, generator=gen)
    center = torch.randn(1, k, generator=gen) * 0.3
    loss_fn = DinoLoss(k, n_global, tau_s=0.2)
    loss_fn.center.copy_(center)
    tau_t = 0.05 + (0.09 - 0.05) * 4 / 10
    loss, q = loss_fn(student, teacher, tau_t, update=False)
    ref, ref_kl = reference_dino_loss(student, teacher, center[0], 0.2, tau_t, n_global)
    assert float(loss) == pytest.approx(ref, rel=1e-5)
    # The objective's KL metric (loss minus teacher entropy) is the pairs' mean KL.
    assert float(loss - entropy(q)) == pytest.approx(ref_kl, rel=1e-4, abs=1e-5)


def test_teacher_temperature_warms_up_linearly_then_stays():
    tau = teacher_temperature_schedule(0.04, 0.07, 30, 1001)
    assert tau.shape == (1001,)
    for step in (0, 1, 15, 29):
        assert tau[step] == pytest.approx(0.04 + 0.03 * step / 30)
    assert tau[30] == tau[1000] == 0.07
    assert teacher_temperature_schedule(0.04, 0.05, 0, 3).tolist() == [0.05] * 3


def _step(index: int = 0, tau_t: float = 0.04, momentum: float | None = None) -> Step:
    return Step(index, momentum=momentum, values={"tau_t": tau_t})


def test_center_is_an_ema_of_the_teacher_batch_mean():
    k = 6
    loss = DinoLoss(k, 2, center_momentum=0.8)
    c0 = np.linspace(-1, 1, k)
    loss.center.copy_(torch.tensor(c0, dtype=torch.float32)[None])
    teacher = torch.arange(4 * k, dtype=torch.float32).reshape(4, k) / 10
    student = torch.randn(6, k)
    loss(student, teacher, 0.04)
    rows = teacher.numpy().astype(np.float64)
    expected = 0.8 * c0 + 0.2 * sum(rows) / len(rows)
    np.testing.assert_allclose(loss.center[0].numpy(), expected, rtol=1e-6)
    before = loss.center.clone()
    loss(student, teacher, 0.04, update=False)
    assert torch.equal(loss.center, before)


# -- model, EMA, gradients -------------------------------------------------------------------


class TinyEncoder(nn.Module):
    """A stand-in encoder with ``embed``: a linear map of the first 8 samples."""

    emb_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 4)

    def embed(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.lin(wave[:, :8])


def _tiny_model(out_dim: int = 6) -> DinoModel:
    torch.manual_seed(0)
    return DinoModel(TinyEncoder(), DinoHead(4, out_dim, hidden_dim=5, bottleneck_dim=3))


def _fake_batch(batch: int = 3, n_global: int = 2, n_local: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return SimpleNamespace(
        global_audio=torch.randn(n_global * batch, 16, generator=gen),
        global_lengths=torch.full((n_global * batch,), 16),
        local_audio=torch.randn(n_local * batch, 12, generator=gen),
        local_lengths=torch.full((n_local * batch,), 12),
    )


def test_ema_update_of_the_teacher():
    model = _tiny_model()
    with torch.no_grad():
        for p in [*model.encoder.parameters(), *model.head.parameters()]:
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    student = [p.detach().clone() for p in [*model.encoder.parameters(), *model.head.parameters()]]
    teacher = [
        p.detach().clone()
        for p in [*model.teacher_encoder.parameters(), *model.teacher_head.parameters()]
    ]
    objective = DinoObjective(DinoLoss(6))
    objective.after_step(model, _step(7, momentum=0.9))
    after = [*model.teacher_encoder.parameters(), *model.teacher_head.parameters()]
    for t0, s, t1 in zip(teacher, student, after, strict=True):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * s)
    assert set(objective.state_dict()) == {"center"}  # no step counter: schedules are data
    with pytest.raises(ValueError, match="EMA"):
        objective.after_step(model, _step(8))


def test_teacher_gets_no_gradients_and_last_layer_is_frozen_early():
    model = _tiny_model()
    objective = DinoObjective(DinoLoss(6, 2), freeze_last_layer_steps=3)
    loss, _ = objective(model, _fake_batch(), _step())
    loss.backward()
    for p in [*model.teacher_encoder.parameters(), *model.teacher_head.parameters()]:
        assert not p.requires_grad and p.grad is None
    last = model.head.last_layer.parametrizations.weight.original1
    assert last.grad is not None and last.grad.abs().sum() > 0
    objective.cancel_gradients(model, _step(2))  # still frozen
    assert last.grad is None or not last.grad.any()
    assert model.head.mlp[0].weight.grad.abs().sum() > 0  # the rest keeps its gradients
    # An optimizer step then leaves the last layer where it was.
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.1, weight_decay=0.1)
    before = last.detach().clone()
    opt.step()
    assert torch.equal(last, before)
    # From step 3 on, the last layer trains.
    opt.zero_grad()
    loss, _ = objective(model, _fake_batch(seed=1), _step(3))
    loss.backward()
    objective.cancel_gradients(model, _step(3))
    assert last.grad is not None and last.grad.abs().sum() > 0


def test_weight_normalised_last_layer_keeps_unit_prototypes_and_a_fixed_gain():
    torch.manual_seed(1)
    head = DinoHead(4, out_dim=9, hidden_dim=8, bottleneck_dim=5)
    gain = head.last_layer.parametrizations.weight.original0
    v = head.last_layer.parametrizations.weight.original1
    assert not gain.requires_grad and torch.equal(gain, torch.ones_like(gain))
    opt = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=0.05)
    x = torch.randn(16, 4)
    v0 = v.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        head(x).logsumexp(-1).mean().backward()
        opt.step()
    assert not torch.equal(v, v0) and torch.equal(gain, torch.ones_like(gain))
    norms = head.last_layer.weight.detach().norm(dim=1)  # one prototype per output
    torch.testing.assert_close(norms, torch.ones(9))
    # The logits are cosines between the normalised bottleneck and each prototype.
    b = head.mlp(x).detach().numpy()
    w = v.detach().numpy()
    cos = (b / np.linalg.norm(b, axis=1, keepdims=True)) @ (
        w / np.linalg.norm(w, axis=1, keepdims=True)
    ).T
    np.testing.assert_allclose(head(x).detach().numpy(), cos, rtol=1e-5, atol=1e-6)


def test_resnet_encoder_trains_in_the_dino_model():
    torch.manual_seed(0)
    encoder = build_model(
        "resnet", {"base_width": 4, "blocks": [1, 1, 1, 1], "emb_dim": 8, "n_mels": 16}
    )
    model = DinoModel(encoder, DinoHead(8, 16, hidden_dim=8, bottleneck_dim=4))
    batch = SimpleNamespace(
        global_audio=torch.randn(4, 4000),
        global_lengths=torch.tensor([4000, 3000, 4000, 3000]),
        local_audio=torch.randn(4, 2000),
        local_lengths=torch.full((4,), 2000),
    )
    loss, metrics = DinoObjective(DinoLoss(16, 2))(model, batch, _step())
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    assert all(p.grad is not None for p in model.encoder.parameters())


# -- monitors --------------------------------------------------------------------------------


class Fixed(nn.Module):
    """A stand-in model returning given outputs (to plant collapses)."""

    def __init__(self, make) -> None:
        super().__init__()
        self.make = make

    def forward(self, batch) -> DinoOutput:
        return self.make()


def test_uniform_teacher_has_entropy_log_k_and_embedding_std_scales():
    k, d, b = 32, 16, 64
    out = DinoOutput(torch.randn(4 * b, k), torch.full((2 * b, k), 3.0), torch.randn(2 * b, d))
    objective = DinoObjective(DinoLoss(k, 2))
    _, m = objective(Fixed(lambda: out), None, _step())
    assert float(m["teacher_entropy"]) == pytest.approx(math.log(k), rel=1e-5)
    assert float(entropy(torch.eye(5))) == pytest.approx(0.0, abs=1e-6)
    # Random directions: std about 1/sqrt(d); one repeated embedding: 0.
    std = float(embedding_std(torch.randn(4000, d)))
    assert std == pytest.approx(1 / math.sqrt(d), rel=0.05)
    assert float(embedding_std(torch.ones(10, d))) == pytest.approx(0.0, abs=1e-6)


def _run_monitor(make, steps: int, patience: int):
    objective = DinoObjective(DinoLoss(24, 2), monitor=CollapseMonitor(patience=patience))
    model = Fixed(make)
    return [objective(model, None, _step(i))[1]["collapsed"] for i in range(steps)]


def test_collapse_warning_on_a_planted_collapse_only(caplog):
    torch.manual_seed(0)
    head = DinoHead(8, 24, hidden_dim=16, bottleneck_dim=6)
    b = 8

    def healthy() -> DinoOutput:
        with torch.no_grad():
            e = torch.randn(6 * b, 8)
            return DinoOutput(head(e), head(e[: 2 * b] + 0.1 * torch.randn(2 * b, 8)), e[: 2 * b])

    def collapsed() -> DinoOutput:
        e = torch.ones(6 * b, 8)  # every utterance gets the same embedding
        with torch.no_grad():
            return DinoOutput(head(e), head(e[: 2 * b]), e[: 2 * b])

    with caplog.at_level(logging.WARNING, logger="speechssl"):
        flags = _run_monitor(healthy, 30, patience=5)
    assert not any(flags) and not [r for r in caplog.records if "collapse" in r.message]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="speechssl"):
        flags = _run_monitor(collapsed, 12, patience=5)
    warnings = [r for r in caplog.records if "collapsed" in r.message]
    assert len(warnings) == 1  # once, not every step
    assert flags[:4] == [0.0] * 4 and all(flags[4:])
    assert "embedding std" in warnings[0].message


# -- AAM -------------------------------------------------------------------------------------


def _cosines(head: AamHead, x: torch.Tensor) -> np.ndarray:
    xn = x.double().numpy()
    w = head.weight.detach().double().numpy()
    xn = xn / np.linalg.norm(xn, axis=1, keepdims=True)
    return xn @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T


def test_aam_without_margin_is_scaled_cosine_softmax():
    torch.manual_seed(0)
    head = AamHead(6, 5, scale=12.0, margin=0.0)
    x, y = torch.randn(8, 6), torch.randint(0, 5, (8,))
    z = 12.0 * _cosines(head, x)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    ref = -np.mean(logp[np.arange(8), y.numpy()])
    assert float(F.cross_entropy(head(x, y), y).detach()) == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("easy", [False, True])
def test_aam_margin_lowers_the_target_logit(easy):
    s, m = 30.0, 0.3
    head = AamHead(6, 4, scale=s, margin=m, easy_margin=easy)
    with torch.no_grad():  # class j along axis j (norms differ: only directions count)
        head.weight.copy_(torch.eye(4, 6) * torch.tensor([1.0, 2.0, 0.5, 3.0])[:, None])
    angles = [0.0, math.radians(60), math.radians(100), math.radians(175)]
    y = torch.tensor([0, 1, 2, 3])
    x = torch.zeros(4, 6)
    for i, a in enumerate(angles):  # angle a to the target, 90 degrees to every other class
        x[i, i], x[i, 5] = math.cos(a), math.sin(a)
    logits = head(x, y).detach().double().numpy()
    for i, a in enumerate(angles):
        if easy:
            want = math.cos(a + m) if a < math.pi / 2 else math.cos(a)
        else:  # past pi - m, ArcFace's linear stand-in
            want = math.cos(a + m) if a < math.pi - m else math.cos(a) - m * math.sin(m)
        assert logits[i, i] == pytest.approx(s * want, abs=1e-4)
        others = [j for j in range(4) if j != i]
        np.testing.assert_allclose(logits[i, others], 0.0, atol=1e-4)
    # Without labels: plain scaled cosines.
    plain = head(x).detach().double().numpy()
    np.testing.assert_allclose(np.diag(plain), s * np.cos(angles), atol=1e-4)


# -- recipes end to end ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def speakers(tmp_path_factory) -> Path:
    """6 cuts of two 'speakers' (sines + noise), one shorter than a local crop."""
    root = tmp_path_factory.mktemp("dino")
    rng = np.random.default_rng(0)
    cuts = []
    for i, sec in enumerate([1.5, 1.5, 1.2, 1.3, 0.3, 0.8]):
        t = np.arange(int(sec * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * (150 + 60 * i) * t) + 0.05 * rng.standard_normal(len(t))
        path = root / f"u{i}.flac"
        sf.write(path, x.astype(np.float32), 16000)
        cut = recording(path, recording_id=f"u{i}").to_cut()
        cut.supervisions = [
            SupervisionSegment(f"u{i}", f"u{i}", 0.0, cut.duration, speaker=f"spk{i % 2}")
        ]
        cuts.append(cut)
    path = root / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


def _tiny(cuts: Path, out: Path, **extra) -> dict:
    return {
        "data.train": [str(cuts)],
        "data.batch_size": 2,
        "model.ecapa.channels": 16,
        "model.ecapa.mfa_dim": 32,
        "model.ecapa.emb_dim": 16,
        "model.ecapa.attention_dim": 8,
        "train.warmup_steps": 1,
        "train.num_workers": 0,
        "train.log_every": 1,
        "train.ckpt_every": 2,
        "out": str(out),
        **extra,
    }


def _dino_cli(cuts: Path, out: Path, **extra) -> dict:
    return _tiny(
        cuts,
        out,
        **{
            "crops.global_seconds": 1.0,
            "crops.local_seconds": 0.5,
            "dino.out_dim": 64,
            "dino.hidden_dim": 32,
            "dino.bottleneck_dim": 16,
            "dino.tau_t_warmup_steps": 4,
            **extra,
        },
    )


MONITORS = ("teacher_entropy", "student_entropy", "kl", "embedding_std", "collapsed")


def test_run_dino_trains_logs_monitors_resumes_and_loads_the_teacher(speakers, tmp_path):
    out = tmp_path / "dino"
    run = run_dino(build(DinoConfig, _dino_cli(speakers, out, **{"train.max_steps": 2})))
    assert run == out and (out / "config.yaml").is_file()
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert all(np.isfinite(r[k]) for k in (*MONITORS, "loss", "ema_momentum"))

    run_dino(build(DinoConfig, _dino_cli(speakers, out, **{"train.max_steps": 4, "resume": True})))
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    # Steps 1-3 are epoch 0 (6 cuts, 2 per batch): the 0.3 s and 0.8 s cuts are shorter than
    # a global crop (1 s), the 0.3 s one also than a local crop (0.5 s); none was dropped.
    assert [r["epoch"] for r in records] == [0, 0, 0, 1]
    assert sum(r["short_global"] for r in records[:3]) == 2
    assert sum(r["short_local"] for r in records[:3]) == 1
    # The objective's step came back with the checkpoint: step 3 uses tau_t at index 2.
    assert records[2]["tau_t"] == pytest.approx(0.04 + 0.03 * 2 / 4)

    encoder = load_upstream(out)
    assert isinstance(encoder, EcapaTdnn)
    emb = encoder.embed(torch.randn(2, 8000), torch.tensor([8000, 5000]))
    assert emb.shape == (2, 16) and torch.isfinite(emb).all()
    saved = load_file(str(resolve_checkpoint(out) / "model.safetensors"))
    key = "fc.weight"
    assert torch.equal(encoder.state_dict()[key], saved["teacher_encoder." + key])
    assert not torch.equal(saved["teacher_encoder." + key], saved["encoder." + key])


def test_run_supervised_trains_and_saves_labels(speakers, tmp_path):
    out = tmp_path / "sup"
    cli = _tiny(speakers, out, **{"train.max_steps": 3, "crop.seconds": 1.0})
    run_supervised(build(SupervisedConfig, cli))
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    # One step of 2 utterances per record: an accuracy of 0, 1/2 or 1.
    assert all(np.isfinite(r["aam_ce"]) and r["accuracy"] in (0.0, 0.5, 1.0) for r in records)
    labels = (out / "labels.json").read_text()
    assert '"spk0"' in labels and '"spk1"' in labels
    encoder = load_upstream(out)
    assert encoder.embed(torch.randn(2, 8000), torch.tensor([8000, 4000])).shape == (2, 16)
    run_supervised(build(SupervisedConfig, {**cli, "train.max_steps": 4, "resume": True}))
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4]


# Method D (Cho et al. 2022, arXiv:2208.05445, after DINO): the numbers a shipped DINO config
# must train with.
PAPER = {
    "crops": (2, 3.0, 4, 2.0),  # global crops x seconds, local crops x seconds
    "noise_p": 0.7, "reverb_p": 0.45, "head": (2048, 2048, 256), "tau_s": 0.1,
    "tau_t": (0.04, 0.07), "center_m": 0.9, "ema": (0.996, 1.0), "clip": 3.0,
}  # fmt: skip


# The laptop recipe differs from the paper only in size (benchmarks/results/dino-recipe-findings.md:
# 4.6 x faster a step than the paper's crops and head at 256 channels, and a better teacher).
LAPTOP = {"crops": (2, 2.0, 2, 1.0), "head": (512, 512, 256)}


@pytest.mark.parametrize(
    "name,kind,prototypes,sizes",
    [("dino-ecapa-tiny", EcapaTdnn, 1024, LAPTOP), ("dino-ecapa", EcapaTdnn, 65536, {}),
     ("dino-resnet", ResNet, 65536, {})],
)  # fmt: skip
def test_shipped_dino_configs_build_the_papers_recipe(
    name, kind, prototypes, sizes, speakers, tmp_path
):
    """Read from what the recipe builds (not the YAML): model, crops, schedules, loss."""
    expect = PAPER | sizes
    cli = {"data.train": [str(speakers)], "data.batch_size": 2, "train.num_workers": 0,
           "out": str(tmp_path)}  # fmt: skip
    trainer = build_dino_trainer(build(DinoConfig, cli, yaml_file=name))
    model, objective, data = trainer.model, trainer.objective, trainer.loader.dataset
    assert isinstance(model.encoder, kind) and isinstance(model.teacher_encoder, kind)
    mlp = [m.out_features for m in model.head.mlp if isinstance(m, nn.Linear)]
    assert mlp == list(expect["head"])
    assert model.head.last_layer.weight.shape == (prototypes, expect["head"][-1])
    for student, teacher in model.student_pairs():  # the teacher starts as the student
        for s, t in zip(student.state_dict().values(), teacher.state_dict().values(), strict=True):
            assert torch.equal(s, t)
    g, gs, local, ls = expect["crops"]
    assert (data.global_crops, data.global_len, data.local_crops, data.local_len) == (
        g, gs * 16000, local, ls * 16000,
    )  # fmt: skip
    aug = data.augmenter.cfg
    assert (aug.noise_prob, aug.reverb_prob) == (PAPER["noise_p"], PAPER["reverb_p"])
    loss, steps = objective.loss, trainer.config.max_steps
    warm = round(0.3 * steps)  # tau_t warms up over the first 30% (DINO: 30 of 100 epochs)
    assert loss.tau_s == PAPER["tau_s"] and loss.center_momentum == PAPER["center_m"]
    t0, t1 = PAPER["tau_t"]
    tau = trainer.schedules["tau_t"]  # handed to the objective as step["tau_t"]
    assert tau[0] == pytest.approx(t0)
    assert tau[warm // 2] == pytest.approx((t0 + t1) / 2, rel=1e-3)
    assert tau[warm] == tau[steps - 1] == pytest.approx(t1)
    m0, m1 = PAPER["ema"]
    assert trainer.ema[0] == pytest.approx(m0) and trainer.ema[-1] == pytest.approx(m1, abs=1e-6)
    assert np.all(np.diff(trainer.ema) >= 0) and trainer.config.grad_clip == PAPER["clip"]
    # The last layer is frozen for exactly one epoch of this data: 6 cuts / batch 2 = 3 steps.
    assert objective.freeze_last_layer_steps == 3


def test_shipped_supervised_config_builds_an_aam_classifier(speakers, tmp_path):
    cli = {"data.train": [str(speakers)], "data.batch_size": 2, "train.num_workers": 0,
           "out": str(tmp_path)}  # fmt: skip
    trainer = build_supervised_trainer(
        build(SupervisedConfig, cli, yaml_file="supervised-ecapa-tiny")
    )
    dino = build_dino_trainer(build(DinoConfig, {**cli, "out": str(tmp_path / "d")},
                                    yaml_file="dino-ecapa-tiny"))  # fmt: skip
    # The same encoder as the DINO config it is the baseline of, on one global-size crop.
    assert model_spec(trainer.model.encoder) == model_spec(dino.model.encoder)
    data = trainer.loader.dataset
    assert (data.global_crops, data.global_len, data.local_crops) == (
        1,
        dino.loader.dataset.global_len,
        0,
    )
    head = trainer.model.head
    assert head.weight.shape == (2, dino.model.encoder.emb_dim)  # two speakers in the data
    assert (head.scale, head.margin, head.easy_margin) == (30.0, 0.2, False)  # ArcFace s, m
