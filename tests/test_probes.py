"""Probes: metrics, layer weighting, the feature cache, tasks, and learning on easy data."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.metrics import f1_score

from speechssl.data.manifest import Row, build_cutset
from speechssl.errors import UserError
from speechssl.evaluation.features import extract_features
from speechssl.evaluation.probe_task import frame_data, run_probe_on
from speechssl.evaluation.probes import (
    LayerWeights,
    ProbeTraining,
    fit_and_score,
    frame_labels,
    macro_f1,
)
from speechssl.evaluation.task_presets import PRESETS
from speechssl.evaluation.tasks import Task, build_task, split_cuts
from speechssl.models.upstream import FbankUpstream, UpstreamOutput
from speechssl.recipes.probe import ProbeConfig

FREQS = (300.0, 700.0, 1500.0)


@pytest.fixture(scope="module")
def tone_cuts(tmp_path_factory):
    """60 short tones, 3 classes by frequency, 4 'speakers'; FLAC written here."""
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        c = i % 3
        dur = rng.uniform(0.3, 0.6)
        t = np.arange(int(dur * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * FREQS[c] * (1 + 0.03 * rng.standard_normal()) * t)
        x += 0.01 * rng.standard_normal(t.size)
        path = root / f"tone{i:02d}.flac"
        sf.write(path, x.astype(np.float32), 16000)
        rows.append(Row(path, {"tone": str(c), "speaker": f"spk{i % 4}"}, cut_id=path.stem))
    cuts, _ = build_cutset(rows, progress=False)
    return cuts


class CountingUpstream(FbankUpstream):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, wave, lengths=None) -> UpstreamOutput:
        self.calls += 1
        out = super().forward(wave, lengths)
        h = out.hidden_states[0]
        return UpstreamOutput([h, 2 * h], out.mask)  # two layers, to test weighting


class NoiseThenSignal(FbankUpstream):
    """Layer 0 is seeded noise, layer 1 the fbank: only layer 1 knows the tone."""

    def forward(self, wave, lengths=None) -> UpstreamOutput:
        out = super().forward(wave, lengths)
        h = out.hidden_states[0]
        gen = torch.Generator().manual_seed(int(wave.shape[-1]))
        return UpstreamOutput([torch.randn(h.shape, generator=gen), h], out.mask)


def test_macro_f1_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = int(rng.integers(2, 7))
        y = rng.integers(0, k, 50)
        p = rng.integers(0, k - 1, 50)  # some classes never predicted
        assert macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro"))


def test_layer_weights():
    lw = LayerWeights(5)
    with torch.no_grad():
        lw.logits.copy_(torch.randn(5))
    assert float(lw.weights().detach().sum()) == pytest.approx(1.0)
    x = torch.randn(3, 5, 4)
    assert torch.allclose(lw(x), (x * lw.weights()[None, :, None]).sum(1), atol=1e-6)
    fixed = LayerWeights(5, layer=2)
    assert torch.equal(fixed(x), x[:, 2])
    assert not fixed.logits.requires_grad
    assert LayerWeights(5, layer=-1).layer == 4
    with pytest.raises(ValueError):
        LayerWeights(5, layer=5)


def test_cache_hit_does_not_rerun(tone_cuts, tmp_path):
    up = CountingUpstream()
    cuts = list(tone_cuts)
    a = extract_features(up, cuts, tmp_path, "counting", batch_size=8)
    calls = up.calls
    assert calls > 0 and a.num_layers == 2 and len(a) == 60
    b = extract_features(up, cuts, tmp_path, "counting", batch_size=8)
    assert up.calls == calls
    assert isinstance(b.layers[0], np.memmap)
    np.testing.assert_array_equal(np.asarray(a.layers[1]), np.asarray(b.layers[1]))
    # Frames of one cut equal the upstream on that cut alone (float16 on disk).
    wave = torch.from_numpy(cuts[5].load_audio()[0])[None]
    alone = FbankUpstream()(wave).hidden_states[0][0].numpy()
    np.testing.assert_allclose(b.frames(5, 0), alone, atol=2e-2, rtol=1e-2)
    pooled = b.pooled()
    assert pooled.shape == (60, 2, 160)
    np.testing.assert_allclose(pooled[5, 0, :80], b.frames(5, 0).mean(0), rtol=1e-4, atol=1e-4)
    # Other cuts (or another upstream id) are another cache entry.
    extract_features(up, cuts[:10], tmp_path, "counting", batch_size=8)
    assert up.calls > calls


def test_probe_learns_and_shuffled_stays_near_chance(tone_cuts):
    feats = extract_features(FbankUpstream(), list(tone_cuts), None, "fbank")
    task = Task("tones", "utterance", "tone", split_cuts(tone_cuts, "tone", "utterance", seed=0))
    # 42 training tones: one batch per epoch, so a larger step than the default.
    r = run_probe_on(task, feats, seeds=[0, 1], training=ProbeTraining(epochs=60, lr=1e-2))
    assert r["summary"]["accuracy"]["mean"] > 0.9
    assert len(r["per_seed"]) == 2 and r["layer_weights"] == [1.0]

    rng = np.random.default_rng(1)
    y = torch.from_numpy(rng.permutation(np.arange(300) % 3))
    x = torch.randn(300, 1, 8)  # noise features: nothing to learn
    parts = {"train": slice(0, 200), "dev": slice(200, 240), "test": slice(240, 300)}
    res, _ = fit_and_score(
        {k: x[s] for k, s in parts.items()},
        {k: y[s] for k, s in parts.items()},
        3,
        None,
        "mlp",
        ProbeTraining(epochs=20),
        [0, 1, 2],
    )
    assert np.mean([m["accuracy"] for m in res]) < 0.55


def test_chosen_layer_is_respected(tone_cuts):
    feats = extract_features(CountingUpstream(), list(tone_cuts), None, "counting")
    task = Task("tones", "utterance", "tone", split_cuts(tone_cuts, "tone", "utterance", seed=0))
    r = run_probe_on(task, feats, seeds=[0], layer=1, training=ProbeTraining(epochs=5))
    assert r["layer_weights"] == [0.0, 1.0]
    r = run_probe_on(task, feats, seeds=[0], training=ProbeTraining(epochs=5))
    assert sum(r["layer_weights"]) == pytest.approx(1.0)
    with pytest.raises(UserError, match="out of range"):
        run_probe_on(task, feats, layer=7)


def test_frame_labels_follow_the_frame_rate():
    ali = np.repeat(np.arange(10), 10)  # 1 s at 100 fps, label = tenth of a second
    assert np.array_equal(frame_labels(ali, 100, 100.0), ali)
    half = frame_labels(ali, 50, 50.0)  # 20 ms frames: centre of frame j at (j+.5)*20 ms
    assert half.shape == (50,) and np.array_equal(half, np.repeat(np.arange(10), 5))
    assert frame_labels(ali, 98, 100.0).shape == (98,)  # log-mel drops the tail
    assert frame_labels(ali, 120, 100.0)[-1] == 9  # clipped at the alignment's end


def test_frame_probe_separates_planted_frames_and_not_shuffled_ones():
    # Frames of 5 classes around well separated centres: a linear frame probe must find them;
    # with the training labels shuffled there is nothing to learn (chance is 0.2).
    g = torch.Generator().manual_seed(0)
    centres = 4.0 * torch.randn(5, 1, 6, generator=g)
    y = torch.randint(0, 5, (600,), generator=g)
    x = (centres[y] + torch.randn(600, 1, 6, generator=g)).half()  # float16, as cached
    parts = {"train": slice(0, 400), "dev": slice(400, 500), "test": slice(500, 600)}
    xs = {k: x[v] for k, v in parts.items()}
    training = ProbeTraining(epochs=20, lr=1e-2, batch_size=64)
    res, _ = fit_and_score(xs, {k: y[v] for k, v in parts.items()}, 5, None, "linear",
                           training, [0], frame=True)  # fmt: skip
    assert res[0]["accuracy"] > 0.95
    shuffled = {k: y[v] for k, v in parts.items()}
    shuffled["train"] = shuffled["train"][torch.randperm(400, generator=g)]
    shuffled["dev"] = shuffled["dev"][torch.randperm(100, generator=g)]
    res, _ = fit_and_score(xs, shuffled, 5, None, "linear", training, [0, 1], frame=True)
    assert np.mean([m["accuracy"] for m in res]) < 0.4


def test_bad_task_lists_presets(tone_cuts, tmp_path):
    with pytest.raises(UserError) as err:
        build_task("nope")
    for name in PRESETS:
        assert name in str(err.value)
    path = tmp_path / "c.jsonl.gz"
    tone_cuts.to_file(path)
    with pytest.raises(UserError, match="no label 'emotion'"):
        build_task(cuts=path, label="emotion")
    with pytest.raises(UserError, match="needs --cuts"):
        build_task("synth-language")
    with pytest.raises(UserError, match="at least 3 speakers"):
        split_cuts(
            tone_cuts.filter(lambda c: c.supervisions[0].custom["speaker"] < "spk2").to_eager(),
            "tone",
            "speaker",
        )
    task = build_task(cuts=path, label="tone", split_by="speaker")
    assert sum(len(s) for s in task.splits.values()) == 60
    spk = [{c.supervisions[0].custom["speaker"] for c in s} for s in task.splits.values()]
    assert not (spk[0] & spk[1]) and not (spk[0] & spk[2])


def test_run_probe_writes_results(tone_cuts, tmp_path):
    import json

    from speechssl.recipes.probe import run_probe

    path = tmp_path / "tones.jsonl.gz"
    tone_cuts.to_file(path)
    cfg = ProbeConfig(
        upstream="fbank",
        cuts=path,
        label="tone",
        split_by="utterance",
        out=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        seeds=[0],
        epochs=3,
    )
    r = run_probe(cfg)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["summary"]["accuracy"]["mean"] == r["summary"]["accuracy"]["mean"]
    assert "| accuracy |" in (tmp_path / "run" / "results.md").read_text()
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_frame_task_on_synthetic_speech(tmp_path):
    from speechssl.data.synth import synthesize_corpus

    cuts = synthesize_corpus(tmp_path / "synth", 0.5, seed=0, progress=False)
    task = build_task("synth-phoneme", cuts=tmp_path / "synth" / "cuts.jsonl.gz")
    feats = extract_features(FbankUpstream(), task.all_cuts(), None, "fbank")
    r = run_probe_on(task, feats, seeds=[0], training=ProbeTraining(epochs=15, lr=1e-2))
    index = feats.index()
    for name, split in task.splits.items():
        n = sum(int(feats.offsets[index[c.id] + 1] - feats.offsets[index[c.id]]) for c in split)
        assert r["frames"][name] == n  # one label per upstream frame
    # log-mel frames tell phonemes apart far better than always guessing the commonest one
    # (measured: 0.47 against 0.16)
    _, y, _ = frame_data(task, feats, index)
    majority = float(torch.bincount(y["test"]).max()) / len(y["test"])
    assert r["summary"]["accuracy"]["mean"] > 2 * majority
    assert len(cuts) == sum(r["split_sizes"].values())


def test_embed_cuts_keeps_cut_order(tone_cuts):
    from speechssl.evaluation.verification import embed_cuts

    class Lengths(torch.nn.Module):
        def embed(self, wave, lengths):
            return torch.stack([lengths.float(), wave.abs().sum(1)], 1)

    cuts = list(tone_cuts)[:10]
    emb = embed_cuts(Lengths(), cuts, batch_size=3)
    assert emb[:, 0].tolist() == [float(c.num_samples) for c in cuts]


def test_summarize_reports_sample_std_and_no_spread_for_one_seed():
    import statistics

    from speechssl.evaluation.probes import summarize

    runs = [{"accuracy": 0.5}, {"accuracy": 0.7}, {"accuracy": 0.9}]
    s = summarize(runs)["accuracy"]
    assert s["mean"] == pytest.approx(0.7) and s["std"] == pytest.approx(
        statistics.stdev([0.5, 0.7, 0.9])
    )
    assert summarize(runs[:1])["accuracy"]["std"] is None


def test_a_kind_a_preset_does_not_have_is_refused_not_ignored(tmp_path, capsys):
    """`probe --task fsdd-digit --kind ctc` used to run the digit classifier silently."""
    from speechssl.cli import main

    with pytest.raises(UserError, match="synth-speaker is of kind utterance; --kind ctc"):
        build_task("synth-speaker", kind="ctc")
    argv = ["probe", "--upstream", "fbank", "--task", "fsdd-digit", "--kind", "ctc",
            "--label", "digit", "--out", str(tmp_path / "p")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["speechssl: error: task fsdd-digit is of kind utterance; --kind ctc needs a "
                   "custom task (--cuts with --label)"]  # fmt: skip


def test_split_by_variant_is_a_choice_of_probe_and_finetune(capsys):
    """The synthetic corpus' ``variant`` split rule reaches the command line of both."""
    from speechssl.cli import main
    from speechssl.config import build
    from speechssl.recipes.finetune import FinetuneConfig

    for command in ("probe", "finetune"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
        assert "--split-by {speaker,variant,utterance,split,all}" in capsys.readouterr().out
    values = {"upstream": "fbank", "out": "p", "cuts": "c.jsonl.gz", "label": "language"}
    for cls in (ProbeConfig, FinetuneConfig):
        assert build(cls, {**values, "split_by": "variant"}).split_by == "variant"
        with pytest.raises(UserError, match="'voice' is not a valid"):
            build(cls, {**values, "split_by": "voice"})


def test_select_layer_keeps_the_layer_best_on_dev(tone_cuts):
    feats = extract_features(NoiseThenSignal(), list(tone_cuts), None, "noise-signal")
    task = Task("tones", "utterance", "tone", split_cuts(tone_cuts, "tone", "utterance", seed=0))
    training = ProbeTraining(epochs=40, lr=1e-2)
    r = run_probe_on(task, feats, seeds=[0, 1], training=training, select_layer=True)
    sel = r["layer_selection"]
    assert sel["chosen"] == 1 and sel["by"] == "dev_accuracy" and len(sel["dev_by_layer"]) == 2
    assert sel["dev_by_layer"][1] > 0.9 > sel["dev_by_layer"][0]  # 3 tones: chance 1/3
    # The reported seeds are exactly a probe of the chosen layer.
    direct = run_probe_on(task, feats, seeds=[0, 1], training=training, layer=1)
    assert r["per_seed"] == direct["per_seed"] and r["layer_weights"] == [0.0, 1.0]
    with pytest.raises(UserError, match="not both"):
        run_probe_on(task, feats, layer=1, select_layer=True)
    no_dev = Task("tones", "utterance", "tone", {**task.splits, "dev": []})
    with pytest.raises(UserError, match="dev split"):
        run_probe_on(no_dev, feats, select_layer=True)
    verify = Task("tones", "verification", "speaker", task.splits)
    with pytest.raises(UserError, match="verification"):
        run_probe_on(verify, feats, select_layer=True)
