"""Shar directories: export, read back through load_cuts, train on them, resume an export."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from speechssl.audio.io import load_cut
from speechssl.cli import main
from speechssl.config import build
from speechssl.data import shar
from speechssl.data.manifest import Row, build_cutset, labels_of, load_cut_sets, load_cuts
from speechssl.data.pretrain import PretrainDataset
from speechssl.errors import UserError
from speechssl.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

N = 9


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """9 int16 WAVs (sines and noise, 0.4-1.2 s, one at full scale), labelled by a CSV-like
    row list through the library's own checks, written as a manifest."""
    root = tmp_path_factory.mktemp("shar")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N):
        n = 6400 + 1600 * i
        if i % 2:
            x = rng.integers(-12000, 12000, n)
        else:
            x = 9000 * np.sin(2 * np.pi * (120 + 40 * i) * np.arange(n) / 16000)
        x = np.asarray(x, dtype=np.int16)
        if i == 0:
            x[:2] = [32767, -32768]  # full scale survives FLAC
        sf.write(root / f"utt{i}.wav", x, 16000, subtype="PCM_16")
        labels = {"speaker": f"spk{i % 3}", "emotion": ["calm", "angry"][i % 2]}
        rows.append(Row(root / f"utt{i}.wav", labels))
    cuts, _ = build_cutset(rows, progress=False)
    path = root / "cuts.jsonl.gz"
    cuts.to_file(path)
    return path


@pytest.fixture(scope="module")
def shar_dir(manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "corpus"
    report = shar.export_shar(load_cuts(manifest), out, shard_size=4, progress=False)
    assert (report.cuts, report.shards, report.written, report.resumed) == (N, 3, 3, 0)
    return out


def test_round_trip_keeps_ids_durations_labels_and_samples(manifest, shar_dir):
    names = sorted(p.name for p in shar_dir.iterdir())
    assert names == [f"cuts.{i:06d}.jsonl.gz" for i in range(3)] + [
        f"recording.{i:06d}.tar" for i in range(3)
    ]
    ref = {c.id: c for c in load_cuts(manifest)}
    got = load_cuts(shar_dir)
    assert got.is_lazy and len(got) == N  # counted from the manifests, no audio read
    cuts = list(got)
    assert sorted(c.id for c in cuts) == sorted(ref)
    assert [c.id for c in cuts] != [c.id for c in load_cuts(manifest)]  # shuffled before sharding
    for cut in cuts:
        want = ref[cut.id]
        assert cut.duration == want.duration and cut.num_samples == want.num_samples
        assert labels_of(cut) == labels_of(want)
        assert cut.custom is None  # the reader's shard bookkeeping is not a label
        assert cut.recording.sources[0].type == "memory"
        a, b = load_cut(cut, 16000), load_cut(want, 16000)
        np.testing.assert_array_equal(a, b)  # FLAC is lossless for 16-bit audio
        _, sr = sf.read(want.recording.sources[0].source, dtype="int16")
        assert sr == 16000


def test_shard_order_is_the_same_every_pass(shar_dir):
    cuts = load_cuts(shar_dir)
    assert [c.id for c in cuts] == [c.id for c in cuts]


def test_manifests_and_shar_directories_chain(manifest, shar_dir):
    both = load_cut_sets([shar_dir, manifest])
    assert both.is_lazy and len(both) == 2 * N
    assert sorted(c.id for c in both) == sorted(2 * [c.id for c in load_cuts(manifest)])


def _trainer_sampler(cuts, rank: int, world: int, seconds: float = 2.0):
    """The sampler the Trainer builds for a CutSet, as rank ``rank`` of ``world`` builds it."""
    stub = SimpleNamespace(
        dist=SimpleNamespace(rank=rank, world_size=world),
        config=SimpleNamespace(batch_duration=seconds, seed=3),
    )
    return Trainer._make_sampler(stub, cuts)


def _epochs(sampler, epochs: int) -> list[list[list[str]]]:
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out.append([[c.id for c in batch] for batch in sampler])
    return out


def test_every_rank_gets_the_same_number_of_batches(shar_dir):
    ranks = [_epochs(_trainer_sampler(load_cuts(shar_dir), r, 2), 3) for r in range(2)]
    for epoch in range(3):
        a, b = ranks[0][epoch], ranks[1][epoch]
        assert len(a) == len(b) >= 1
        ids_a, ids_b = {i for bt in a for i in bt}, {i for bt in b for i in bt}
        assert not ids_a & ids_b  # each cut on one rank only within an epoch
    assert ranks[0][0] != ranks[0][1]  # reshuffled by epoch


def test_utterance_sampler_is_even_across_ranks(shar_dir, monkeypatch):
    from speechssl.data.multicrop import utterance_sampler

    counts = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        sampler = utterance_sampler(load_cuts(shar_dir), batch_size=2, seed=0)
        batches = _epochs(sampler, 2)
        assert all(len(b) == 2 for epoch in batches for b in epoch)
        counts.append([len(epoch) for epoch in batches])
    assert counts[0] == counts[1] == [math.floor(N / 4)] * 2


def test_pretraining_batches_from_shar(manifest, shar_dir):
    ref = {c.id: c for c in load_cuts(manifest)}
    sampler = _trainer_sampler(load_cuts(shar_dir), 0, 1, seconds=1.5)
    dataset = PretrainDataset(lambda n: n // 320, crop_seconds=None)
    loader = torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None)
    seen = []
    for batch in loader:
        for row, cid in enumerate(batch.cut_ids):
            want = torch.from_numpy(load_cut(ref[cid], 16000))
            n = int(batch.lengths[row])
            assert n == len(want) and torch.equal(batch.audio[row, :n], want)
            assert int(batch.frames[row]) == n // 320
        seen += batch.cut_ids
    assert seen and len(seen) == len(set(seen))


def test_pretrain_recipe_trains_on_a_shar_directory(shar_dir, tmp_path):
    from speechssl.recipes.pretrain import PretrainConfig, run_pretrain
    from speechssl.training import read_metrics

    cli = {
        "data.train": [str(shar_dir)],
        "data.crop_seconds": 0.5,
        "train.max_steps": 2,
        "train.batch_duration": 2.0,
        "train.warmup_steps": 1,
        "train.num_workers": 0,
        "train.log_every": 1,
        "train.ckpt_every": 100,
        "monitor.every": 0,
        "out": str(tmp_path / "run"),
    }
    run_pretrain(build(PretrainConfig, cli, "data2vec-tiny"))
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in records)


def test_interrupted_export_is_refused_then_resumed(manifest, tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    real = shar._write_shard
    calls = []

    def dies_on_third(cuts, work):
        calls.append(len(cuts))
        if len(calls) == 3:
            (work / "recording.tar").write_bytes(b"half")  # a half-written shard
            raise KeyboardInterrupt
        real(cuts, work)

    monkeypatch.setattr(shar, "_write_shard", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        shar.export_shar(load_cuts(manifest), out, shard_size=3, progress=False)
    assert sorted(p.name for p in out.glob("cuts.*")) == [
        "cuts.000000.jsonl.gz",
        "cuts.000001.jsonl.gz",
    ]
    with pytest.raises(UserError, match="has not finished"):
        load_cuts(out)
    with pytest.raises(UserError, match="other cuts or with other options"):
        shar.export_shar(load_cuts(manifest), out, shard_size=2, progress=False)

    monkeypatch.setattr(shar, "_write_shard", real)
    report = shar.export_shar(load_cuts(manifest), out, shard_size=3, progress=False)
    assert (report.shards, report.written, report.resumed) == (3, 1, 2)
    assert not shar.partial_dir(out).exists()
    assert sorted(c.id for c in load_cuts(out)) == sorted(c.id for c in load_cuts(manifest))
    with pytest.raises(UserError, match="already holds a finished Shar export"):
        shar.export_shar(load_cuts(manifest), out, shard_size=3, progress=False)


def test_bad_folders_are_one_line_errors(manifest, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a lhotse Shar directory"):
        load_cuts(tmp_path)
    with pytest.raises(UserError, match="not an empty folder"):
        shar.export_shar(load_cuts(manifest), tmp_path, progress=False)
    with pytest.raises(UserError, match="shard size must be at least 1"):
        shar.export_shar(load_cuts(manifest), tmp_path / "new", shard_size=0, progress=False)


def test_cli_export_and_info(manifest, tmp_path, capsys):
    out = tmp_path / "s"
    args = ["data", "export-shar", "--cuts", str(manifest), "--out", str(out)]
    assert main([*args, "--shard-size", "5"]) == 0
    assert f"wrote {N} cuts" in capsys.readouterr().out
    assert (tmp_path / "s.run" / "run.json").is_file()  # the run folder is beside, not inside
    assert main(["data", "info", "--cuts", str(out)]) == 0
    assert f"utterances: {N}" in capsys.readouterr().out
    split = ["data", "split", "--cuts", str(out), "--out", str(tmp_path / "split")]
    assert main([*split, "--ratios", "train=0.5,test=0.5"]) == 2
    assert "hold their audio in memory" in capsys.readouterr().err
    assert main([*args, "--shard-size", "5"]) == 2
    assert "already holds a finished Shar export" in capsys.readouterr().err
    missing = tmp_path / "s" / "recording.000001.tar"
    missing.unlink()
    assert main(["data", "info", "--cuts", str(out)]) == 2
    assert "incomplete (no recording.000001.tar)" in capsys.readouterr().err
