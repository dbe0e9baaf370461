"""k-means targets: the fit (vs scikit-learn), the label store, alignment and the two jobs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from speechssl.audio.io import recording
from speechssl.errors import UserError
from speechssl.kmeans import (
    KmeansLabels,
    LabelSetInfo,
    LabelWriter,
    align_labels,
    assign,
    check_centroids,
    fit_kmeans,
)
from speechssl.kmeans.fit import seeding_trials
from speechssl.models.registry import load_upstream
from speechssl.recipes.kmeans_jobs import KmeansFitConfig, KmeansLabelConfig, fit, label


def blobs(n=4000, k=10, d=8, seed=0):
    x, y = make_blobs(
        n_samples=n,
        centers=k,
        n_features=d,
        cluster_std=0.6,
        center_box=(-30, 30),
        random_state=seed,
    )
    return x.astype(np.float32), y


def test_fit_recovers_blobs_and_matches_sklearn_inertia():
    x, y = blobs()
    centroids, inertia = fit_kmeans(x, 10, seed=0, n_iter=25)
    labels, _ = assign(x, centroids)
    assert adjusted_rand_score(y, labels) == 1.0
    ref = KMeans(10, n_init=10, random_state=0).fit(x)
    assert inertia <= ref.inertia_ * 1.01


def test_fit_harder_data_inertia_close_to_sklearn():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 6)).astype(np.float32) * rng.uniform(0.5, 2, size=6).astype(
        np.float32
    )
    _, inertia = fit_kmeans(x, 20, seed=0, n_iter=100)
    ref = KMeans(20, n_init=4, random_state=0).fit(x)
    assert inertia <= ref.inertia_ * 1.01


def test_fit_is_deterministic_for_a_seed():
    x, _ = blobs(n=3000, k=12, d=5, seed=3)
    x += np.random.default_rng(0).normal(size=x.shape).astype(np.float32) * 3
    a, ia = fit_kmeans(x, 12, seed=7, n_iter=10, max_frames=2000)
    b, ib = fit_kmeans(x, 12, seed=7, n_iter=10, max_frames=2000)
    c, _ = fit_kmeans(x, 12, seed=8, n_iter=10, max_frames=2000)
    assert np.array_equal(a, b) and ia == ib
    assert not np.array_equal(a, c)


def test_assign_equals_bruteforce():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 16)).astype(np.float32)
    c = rng.normal(size=(37, 16)).astype(np.float32)
    labels, dist = assign(x, c)
    d2 = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1)
    assert np.array_equal(labels, d2.argmin(1))
    np.testing.assert_allclose(dist, d2.min(1), rtol=1e-4, atol=1e-4)


def test_empty_or_degenerate_centroids_refused():
    with pytest.raises(UserError, match="empty"):
        check_centroids(np.zeros((0, 4)))
    with pytest.raises(UserError, match="identical"):
        check_centroids(np.ones((5, 4)))
    with pytest.raises(UserError, match="frames"):
        fit_kmeans(np.zeros((3, 2), np.float32), 5, seed=0)


def make_info(k=100, num_cuts=20, **kw) -> LabelSetInfo:
    feature = {"upstream": "mfcc", "upstream_id": "mfcc", "layer": 0, "dim": 39}
    return LabelSetInfo(
        k=k,
        feature=feature,
        label_rate=100.0,
        kmeans_id="abc",
        num_cuts=num_cuts,
        cuts_hash="h",
        **kw,
    )


def fake_labels(num_cuts=20, k=100, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        f"cut-{i:03d}": rng.integers(0, k, size=int(rng.integers(0, 60))) for i in range(num_cuts)
    }


def test_writer_reader_round_trip_across_shards(tmp_path):
    data = fake_labels()
    with LabelWriter(tmp_path / "lab", make_info(), shard_size=100) as w:
        for c, lab in data.items():
            w.add(c, lab)
    assert len(list((tmp_path / "lab").glob("shard-*.npy"))) >= 4
    labels = KmeansLabels(tmp_path / "lab")
    assert len(labels) == 20 and "cut-003" in labels and "nope" not in labels
    assert isinstance(labels._shards[0], np.memmap)
    assert labels._shards[0].dtype == np.int16
    for c, lab in data.items():
        got = labels[c]
        assert got.dtype == np.int64 and np.array_equal(got, lab)
    assert labels.info.k == 100 and labels.info.feature["dim"] == 39


def test_writer_refuses_labels_outside_k(tmp_path):
    w = LabelWriter(tmp_path / "lab", make_info(k=10))
    with pytest.raises(UserError, match="outside"):
        w.add("a", np.array([0, 10]))
    with pytest.raises(UserError, match="outside"):
        w.add("a", np.array([-1, 3]))


def test_resume_interrupted_writer(tmp_path):
    data = fake_labels()
    ids = list(data)
    w = LabelWriter(tmp_path / "lab", make_info(), shard_size=100)
    for c in ids:
        w.add(c, data[c])
        if w._index and w._buf_ids:  # some cuts in finished shards, some only buffered
            break
    written = set(w._index)  # what reached finished shards before the "kill"
    assert 0 < len(written) < len(w.done_ids) < len(ids)
    del w  # killed: no close(), the buffer is lost
    with pytest.raises(UserError, match="incomplete"):
        KmeansLabels(tmp_path / "lab")
    w2 = LabelWriter(tmp_path / "lab", make_info(), shard_size=100)
    assert w2.done_ids == written and all(w2.done(c) for c in written)
    for c in ids:
        if not w2.done(c):
            w2.add(c, data[c])
    assert w2.close()
    labels = KmeansLabels(tmp_path / "lab")
    assert all(np.array_equal(labels[c], data[c]) for c in ids)
    with pytest.raises(UserError, match="k=100"):
        LabelWriter(tmp_path / "lab", make_info(k=50))


def test_reader_refuses_missing_and_corrupt(tmp_path):
    with pytest.raises(UserError, match="no label set"):
        KmeansLabels(tmp_path / "nothing")
    data = fake_labels(num_cuts=5)
    with LabelWriter(tmp_path / "lab", make_info(num_cuts=5), shard_size=50) as w:
        for c, lab in data.items():
            w.add(c, lab)
    (tmp_path / "lab" / "shard-00000.npy").write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt"):
        KmeansLabels(tmp_path / "lab")


def test_check_compatible_messages(tmp_path):
    with LabelWriter(tmp_path / "lab", make_info(num_cuts=1)) as w:
        w.add("a", np.array([1, 2, 3]))
    labels = KmeansLabels(tmp_path / "lab")
    labels.check_compatible(100, {"upstream": "mfcc", "layer": 0})
    with pytest.raises(UserError, match="has k=100 but the prediction head has 500 classes"):
        labels.check_compatible(500)
    with pytest.raises(
        UserError, match="labels were made from mfcc layer 0 but the config says tiny layer 6"
    ):
        labels.check_compatible(100, {"upstream": "tiny", "layer": 6})
    with pytest.raises(UserError, match="labels were made from mfcc layer 0"):
        labels.check_compatible(100, {"upstream": "mfcc", "layer": 0, "upstream_id": "other"})


def test_align_labels():
    lab = np.arange(120)
    out, adj = align_labels(lab, 60, 100.0, 50.0)
    assert adj == 0 and np.array_equal(out, lab[::2]) and out.dtype == np.int64
    out, adj = align_labels(lab, 59, 100.0, 50.0)
    assert adj == 1 and np.array_equal(out, lab[:118:2])
    out, adj = align_labels(lab, 61, 100.0, 50.0)
    assert adj == 1 and np.array_equal(out, np.r_[lab[::2], 119])
    out, adj = align_labels(lab, 121, 100.0, 100.0)
    assert adj == 1 and np.array_equal(out, np.r_[lab, 119])
    out, adj = align_labels(np.arange(50), 100, 50.0, 100.0)
    assert adj == 0 and np.array_equal(out, np.repeat(np.arange(50), 2))
    with pytest.raises(UserError, match="62 frames"):
        align_labels(lab, 62, 100.0, 50.0)
    with pytest.raises(
        UserError,
        match="has 120 labels at 100 Hz = 60 frames at 50 Hz but the model makes 75 frames: label rate mismatch",
    ):
        align_labels(lab, 75, 100.0, 50.0)


def tiny_corpus(folder: Path, n: int = 6, offset: int = 0) -> Path:
    """Sines and noise of different lengths, as FLAC files and a CutSet."""
    rng = np.random.default_rng(offset)
    cuts = []
    for i in range(n):
        sec = 0.3 + 0.17 * i
        t = np.arange(int(sec * 16000)) / 16000
        x = (
            0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t)
            if i % 2
            else 0.1 * rng.normal(size=len(t))
        )
        path = folder / f"u{offset + i}.flac"
        sf.write(path, x.astype(np.float32), 16000, format="FLAC")
        cuts.append(recording(path, recording_id=path.stem).to_cut())
    out = folder / f"cuts{offset}.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(out)
    return out


def test_fit_and_label_end_to_end(tmp_path):
    train = tiny_corpus(tmp_path, 6, offset=0)
    dev = tiny_corpus(tmp_path, 3, offset=10)
    meta = fit(KmeansFitConfig(cuts=train, out=tmp_path / "km", k=8, max_frames=400, n_iter=10))
    assert meta["feature"] == {"upstream": "mfcc", "upstream_id": "mfcc", "layer": 0, "dim": 39}
    assert meta["label_rate"] == 100.0 and meta["frames_used"] == 400
    assert (
        json.loads((tmp_path / "km" / "kmeans.json").read_text())["kmeans_id"] == meta["kmeans_id"]
    )
    assert (tmp_path / "km" / "run.json").is_file()

    labels = label(
        KmeansLabelConfig(kmeans=tmp_path / "km", cuts=train, out=tmp_path / "lab", shard_size=50)
    )
    assert labels.info.same_cuts_as_fit is True
    mfcc = load_upstream("mfcc")
    for cut in CutSet.from_file(train):
        wave = torch.from_numpy(cut.load_audio()[0]).float()[None]
        frames = int(mfcc(wave, torch.tensor([wave.shape[1]])).mask.sum())
        got = labels[cut.id]
        assert len(got) == frames and got.min() >= 0 and got.max() < 8
    labels.check_compatible(8, {"upstream": "mfcc", "layer": 0})

    dev_labels = label(
        KmeansLabelConfig(kmeans=tmp_path / "km", cuts=dev, out=tmp_path / "lab-dev")
    )
    assert dev_labels.info.same_cuts_as_fit is False
    assert dev_labels.info.fit_cuts_hash == labels.info.cuts_hash != dev_labels.info.cuts_hash


def test_label_job_resumes(tmp_path, monkeypatch):
    train = tiny_corpus(tmp_path, 6)
    fit(KmeansFitConfig(cuts=train, out=tmp_path / "km", k=4, max_frames=300, n_iter=5))
    cfg = KmeansLabelConfig(
        kmeans=tmp_path / "km", cuts=train, out=tmp_path / "lab", shard_size=1, batch_size=2
    )
    full = label(cfg)
    reference = {c: full[c] for c in full}

    import speechssl.kmeans.fit as library  # where the job finds assign when it runs

    real_assign, calls = library.assign, []

    def dying_assign(x, c):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real_assign(x, c)

    cfg2 = KmeansLabelConfig(
        kmeans=tmp_path / "km", cuts=train, out=tmp_path / "lab2", shard_size=1, batch_size=2
    )
    monkeypatch.setattr(library, "assign", dying_assign)
    with pytest.raises(KeyboardInterrupt):
        label(cfg2)
    with pytest.raises(UserError, match="incomplete"):
        KmeansLabels(tmp_path / "lab2")
    monkeypatch.setattr(library, "assign", lambda x, c: (calls.append(2), real_assign(x, c))[1])
    calls.clear()
    resumed = label(cfg2)
    assert len(calls) == 3  # only the three cuts not done before the interruption
    assert all(np.array_equal(resumed[c], reference[c]) for c in reference)


def test_label_refuses_empty_centroids(tmp_path):
    train = tiny_corpus(tmp_path, 2)
    (tmp_path / "km").mkdir()
    np.save(tmp_path / "km" / "centroids.npy", np.zeros((0, 39), np.float32))
    (tmp_path / "km" / "kmeans.json").write_text(json.dumps({"k": 0, "kmeans_id": "x"}))
    with pytest.raises(UserError, match="empty"):
        label(KmeansLabelConfig(kmeans=tmp_path / "km", cuts=train, out=tmp_path / "lab"))


def test_greedy_seeding_lowers_the_initial_inertia():
    from speechssl.kmeans.fit import kmeans_pp_init

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (30, 8))
    x = (centres[rng.integers(0, 30, 3000)] + rng.normal(0, 1, (3000, 8))).astype(np.float32)

    def inertia(c):
        d = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)  # brute force, no faiss
        return d.min(1).sum()

    plain = np.mean([inertia(kmeans_pp_init(x, 30, s, local_trials=1)) for s in range(5)])
    greedy = np.mean([inertia(kmeans_pp_init(x, 30, s, local_trials=None)) for s in range(5)])
    assert greedy < plain


def test_seeding_from_the_gram_matrix_equals_seeding_from_the_rows(monkeypatch):
    from speechssl.kmeans import fit

    x = np.random.default_rng(2).normal(size=(200, 12)).astype(np.float32)
    monkeypatch.setattr(fit, "_use_gram", lambda *a: True)
    via_gram = fit.kmeans_pp_init(x, 25, 3, init_sample=200, local_trials=None)
    monkeypatch.setattr(fit, "_use_gram", lambda *a: False)
    via_rows = fit.kmeans_pp_init(x, 25, 3, init_sample=200, local_trials=None)
    np.testing.assert_array_equal(via_gram, via_rows)


def test_coarse_to_fine_fit_is_close_to_full_lloyd():
    from speechssl.kmeans import fit_centroids

    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 6)).astype(np.float32) * rng.uniform(0.5, 2, size=6).astype(
        np.float32
    )

    def mean_inertia(coarse_to_fine):
        fits = [fit_centroids(x, 20, s, 30, coarse_to_fine=coarse_to_fine) for s in range(4)]
        return np.mean([assign(x, c)[1].astype(np.float64).sum() for c in fits])

    # full Lloyd is within 1% of scikit-learn on this data (test above); coarse to fine costs
    # ~0.4x and ends within 1% of it on average over seeds
    assert mean_inertia(True) <= mean_inertia(False) * 1.01


def planted_mixture(c=40, d=16, n=4000, seed=0):
    """``c`` separated Gaussians: plain k-means++ often puts two centres in one of them, and
    Lloyd cannot move a centre across the gap to the cluster it left empty."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 4, (c, d))
    return (means[rng.integers(0, c, n)] + rng.normal(0, 1, (n, d))).astype(np.float32)


def test_default_seeding_is_greedy_and_beats_plain_on_a_planted_mixture():
    x, k = planted_mixture(), 40
    greedy_trials = 2 + int(np.log(k))
    for seed in range(2):
        default, inertia = fit_kmeans(x, k, seed, n_iter=20)
        greedy, _ = fit_kmeans(x, k, seed, n_iter=20, local_trials=greedy_trials)
        _, plain = fit_kmeans(x, k, seed, n_iter=20, local_trials=1)
        np.testing.assert_array_equal(default, greedy)
        # noise variance 1 per dim: the planted optimum is ~16 per frame; plain ends >= 20
        assert inertia < 0.9 * plain


def fit_frames(cuts_path: Path) -> np.ndarray:
    """The frames `kmeans fit` clusters when max_frames exceeds them: all, in stream order."""
    from speechssl.evaluation.features import layer_frames

    cuts = list(CutSet.from_file(cuts_path))
    stream = layer_frames(load_upstream("mfcc"), "mfcc", cuts, 0)
    return np.concatenate([f for _, f in stream]).astype(np.float32)


def test_fit_job_seeds_greedily_by_default_and_plain_on_request(tmp_path):
    from speechssl.cli import main
    from speechssl.kmeans import fit_centroids
    from speechssl.kmeans.folder import load_kmeans

    train = tiny_corpus(tmp_path, 6)
    x, k = fit_frames(train), 12
    assert len(x) < 10_000  # all frames kept, no k-means++ subsample: the fit is reproducible
    fit(KmeansFitConfig(cuts=train, out=tmp_path / "greedy", k=k, max_frames=10_000, n_iter=5))
    argv = ["kmeans", "fit", "--cuts", str(train), "--out", str(tmp_path / "plain"),
            "--k", str(k), "--max-frames", "10000", "--n-iter", "5", "--seeding", "plain"]  # fmt: skip
    assert main(argv) == 0

    for name, trials in (("greedy", 2 + int(np.log(k))), ("plain", 1)):
        centroids, meta = load_kmeans(tmp_path / name)
        assert (meta["seeding"], meta["seeding_trials"], meta["frames_used"]) == (
            name, trials, len(x)
        )  # fmt: skip
        expected = fit_centroids(x, k, seed=0, n_iter=5, local_trials=trials)
        np.testing.assert_array_equal(centroids, expected)


def test_fit_job_refuses_an_unknown_seeding(tmp_path, capsys):
    from speechssl.cli import main

    train = tiny_corpus(tmp_path, 2)
    argv = ["kmeans", "fit", "--cuts", str(train), "--out", str(tmp_path / "km"), "--k", "4",
            "--seeding", "random"]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "random" in capsys.readouterr().err
    with pytest.raises(UserError, match="seeding must be one of greedy, plain"):
        seeding_trials("random", 4)
