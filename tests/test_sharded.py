"""Per-cut jobs split across ranks (torchrun, gloo on CPU) give the one-process result exactly."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet

from speechssl.data.shards import ShardSet, ShardWriter, deal_batches, rank_folder
from speechssl.data.sorted_batches import duration_sorted_batches
from speechssl.training.distributed import DistInfo
from speechssl.training.sharded import run_sharded

sys.path.insert(0, str(Path(__file__).parent))
from launch import clean_env, free_port  # noqa: E402
from test_kmeans import tiny_corpus  # noqa: E402

DRIVER = Path(__file__).parent / "sharded_jobs.py"


class Cut:
    def __init__(self, id, duration):
        self.id, self.duration = id, duration


def fake_cuts(n=23, seed=0):
    rng = np.random.default_rng(seed)
    return [Cut(f"c{i:02d}", float(d)) for i, d in enumerate(rng.uniform(0.5, 9.0, n).round(1))]


@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("longest_first", [True, False])
def test_split_gives_every_cut_once_in_one_process_batches(world, longest_first):
    cuts = fake_cuts()
    dealt = deal_batches(cuts, world, 4, 20.0, longest_first)
    assert len(dealt) == world
    flat = sorted(i for rank in dealt for b in rank for i in b)
    assert flat == list(range(len(cuts)))  # every cut exactly once
    assert dealt == deal_batches(cuts, world, 4, 20.0, longest_first)  # deterministic
    one = duration_sorted_batches(cuts, 4, 20.0, longest_first)
    for r, rank in enumerate(dealt):
        assert rank == one[r::world]  # the one-process batches, round-robin
        # a rank rebatching its own cuts forms exactly those batches again (so outputs match)
        mine = [cuts[i] for b in rank for i in b]
        pos = [i for b in rank for i in b]
        again = duration_sorted_batches(mine, 4, 20.0, longest_first)
        assert [[pos[j] for j in b] for b in again] == rank
    loads = [sum(cuts[i].duration for b in rank for i in b) for rank in dealt]
    longest_batch = max(sum(cuts[i].duration for i in b) for b in one)
    assert max(loads) - min(loads) <= longest_batch


def square(calls):
    def compute(batch):
        calls.append([c.id for c in batch])
        for j, c in enumerate(batch):
            yield j, [np.full((int(c.duration), 2), c.duration, np.float32), np.array([j])]

    return compute


def test_two_ranks_resume_and_merge(tmp_path):
    cuts = fake_cuts(17)
    kw = dict(desc="test", batch_size=3, max_batch_seconds=math.inf, shard_cuts=3, timeout_s=5)
    rank1, rank0 = DistInfo(1, 2), DistInfo(0, 2)
    calls: list = []
    assert run_sharded(cuts, square(calls), tmp_path, "k", rank1, **kw) is None
    assert (rank_folder(tmp_path, 1, 2) / "done.json").is_file()

    # rank 0 is killed after two batches; its finished shards stay
    def dying(batch):
        if len(calls) >= 2:
            raise KeyboardInterrupt
        yield from square(calls)(batch)

    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        run_sharded(cuts, dying, tmp_path, "k", rank0, **kw)
    done_before = {c for b in calls for c in b}
    calls.clear()
    shards = run_sharded(cuts, square(calls), tmp_path, "k", rank0, **kw)
    redone = {c for b in calls for c in b}
    assert redone and not redone & done_before  # finished batches are not computed again
    mine = {cuts[i].id for b in deal_batches(cuts, 2, 3)[0] for i in b}
    assert redone | done_before == mine
    calls.clear()
    assert run_sharded(cuts, square(calls), tmp_path, "k", rank1, **kw) is None and not calls
    assert isinstance(shards, ShardSet) and len(shards) == len(cuts)
    got = dict(iter(shards))
    for c in cuts:
        assert np.array_equal(got[c.id][0], np.full((int(c.duration), 2), c.duration, np.float32))
    # another job key does not reuse these shards
    calls.clear()
    run_sharded(cuts, square(calls), tmp_path, "other", rank1, **kw)
    assert {c for b in calls for c in b} == {
        cuts[i].id for b in deal_batches(cuts, 2, 3)[1] for i in b
    }
    shards.remove()
    assert not tmp_path.exists()


def test_writer_drops_a_shard_without_its_index(tmp_path):
    w = ShardWriter(tmp_path, "k", ["a", "b"], [1.0, 1.0], shard_cuts=1)
    w.add("a", [np.zeros(1)])
    w.end_batch()
    (tmp_path / "shard-00001.npz").write_bytes(b"half")  # a killed write
    w2 = ShardWriter(tmp_path, "k", ["a", "b"], [1.0, 1.0], shard_cuts=1)
    assert w2.done("a") and not w2.done("b") and not (tmp_path / "shard-00001.npz").exists()
    assert not w2.close()  # b missing: not complete
    with pytest.raises(Exception, match="not finished"):
        ShardSet(tmp_path.parent, 1)


# -- real jobs under torchrun -----------------------------------------------------------------


TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import torch
    from conftest import write_audio

    from speechssl.data.manifest import Row, build_cutset, save_cuts
    from speechssl.models.ecapa import EcapaTdnn
    from speechssl.models.encoder_config import EcapaConfig
    from speechssl.models.registry import save_upstream

    d = tmp_path_factory.mktemp("corpus")
    cuts = tiny_corpus(d, 7)
    torch.manual_seed(0)
    enc = EcapaTdnn(EcapaConfig(channels=32, mfa_dim=48, attention_dim=8, emb_dim=12)).eval()
    rng, rows = np.random.default_rng(3), []
    for spk, f0 in (("a", 150.0), ("b", 300.0)):
        for i in range(6):
            p = d / "wav" / f"{spk}{i}.wav"
            write_audio(p, seconds=float(rng.uniform(0.2, 0.6)), freq=f0 * rng.uniform(0.9, 1.1))
            rows.append(Row(p, {"speaker": spk}))
    write_audio(d / "wav" / "short.wav", seconds=0.01)  # too short for a frame: dropped, counted
    rows.append(Row(d / "wav" / "short.wav", {"speaker": "a"}))
    labelled = save_cuts(build_cutset(rows, progress=False, workers=1)[0], d / "lab.jsonl.gz")
    voiced = CutSet.from_cuts(c for c in CutSet.from_file(labelled) if c.duration > 0.1)
    voiced = save_cuts(voiced, d / "voiced.jsonl.gz")
    return cuts, save_upstream(enc, d / "ecapa"), labelled, voiced


# the ranks run one thread each (clean_env); so must the reference, or float sums differ
@pytest.mark.usefixtures("one_thread")
def test_jobs_on_two_ranks_equal_one_process(corpus, tmp_path):
    from speechssl.data.manifest import load_cuts
    from speechssl.evaluation.features import extract_features
    from speechssl.indicators.rows import read_indicator_rows
    from speechssl.kmeans.labels import KmeansLabels

    cuts, enc, labelled, voiced = corpus
    cmd = [*TORCHRUN, "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), str(DRIVER), str(cuts), str(enc), str(labelled),
           str(voiced), str(tmp_path / "two")]  # fmt: skip
    subprocess.run(cmd, check=True, env=clean_env(), timeout=120)
    # the same jobs in this (one) process
    sys.path.insert(0, str(DRIVER.parent))
    from sharded_jobs import main

    main(cuts, enc, labelled, voiced, tmp_path / "one")
    two, one = tmp_path / "two", tmp_path / "one"
    k2, k1 = (
        json.loads((two / "km/kmeans.json").read_text()),
        json.loads((one / "km/kmeans.json").read_text()),
    )
    assert k2["kmeans_id"] == k1["kmeans_id"] and k2["frames_total"] == k1["frames_total"]
    l2, l1 = KmeansLabels(two / "lab"), KmeansLabels(one / "lab")
    assert sorted(l2) == sorted(l1) == sorted(c.id for c in CutSet.from_file(cuts))
    assert all(np.array_equal(l2[c], l1[c]) for c in l1)
    assert not (two / "lab" / "parts").exists() and not (two / "km" / "parts").exists()
    for job in ("lab", "km", "emb.run", "select"):  # made by two ranks, merged by rank 0
        assert "merging the shards of 2 ranks" in (two / job / "log.txt").read_text()
    e2, e1 = np.load(two / "emb.npz"), np.load(one / "emb.npz")
    assert e2["cut_ids"].tolist() == e1["cut_ids"].tolist()
    assert np.array_equal(e2["embeddings"], e1["embeddings"])
    c = list(load_cuts(cuts))
    f2 = extract_features(None, c, two / "cache", "tiny")
    f1 = extract_features(None, c, one / "cache", "tiny")
    assert np.array_equal(f2.offsets, f1.offsets) and f2.cut_ids == f1.cut_ids
    assert all(np.array_equal(a, b) for a, b in zip(f2.layers, f1.layers, strict=True))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    a2, a1 = (read_indicator_rows(d / "assess/indicators.jsonl") for d in (two, one))
    assert len(a1) == 2 and strip(a2) == strip(a1)  # fbank and mfcc: the same indicators
    assert "merging the shards of 2 ranks" in (two / "assess/log.txt").read_text()
    s2 = json.loads((two / "select/selection.json").read_text())
    s1 = json.loads((one / "select/selection.json").read_text())
    assert s2["counts"] == s1["counts"] and s1["counts"]["too_short"] == 1
    assert s2["ranking"] == s1["ranking"]  # HSIC values, intervals, p-values: exactly
    p2, p1 = (json.loads((d / "probe/results.json").read_text()) for d in (two, one))
    assert p2["split_sizes"] == p1["split_sizes"] and sum(p1["split_sizes"].values()) == 12
    assert p2["per_seed"] == p1["per_seed"]  # probes trained on features the two ranks shared
    assert "merging the shards of 2 ranks" in (two / "probe/log.txt").read_text()


@pytest.mark.usefixtures("one_thread")
def test_label_as_two_nodes_from_the_cli(corpus, tmp_path):
    from speechssl.kmeans.labels import KmeansLabels
    from speechssl.recipes.kmeans_jobs import KmeansFitConfig, KmeansLabelConfig, fit, label

    cuts = corpus[0]
    fit(KmeansFitConfig(cuts=cuts, out=tmp_path / "km", k=4, max_frames=300, n_iter=5))
    port = str(free_port())
    procs = []
    for node in (0, 1):
        cmd = [*TORCHRUN, "--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", "sharded-test", "-m", "speechssl.cli", "kmeans", "label",
               "--kmeans", str(tmp_path / "km"), "--cuts", str(cuts), "--out", str(tmp_path / "two"),
               "--batch-size", "2"]  # fmt: skip
        procs.append(
            subprocess.Popen(cmd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    outs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    one = label(KmeansLabelConfig(kmeans=tmp_path / "km", cuts=cuts, out=tmp_path / "one",
                                  batch_size=2))  # fmt: skip
    two = KmeansLabels(tmp_path / "two")
    assert sorted(two) == sorted(one) and all(np.array_equal(two[c], one[c]) for c in one)
    assert "audio-h/h" in outs[0] or "audio-h/h" in outs[1]  # rank 0's progress over all ranks


def test_rank_zero_shows_audio_hours_per_hour_over_all_ranks(tmp_path, capsys):
    import time

    from speechssl.training.sharded import _AllRanks

    def report(seconds):
        for r in range(2):
            f = rank_folder(tmp_path, r, 2)
            f.mkdir(parents=True, exist_ok=True)
            (f / "progress.json").write_text(json.dumps(
                {"cuts": int(seconds // 180), "seconds": seconds, "total_cuts": 10, "total_seconds": 1800.0}
            ))  # fmt: skip

    report(0.0)
    bar = _AllRanks(tmp_path, 2, "labels", 20, 3600.0, enabled=True)
    report(900.0)  # each rank did a quarter of the audio
    time.sleep(0.5)
    bar.poll(force=True)
    bar.close()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("labels (2 ranks): 1800/3600 audio seconds, 10/20 cuts,"), line
    rate = float(line.split("cuts, ")[1].split(" audio-h/h")[0])
    assert 1800 / 5.0 < rate < 1800 / 0.5  # audio s per s = audio h per h, all ranks summed
    assert "ETA" in line
