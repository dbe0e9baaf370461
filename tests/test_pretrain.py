"""The pretrain recipe: shipped tiny configs train, labels are checked, resume is exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet
from safetensors.torch import load_file

from speechssl.audio.io import recording
from speechssl.config import build
from speechssl.errors import UserError
from speechssl.kmeans.labels import LabelSetInfo, LabelWriter
from speechssl.models.registry import load_upstream
from speechssl.models.transformer import FrameTransformer
from speechssl.objectives.base import Step
from speechssl.recipes.pretrain import PretrainConfig, build_trainer, run_pretrain
from speechssl.recipes.pretrain_next import second_iteration
from speechssl.training import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

K = 12
SECONDS = 1.5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """8 cuts of sine + noise FLAC, and a label folder of random ids at 100 Hz."""
    root = tmp_path_factory.mktemp("pretrain")
    rng = np.random.default_rng(0)
    t = np.arange(int(SECONDS * 16000)) / 16000
    cuts = []
    for i in range(8):
        x = 0.3 * np.sin(2 * np.pi * (150 + 60 * i) * t) + 0.05 * rng.standard_normal(len(t))
        path = root / f"u{i}.flac"
        sf.write(path, x.astype(np.float32), 16000)
        cuts.append(recording(path, recording_id=f"u{i}").to_cut())
    cutset = CutSet.from_cuts(cuts)
    cuts_path = root / "cuts.jsonl.gz"
    cutset.to_file(cuts_path)
    info = LabelSetInfo(
        k=K,
        feature={"upstream": "mfcc", "upstream_id": "mfcc", "layer": 0, "dim": 39},
        label_rate=100.0,
        kmeans_id="test",
        num_cuts=len(cuts),
        cuts_hash="test",
    )
    writer = LabelWriter(root / "labels", info)
    for c in cuts:
        writer.add(c.id, rng.integers(0, K, int(SECONDS * 100)))
    assert writer.close()
    return cuts_path, root / "labels"


def _config(name: str, corpus, out: Path, **extra) -> PretrainConfig:
    cuts, labels = corpus
    cli = {
        "data.train": [str(cuts)],
        "data.crop_seconds": 1.0,
        "train.max_steps": 3,
        "train.batch_duration": 4.0,
        "train.warmup_steps": 1,
        "train.num_workers": 0,
        "train.log_every": 1,
        "train.ckpt_every": 100,
        "monitor.every": 0,
        "out": str(out),
        **extra,
    }
    if name != "data2vec-tiny":
        cli.setdefault("targets.kmeans_labels", str(labels))
    return build(PretrainConfig, cli, name)


@pytest.mark.parametrize("name", ["hubert-tiny", "data2vec-tiny", "mt4ssl-tiny"])
def test_shipped_tiny_configs_train(name, corpus, tmp_path):
    cfg = _config(name, corpus, tmp_path / name)
    last = run_pretrain(cfg)
    assert last == tmp_path / name / "checkpoints" / "step-000003"  # the final save
    records = read_metrics(tmp_path / name / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in records)
    if cfg.targets.kmeans_weight:
        assert "kmeans_acc" in records[-1]
    if cfg.targets.teacher_weight:
        assert "teacher_mse" in records[-1] and "ema_momentum" in records[-1]
    encoder = load_upstream(tmp_path / name)  # the "encoder." prefix picks the student out
    assert isinstance(encoder, FrameTransformer)
    saved = load_file(last / "model.safetensors")
    got = encoder.state_dict()
    assert set(got) == {k[len("encoder.") :] for k in saved if k.startswith("encoder.")}
    for k, v in got.items():
        assert torch.equal(v, saved["encoder." + k]), k
    if cfg.targets.teacher_weight:  # the teacher (the blocks' EMA) moved away from the student
        teacher = {k for k in saved if k.startswith("teacher.")}
        assert teacher == {"teacher." + k for k in got if k.startswith("blocks.")}
        assert any(not torch.equal(got[k[len("teacher.") :]], saved[k]) for k in teacher)


def test_teacher_is_not_in_the_optimizer(corpus, tmp_path):
    trainer = build_trainer(_config("mt4ssl-tiny", corpus, tmp_path / "run"))
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    teacher = {id(p) for p in trainer.model.teacher.parameters()}
    assert teacher and not teacher & in_optimizer
    heads = {id(p) for p in trainer.model.kmeans_head.parameters()}
    heads |= {id(p) for p in trainer.model.regression_head.parameters()}
    assert heads <= in_optimizer


def test_mt4ssl_loss_decreases_on_a_fixed_batch(corpus, tmp_path):
    trainer = build_trainer(_config("mt4ssl-tiny", corpus, tmp_path / "run"))
    model, objective = trainer.model, trainer.objective
    batch = next(iter(trainer.loader))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1.5e-3)
    model.train()
    losses = []
    for step in range(20):
        torch.manual_seed(0)  # the same mask and dropout every step
        loss, metrics = objective(model, batch, Step(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        objective.after_step(model, Step(step, momentum=0.999))
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    assert metrics["kmeans_ce"] < np.log(K)  # below chance on the labels it saw


def test_label_set_mismatch_is_refused(corpus, tmp_path):
    with pytest.raises(UserError, match="k=12 but the prediction head has 50"):
        build_trainer(_config("hubert-tiny", corpus, tmp_path / "a", **{"targets.kmeans_k": 50}))
    with pytest.raises(UserError, match="made from mfcc layer 0 but the config says .* layer 6"):
        build_trainer(_config("hubert-tiny", corpus, tmp_path / "b", **{"targets.kmeans_layer": 6}))
    with pytest.raises(UserError, match="made from mfcc layer 0 but the config says tiny"):
        build_trainer(
            _config("hubert-tiny", corpus, tmp_path / "c", **{"targets.kmeans_upstream": "tiny"})
        )
    with pytest.raises(UserError, match="needs --targets.kmeans-labels"):
        cfg = _config("data2vec-tiny", corpus, tmp_path / "d", **{"targets.kmeans_weight": 1.0})
        build_trainer(cfg)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_mt4ssl_resume_is_exact(corpus, tmp_path):
    extra = {"train.deterministic": True}
    straight = build_trainer(_config("mt4ssl-tiny", corpus, tmp_path / "a", **_six(extra)))
    straight.fit()
    want = _state(straight.model)

    first = build_trainer(_config("mt4ssl-tiny", corpus, tmp_path / "b", **_six(extra)))
    for _ in range(4):
        first.train_step()
    first.save()
    del first
    resumed = build_trainer(
        _config("mt4ssl-tiny", corpus, tmp_path / "b", **_six(extra), resume=True)
    )
    resumed.fit()
    got = _state(resumed.model)
    assert any(k.startswith("teacher.") for k in got)
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k


def _six(extra: dict) -> dict:
    return {"train.max_steps": 6, **extra}


def test_cropped_targets_follow_the_crop(corpus, tmp_path):
    """Labels j % K at 50 Hz (from (i // 2) % K at 100 Hz): a crop keeps them consecutive."""
    cuts_path, _ = corpus
    cuts = CutSet.from_file(cuts_path).to_eager()
    info = LabelSetInfo(
        k=K,
        feature={"upstream": "mfcc", "layer": 0},
        label_rate=100.0,
        kmeans_id="ramp",
        num_cuts=len(cuts),
        cuts_hash="ramp",
    )
    with LabelWriter(tmp_path / "ramp", info) as writer:
        for c in cuts:
            writer.add(c.id, (np.arange(int(SECONDS * 100)) // 2) % K)
    cfg = _config(
        "hubert-tiny", corpus, tmp_path / "run", **{"targets.kmeans_labels": str(tmp_path / "ramp")}
    )
    trainer = build_trainer(cfg)
    starts = set()
    for batch in trainer.loader:
        for row, n in zip(batch.targets, batch.frames.tolist(), strict=True):
            assert n == 49 and (row[n:] == -100).all()  # 1 s = 98 log-mel frames -> 49
            assert ((row[1:n] - row[: n - 1]) % K == 1).all()
            starts.add(int(row[0]))
    assert len(starts) > 1  # the crops start at different frames


def test_second_iteration_relabels_with_the_trained_encoder(corpus, tmp_path):
    cuts_path, _ = corpus
    first = tmp_path / "iter1"
    run_pretrain(_config("data2vec-tiny", corpus, first))
    last = second_iteration(first, layer=3, k=5, cuts=cuts_path, out=tmp_path / "iter2")
    assert last == tmp_path / "iter2" / "pretrain" / "checkpoints" / "step-000003"
    from speechssl.kmeans.labels import KmeansLabels

    labels = KmeansLabels(tmp_path / "iter2" / "labels")
    assert labels.info.k == 5 and labels.info.feature["layer"] == 3
    records = read_metrics(tmp_path / "iter2" / "pretrain" / "metrics.jsonl")
    assert "kmeans_ce" in records[-1] and "teacher_mse" in records[-1]


def test_pretraining_logs_indicators_live(corpus, tmp_path):
    cfg = _config(
        "mt4ssl-tiny",
        corpus,
        tmp_path / "run",
        **{"monitor.every": 2, "monitor.k": 4, "monitor.layers": [0, -1]},
    )
    run_pretrain(cfg)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    live = [r for r in records if "monitor_seconds" in r]
    assert [r["step"] for r in live] == [0, 2, 3]  # before training, every 2, and the end
    last = live[-1]
    for name in ("rankme", "rankme_t", "alpha_req", "inertia_per_frame", "davies_bouldin"):
        assert np.isfinite(last[f"ind/L0/{name}"])
    assert any(k.startswith("ind/L") and not k.startswith("ind/L0/") for k in last)
    assert 0 < last["monitor_share"] < 1
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]


def test_pairs_of_frames_average_to_50fps():
    from speechssl.pseudolabels.targets import to_50fps

    x = torch.arange(7.0).reshape(1, 7, 1)  # frames 0..6 at 100 fps
    out = to_50fps(x, 4)
    assert out[0, :, 0].tolist() == [0.5, 2.5, 4.5, 6.0]  # pairs, then the lone last frame
    assert to_50fps(x, 2)[0, :, 0].tolist() == [0.5, 2.5]
    assert to_50fps(x, 6)[0, 4:, 0].tolist() == [0.0, 0.0]


def test_pretext_targets_train_and_are_standardised(corpus, tmp_path):
    cfg = _config(
        "data2vec-tiny",
        corpus,
        tmp_path / "run",
        **{"targets.teacher_weight": 0.0, "targets.pretext": ["rms,zcr=0.5"]},
    )
    trainer = build_trainer(cfg)
    batch = trainer.loader.dataset[CutSet.from_file(corpus[0]).subset(first=4)]
    for name in ("rms", "zcr"):
        assert batch.pretext[name].shape[:2] == batch.valid_frames.shape
        assert float(batch.pretext[name][~batch.valid_frames].abs().sum()) == 0.0
    # the statistics standardise the cuts they were measured on (all 8 here)
    from speechssl.data.batching import collate_cuts
    from speechssl.pseudolabels import extract
    from speechssl.pseudolabels.targets import PretextTargets, fit_stats

    cuts = list(CutSet.from_file(corpus[0]))
    stats = fit_stats(cuts, ["rms"], seed=0)
    full = collate_cuts(cuts)
    raw = extract(["rms"], full.audio, full.lengths)
    x = raw.values["rms"][raw.mask].double()
    assert stats["rms"]["mean"][0] == pytest.approx(float(x.mean()), rel=1e-6)
    assert stats["rms"]["std"][0] == pytest.approx(float(x.std(unbiased=False)), rel=1e-5)
    frames = torch.div(raw.mask.sum(1) + 1, 2, rounding_mode="floor")
    z = PretextTargets(stats)(full.audio, full.lengths, frames)["rms"]
    assert abs(float(z.sum() / frames.sum())) < 0.05
    trainer.fit()
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert all(np.isfinite(r["pretext_rms"]) and np.isfinite(r["pretext_zcr"]) for r in records)
    import json

    latest = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))[-1]
    stats = json.loads((latest / "model.json").read_text())["pretext_stats"]
    assert set(stats) == {"rms", "zcr"}  # the checkpoint keeps the standardisation


def test_pretext_from_selection_and_unknown_names(tmp_path):
    import json

    from speechssl.pseudolabels.targets import weights_from_selection

    sel = {
        "ranking": [
            {"name": "f0", "utility": 0.1},
            {"name": "rms", "utility": 0.2},
            {"name": "zcr", "utility": 0.3},
            {"name": "loudness", "utility": 0.4},
        ]
    }
    (tmp_path / "selection.json").write_text(json.dumps(sel))
    assert weights_from_selection(tmp_path) == {"f0": 1.0, "rms": 1.0, "zcr": 1.0}
    sel["groups"] = {"sparsemax": {"selected": {"zcr": 0.7, "rms": 0.3}}}
    (tmp_path / "selection.json").write_text(json.dumps(sel))
    assert weights_from_selection(tmp_path / "selection.json") == {"zcr": 0.7, "rms": 0.3}
    from speechssl.pseudolabels.targets import pretext_weights

    with pytest.raises(UserError, match="unknown pseudo-label"):
        pretext_weights(["pitchiness"])


def test_live_pool_is_held_in_memory(tmp_path):
    from speechssl.audio.io import load_cut
    from speechssl.indicators.live import LiveIndicators, MonitorSection

    cuts = []
    for i in range(3):
        path = tmp_path / f"a{i}.flac"
        sf.write(path, (0.1 * np.sin(np.arange(8000) * (0.05 + 0.02 * i))).astype(np.float32),
                 16000)  # fmt: skip
        cuts.append(recording(path, recording_id=f"a{i}").to_cut())
    before = {c.id: load_cut(c) for c in cuts}
    monitor = LiveIndicators.from_section(MonitorSection(every=1, minutes=10.0), cuts)
    for c in cuts:  # the monitor reads no file after it is built
        (tmp_path / f"{c.id}.flac").unlink()
    assert len(monitor.pool) == 3
    for c in monitor.pool:
        np.testing.assert_allclose(load_cut(c), before[c.id], atol=1e-4)


def _pretext_parts(trainer) -> tuple[dict[str, float], dict[str, str]]:
    objective, _ = trainer.objective.parts["pretext"]
    assert set(trainer.model.pretext_heads) == set(objective.weights)  # one head per target
    return objective.weights, objective.losses


def test_pretext_from_a_selection_adds_the_baselines(corpus, tmp_path):
    """Method A (Zaiem et al., JSTSP 2022): loss = sum_k lambda_k loss_k + log-mel loss + MFCC
    loss, by default."""
    import json

    (tmp_path / "selection.json").write_text(
        json.dumps({"groups": {"sparsemax": {"selected": {"zcr": 0.7, "rms": 0.3}}}})
    )

    def weights(name: str, **extra):
        targets = {"targets.teacher_weight": 0.0, **extra}
        cfg = _config("data2vec-tiny", corpus, tmp_path / name, **targets)
        return _pretext_parts(build_trainer(cfg))

    sel = {"targets.pretext_from": str(tmp_path / "selection.json")}
    got, losses = weights("default", **sel)
    assert got == {"zcr": 0.7, "rms": 0.3, "logmel": 1.0, "mfcc": 1.0}
    assert losses == {"zcr": "l1", "rms": "l1", "logmel": "mse", "mfcc": "mse"}
    got, _ = weights("off", **sel, **{"targets.baselines": False})
    assert got == {"zcr": 0.7, "rms": 0.3}
    # hand-named targets combine with a selection: add one, drop one, reweigh a baseline
    got, _ = weights("both", **sel, **{"targets.pretext": ["f0=0.5", "rms=0", "mfcc=2"]})
    assert got == {"zcr": 0.7, "f0": 0.5, "mfcc": 2.0, "logmel": 1.0}
    # without a selection the baselines are off unless asked for, and alone they are a target
    assert weights("plain", **{"targets.pretext": ["rms"]})[0] == {"rms": 1.0}
    assert weights("only", **{"targets.baselines": True})[0] == {"logmel": 1.0, "mfcc": 1.0}
    with pytest.raises(UserError, match="no target"):
        weights("none")


def test_cli_combines_pretext_with_a_selection_and_turns_baselines_off(tmp_path, monkeypatch):
    """The user's path: ``speechssl pretrain`` flags -> the config -> the resolved targets."""
    import json

    import speechssl.recipes.pretrain as recipe
    from speechssl.cli import main
    from speechssl.pseudolabels.targets import pretext_weights

    (tmp_path / "selection.json").write_text(
        json.dumps({"groups": {"softmax": {"selected": {"f0": 0.6, "rms": 0.4}}}})
    )
    seen = []
    monkeypatch.setattr(recipe, "run_pretrain", lambda cfg: seen.append(cfg.targets))
    base = ["pretrain", "--config", "data2vec-tiny", "--data.train", "x.jsonl.gz"]
    sel = ["--targets.pretext-from", str(tmp_path / "selection.json")]
    assert main([*base, *sel, "--targets.pretext", "zcr=0.5"]) == 0
    assert main([*base, *sel, "--no-targets.baselines"]) == 0
    both, off = (pretext_weights(t.pretext, t.pretext_from, t.baselines) for t in seen)
    assert both == {"f0": 0.6, "rms": 0.4, "zcr": 0.5, "logmel": 1.0, "mfcc": 1.0}
    assert off == {"f0": 0.6, "rms": 0.4}


def test_teacher_target_is_wired_and_part_of_the_spec(corpus, tmp_path):
    """``targets.teacher-target`` reaches the teacher; a run resumed with another reading (or
    one written before the choice existed, whose spec lacks it) is refused, not mixed."""
    old = _config(
        "data2vec-tiny", corpus, tmp_path / "run", **{"targets.teacher_target": "residual"}
    )
    first = build_trainer(old)
    assert first.model.teacher.target == "residual"
    assert first.model_spec["heads"]["teacher_target"] == "residual"
    first.train_step()
    first.save()
    assert (
        build_trainer(_config("data2vec-tiny", corpus, tmp_path / "x")).model.teacher.target
        == "ffn"
    )
    resumed = build_trainer(_config("data2vec-tiny", corpus, tmp_path / "run", resume=True))
    with pytest.raises(UserError, match=r'"teacher_target": "residual".*this run builds.*"ffn"'):
        resumed.fit()
    hubert = build_trainer(_config("hubert-tiny", corpus, tmp_path / "h"))
    assert "teacher_target" not in hubert.model_spec["heads"]  # old hubert runs still resume
