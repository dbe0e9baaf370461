"""CTC probes (phone recognition): edit counts, decoding, learning, errors, the so762 preset."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from speechssl import progress
from speechssl.cli import main
from speechssl.data.batching import get_label
from speechssl.data.manifest import Row, build_cutset
from speechssl.errors import UserError
from speechssl.evaluation.ctc_probe import (
    CtcProbe,
    CtcTraining,
    ctc_min_frames,
    edit_counts,
    greedy_decode,
    score,
    train_ctc_probe,
)
from speechssl.evaluation.features import extract_features
from speechssl.evaluation.probe_task import run_probe_on
from speechssl.evaluation.tasks import Task, build_task, default_data_root, split_cuts
from speechssl.models.upstream import FbankUpstream

TONES = {"a": 300.0, "b": 800.0, "c": 1800.0, "d": 3500.0}


def _levenshtein(ref: list[str], hyp: list[str]) -> int:
    """Plain dynamic-programming edit distance: the independent reference."""
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d[0] = d.copy(), i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return int(d[-1])


def test_edit_counts_match_a_hand_alignment():
    # a=a, b->x (S), c=c, d=d, e inserted (I): the only alignment of cost 2; then k, m deleted.
    m = edit_counts(["a b c d", "k l m"], ["a x c d e", "l"])
    assert (m["substitutions"], m["deletions"], m["insertions"]) == (1, 2, 1)
    assert m["ref_tokens"] == 7
    assert m["per"] == pytest.approx(100 * 4 / 7)
    assert edit_counts(["a b"], [""])["per"] == 100.0  # predicting nothing
    rng = np.random.default_rng(0)
    for _ in range(30):
        ref = list(rng.choice(list("abcd"), rng.integers(1, 8)))
        hyp = list(rng.choice(list("abcde"), rng.integers(0, 8)))
        m = edit_counts([" ".join(ref)], [" ".join(hyp)])
        assert m["substitutions"] + m["deletions"] + m["insertions"] == _levenshtein(ref, hyp)


def test_greedy_decode_merges_repeats_and_drops_blanks():
    path = torch.tensor([[0, 1, 1, 0, 1, 2, 2, 0, 3, 3]])
    log_probs = torch.nn.functional.one_hot(path, 4).float().log()
    assert greedy_decode(log_probs, torch.tensor([10])) == [[1, 1, 2, 3]]
    assert greedy_decode(log_probs, torch.tensor([7])) == [[1, 1, 2]]  # padding ignored
    assert ctc_min_frames([1, 1, 2]) == 4 and ctc_min_frames([1, 2, 3]) == 3


def _planted(n: int, rng, proto: np.ndarray):
    """Utterances of 2-6 tokens; each token is 3-5 frames of its prototype (row 0: silence)
    plus noise, with 1-2 silence frames between tokens; two layers, the second pure noise."""
    vocab, dim = len(proto) - 1, proto.shape[1]
    xs, ys = [], []
    for _ in range(n):
        tokens = rng.integers(1, vocab + 1, rng.integers(2, 7))
        frames = []
        for t in tokens:
            frames += [proto[0]] * int(rng.integers(1, 3)) + [proto[t]] * int(rng.integers(3, 6))
        f = np.asarray(frames) + 0.3 * rng.standard_normal((len(frames), dim))
        noise = rng.standard_normal(f.shape)
        xs.append(torch.tensor(np.stack([f, noise], 1), dtype=torch.float16))
        ys.append(torch.tensor(tokens))
    return xs, ys


def test_ctc_probe_learns_planted_tokens_and_weights_the_right_layer():
    rng = np.random.default_rng(0)
    vocab = [f"p{k}" for k in range(1, 6)]
    proto = 2 * rng.standard_normal((len(vocab) + 1, 12))
    x, y = _planted(120, rng, proto)
    x_dev, y_dev = _planted(30, rng, proto)
    x_test, y_test = _planted(30, rng, proto)
    refs = [[" ".join(vocab[t - 1] for t in s.tolist()) for s in ys] for ys in (y_dev, y_test)]
    allx = torch.cat(x).float()
    torch.manual_seed(0)
    model = CtcProbe(allx.mean(0), allx.std(0), len(vocab) + 1, head="linear")
    training = CtcTraining(epochs=20, lr=1e-2, batch_size=8)
    model, hist = train_ctc_probe(model, x, y, x_dev, refs[0], vocab, training)
    m = score(model, x_test, refs[1], vocab)
    assert m["per"] < 10, m
    assert hist["dev_per"] < 10 and hist["best_epoch"] <= hist["epochs_run"]
    assert model.layers.weights()[0] > 0.5  # the informative layer
    # Tokens shuffled across utterances cannot be learnt (a context head, shorter training).
    perm = rng.permutation(len(y))
    shuffled = [y[i] for i in perm]
    torch.manual_seed(0)
    model = CtcProbe(allx.mean(0), allx.std(0), len(vocab) + 1, head="context")
    short = CtcTraining(epochs=6, lr=1e-2, batch_size=8)
    model, _ = train_ctc_probe(model, x, shuffled, x_dev, refs[0], vocab, short)
    assert score(model, x_test, refs[1], vocab)["per"] > 50


def _train_planted_linear(seed: int, n_vocab: int, n_train: int, n_dev: int, training):
    """A linear CTC probe trained on planted data; returns its history."""
    rng = np.random.default_rng(seed)
    vocab = [f"p{k + 1}" for k in range(n_vocab)]
    proto = 2 * rng.standard_normal((n_vocab + 1, 12))
    x, y = _planted(n_train, rng, proto)
    x_dev, y_dev = _planted(n_dev, rng, proto)
    refs = [" ".join(vocab[t - 1] for t in s.tolist()) for s in y_dev]
    allx = torch.cat(x).float()
    model = CtcProbe(allx.mean(0), allx.std(0), n_vocab + 1, head="linear")
    return train_ctc_probe(model, x, y, x_dev, refs, vocab, training)[1]


def _epoch_lines(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("ctc probe:")]


def test_ctc_probe_reports_each_epoch_with_its_dev_per(capsys, monkeypatch):
    monkeypatch.setattr(progress, "EVERY_S", 0.0)  # a line every epoch off a terminal
    hist = _train_planted_linear(1, 3, 24, 8, CtcTraining(epochs=3, lr=1e-2, batch_size=8))
    lines = _epoch_lines(capsys)
    assert [ln.split(",")[0] for ln in lines] == [f"ctc probe: {k}/3 epochs" for k in (1, 2, 3)]
    shown = [float(ln.split("dev PER ")[1].split()[0]) for ln in lines]
    assert shown == pytest.approx(hist["dev_curve"], abs=0.051)  # the curve, to one decimal
    best = [float(ln.split("(best ")[1].split(")")[0]) for ln in lines]
    assert best == pytest.approx(np.minimum.accumulate(hist["dev_curve"]), abs=0.051)


def test_ctc_probe_early_stop_still_reports_its_last_epoch(capsys, monkeypatch):
    """A probe that cannot learn (lr ~ 0) stops after ``patience`` stale epochs; the epoch that
    stopped it is shown too."""
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    training = CtcTraining(epochs=6, lr=1e-12, batch_size=8, patience=2)
    hist = _train_planted_linear(2, 2, 16, 4, training)
    assert len(hist["dev_curve"]) == 3  # the best epoch, then two stale ones
    lines = _epoch_lines(capsys)
    assert [ln.split(",")[0] for ln in lines] == [f"ctc probe: {k}/6 epochs" for k in (1, 2, 3)]


@pytest.fixture(scope="module")
def tone_phones(tmp_path_factory):
    """48 cuts by 8 speakers: each 'phone' is an 80 ms tone, 40 ms of silence between."""
    root = tmp_path_factory.mktemp("tonephones")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(48):
        tokens = list(rng.choice(list(TONES), rng.integers(2, 5)))
        parts = [np.zeros(640)]
        for t in tokens:
            n = np.arange(1280) / 16000
            parts += [0.3 * np.sin(2 * np.pi * TONES[t] * n), np.zeros(640)]
        x = np.concatenate(parts) + 0.003 * rng.standard_normal(sum(len(p) for p in parts))
        path = root / f"u{i:02d}.flac"
        sf.write(path, x.astype(np.float32), 16000)
        labels = {"phones": " ".join(tokens), "speaker": f"spk{i % 8}"}
        rows.append(Row(path, labels, cut_id=path.stem))
    cuts, _ = build_cutset(rows, progress=False)
    return cuts


def _task(cuts, test_extra: str | None = None) -> Task:
    splits = split_cuts(copy.deepcopy(cuts), "phones", "speaker", seed=0)
    if test_extra is not None:  # a token that only the test split has
        cut = next(iter(splits["test"]))
        sup = cut.supervisions[0]
        sup.custom["phones"] = sup.custom["phones"] + " " + test_extra
    return Task("tone-phones", "ctc", "phones", splits)


def test_ctc_task_on_tones_learns_and_counts_unseen_tokens(tone_phones):
    feats = extract_features(FbankUpstream(), list(tone_phones), None, "fbank", progress=False)
    task = _task(tone_phones, test_extra="zz")
    r = run_probe_on(
        task,
        feats,
        seeds=[0, 1],
        ctc=CtcTraining(epochs=30, lr=1e-2, batch_size=4, patience=30),
    )
    s = r["summary"]
    assert r["unseen_tokens"] == {"train": 0, "dev": 0, "test": 1} and r["unseen_types"] == ["zz"]
    assert r["vocab"] == sorted(TONES)
    assert r["tokens"]["test"] == sum(
        len(str(get_label(c, "phones")).split()) for c in task.splits["test"]
    )
    assert s["per"]["mean"] < 25, r["per_seed"]
    # The unseen token is an error every time (a deletion or a substitution).
    for m in r["per_seed"]:
        assert m["deletions"] + m["substitutions"] >= 1
        errors = m["substitutions"] + m["deletions"] + m["insertions"]
        assert m["per"] == pytest.approx(100 * errors / m["ref_tokens"])
    assert len(r["per_seed"]) == 2 and s["per"]["std"] is not None


def test_ctc_short_cuts_are_an_error_or_counted(tone_phones):
    feats = extract_features(FbankUpstream(), list(tone_phones), None, "fbank", progress=False)
    task = _task(tone_phones)
    victim = next(iter(task.splits["train"]))
    victim.supervisions[0].custom["phones"] = " ".join(["a"] * 200)  # 200 tokens, < 1 s
    with pytest.raises(UserError, match=r"1 cuts \(1 in train.*--skip-short"):
        run_probe_on(task, feats, seeds=[0], ctc=CtcTraining(epochs=1))
    r = run_probe_on(task, feats, seeds=[0], ctc=CtcTraining(epochs=1), skip_short=True)
    assert r["too_short"] == {"train": 1, "dev": 0, "test": 0}


def test_cli_ctc_errors_are_one_line(tone_phones, tmp_path, capsys):
    cuts = list(copy.deepcopy(tone_phones))  # a copy whose first cut has no phones label
    del cuts[0].supervisions[0].custom["phones"]
    path = tmp_path / "missing.jsonl.gz"
    type(tone_phones).from_cuts(cuts).to_file(path)
    argv = ["probe", "--upstream", "fbank", "--cuts", str(path), "--label", "phones"]
    argv += ["--kind", "ctc", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r")]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert "has no label 'phones'" in err[-1] and len(err) == 1
    cuts[0].supervisions[0].custom["phones"] = "  "
    type(tone_phones).from_cuts(cuts).to_file(path)
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert "empty 'phones' token sequence" in err[-1] and len(err) == 1


def test_cli_ctc_probe_writes_per(tone_phones, tmp_path, capsys):
    path = tmp_path / "tones.jsonl.gz"
    tone_phones.to_file(path)
    argv = ["probe", "--upstream", "fbank", "--cuts", str(path), "--label", "phones"]
    argv += ["--kind", "ctc", "--ctc-head", "context", "--seeds", "0", "--epochs", "2"]
    argv += ["--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    r = json.loads((tmp_path / "r" / "results.json").read_text())
    assert r["kind"] == "ctc" and r["head"] == "context" and r["training"]["epochs"] == 2
    assert "| PER |" in (tmp_path / "r" / "results.md").read_text()
    assert "| deletions |" in capsys.readouterr().out


SO762 = default_data_root() / "speechocean762-train"


@pytest.mark.skipif(not (SO762 / "labels.csv").is_file(), reason="shared data not present")
def test_so762_phones_splits_by_speaker():
    task = build_task("so762-phones", seed=0)
    assert task.kind == "ctc" and task.label == "phones"
    speakers = {n: {get_label(c, "speaker") for c in s} for n, s in task.splits.items()}
    assert sum(len(s) for s in task.splits.values()) == 1340
    assert sum(len(s) for s in speakers.values()) == 67  # no speaker in two splits
    assert all(len(s) >= 5 for s in speakers.values())
    assert all(str(get_label(c, "phones")).split() for c in task.splits["test"])


def test_frame_stats_equal_those_of_all_frames_at_once():
    from speechssl.evaluation.probe_task import _frame_stats

    xs = [torch.randn(n, 3, 4).half() for n in (5, 9, 2)]
    every = torch.cat(xs).float()
    mean, std = _frame_stats(xs)
    torch.testing.assert_close(mean, every.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(std, every.std(0), atol=1e-4, rtol=1e-4)
