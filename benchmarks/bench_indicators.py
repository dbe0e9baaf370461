"""Label-free indicators: ours (streamed Gram + faiss k-means) vs the straightforward
scikit-learn + numpy pipeline, every indicator for every layer of a 12-layer 768-d model.

Data: synthetic but structured frame embeddings written as ``extract_features`` writes them
(float16 ``layer-XX.npy`` + int64 ``offsets.npy``, read back memory-mapped): per layer a
1500-component Gaussian mixture with Zipf-like weights and a power-law spectrum (exponent
0.6 + 0.08 * layer, so the layers differ), plus a per-utterance offset (a "speaker") and a
global mean, randomly rotated; utterances of 1-12 s at 50 frames/s. 180k frames per layer is
about one hour of audio at 50 frames/s.

Ours: :func:`speechssl.indicators.layer_indicators` on the memmap, defaults (k = 1024,
k-means on up to 200k seeded frames, i.e. all of them here, 10 faiss iterations coarse to fine,
silhouette on 10k frames),
called once for the 5 rank measures and once for the 4 cluster measures (a single call
would share one pass; timing them apart is slightly unfair to us).

Reference, per layer: the layer loaded as float32; scikit-learn MiniBatchKMeans(k = 1024)
with fairseq HuBERT's settings (init k-means++, batch_size 10000, max_iter 100, tol 0,
max_no_improvement 100, reassignment_ratio 0, init_size None) except n_init = 1
(scikit-learn's default for k-means++; fairseq's 20 costs ~8x for ~0.1% inertia, see
results/kmeans.md), labels and inertia on all frames; davies_bouldin_score,
calinski_harabasz_score, silhouette_score(sample_size=10000, random_state=0); numpy SVDs of
the frames (RankMe, numerical rank), of the centred frames (effective rank, alpha-ReQ) and
of the utterance means (RankMe-t).

Values are compared two ways: ours vs the reference pipeline (cluster measures then depend on
two different k-means solutions; inertia_per_frame is the k-means objective per frame,
negative = ours lower), and ours vs scikit-learn given *our* labels (and our silhouette sample), which
isolates the metric code from the clustering.

    python benchmarks/bench_indicators.py                       # 12 layers x 180k frames
    python benchmarks/bench_indicators.py --layers 2 --frames 40000 --threads 1   # quick
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np
from common import FAIRSEQ_KMEANS, REPO, RESULTS, header, load_average, write_result
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
from threadpoolctl import threadpool_limits

from speechssl.indicators import CLUSTER_NAMES, RANK_NAMES, IndicatorConfig, layer_indicators
from speechssl.indicators import clusters as cl
from speechssl.kmeans import assign

DATA_VERSION = 1
EPS32 = float(np.finfo(np.float32).eps)
FAIRSEQ = {**FAIRSEQ_KMEANS, "compute_labels": True}
SILHOUETTE_SAMPLE = 10_000


# --- data ---------------------------------------------------------------------------------
def make_data(folder: Path, layers: int, n: int, dim: int, seed: int) -> np.ndarray:
    """Write (or reuse) the synthetic feature cache; returns the offsets."""
    meta = {"version": DATA_VERSION, "layers": layers, "frames": n, "dim": dim, "seed": seed}
    if (folder / "meta.json").is_file() and json.loads((folder / "meta.json").read_text()) == meta:
        return np.load(folder / "offsets.npy")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lengths = []
    while sum(lengths) < n:
        lengths.append(int(rng.integers(50, 600)))
    lengths[-1] -= sum(lengths) - n
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    np.save(folder / "offsets.npy", offsets)
    utt = np.repeat(np.arange(len(lengths)), lengths)
    for layer in range(layers):
        r = np.random.default_rng([seed, layer])
        spec = np.arange(1, dim + 1) ** -(0.6 + 0.08 * layer)
        rot, _ = np.linalg.qr(r.normal(size=(dim, dim)))
        comps = 1500
        means = r.normal(size=(comps, dim)) * spec * 3.0
        weights = 1.0 / np.arange(1, comps + 1) ** 0.8
        weights /= weights.sum()
        speaker = r.normal(size=(len(lengths), dim)) * spec
        mu = r.normal(size=dim) * 2.0
        out = np.lib.format.open_memmap(
            folder / f"layer-{layer:02d}.npy", mode="w+", dtype=np.float16, shape=(n, dim)
        )
        for a in range(0, n, 32768):
            b = min(a + 32768, n)
            comp = r.choice(comps, b - a, p=weights)
            z = means[comp] + speaker[utt[a:b]] + r.normal(size=(b - a, dim)) * spec
            out[a:b] = (z @ rot.T + mu).astype(np.float16)
        out.flush()
        del out
    (folder / "meta.json").write_text(json.dumps(meta))
    return offsets


# --- reference pipeline --------------------------------------------------------------------
def entropy_rank(s: np.ndarray, eps: float) -> float:
    p = s / s.sum() + eps
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def reference_clusters(x: np.ndarray, k: int, n_init: int, seed: int) -> tuple[dict, dict]:
    """MiniBatchKMeans then the scikit-learn metrics: (values, seconds per step)."""
    t: dict[str, float] = {}
    v: dict[str, float] = {}
    t0 = time.perf_counter()
    km = MiniBatchKMeans(n_clusters=k, n_init=n_init, random_state=seed, **FAIRSEQ).fit(x)
    labels = km.labels_
    v["inertia_per_frame"] = float(km.inertia_) / len(x)
    t["kmeans"] = time.perf_counter() - t0
    v["_kmeans_steps"] = float(km.n_steps_)
    t0 = time.perf_counter()
    v["davies_bouldin"] = float(davies_bouldin_score(x, labels))
    t["davies_bouldin"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    v["calinski_harabasz"] = float(calinski_harabasz_score(x, labels))
    t["calinski_harabasz"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    v["silhouette"] = float(
        silhouette_score(x, labels, sample_size=SILHOUETTE_SAMPLE, random_state=seed)
    )
    t["silhouette"] = time.perf_counter() - t0
    return v, t


def reference(x16: np.ndarray, offsets: np.ndarray, k: int, n_init: int) -> tuple[dict, dict]:
    """(values, seconds per step) of the straightforward pipeline."""
    t0 = time.perf_counter()
    x = np.asarray(x16, dtype=np.float32)
    n, dim = x.shape
    load = time.perf_counter() - t0
    v, t = reference_clusters(x, k, n_init, seed=0)
    t["load"] = load

    t0 = time.perf_counter()
    s = np.linalg.svd(x, compute_uv=False).astype(np.float64)
    v["rankme"] = entropy_rank(s, 1e-7)
    v["numerical_rank"] = float((s > s.max() * max(n, dim) * EPS32).sum())
    t["svd"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sc = np.linalg.svd(x - x.mean(0), compute_uv=False).astype(np.float64)
    v["effective_rank"] = entropy_rank(sc, 0.0)
    usable = int((sc > sc.max() * max(n, dim) * EPS32).sum())
    ranks = np.arange(11, min(100, usable) + 1) if usable >= 30 else np.arange(1, usable + 1)
    slope, _ = np.polyfit(np.log(ranks), np.log(sc[ranks - 1] ** 2 / (n - 1)), 1)
    v["alpha_req"] = float(-slope)
    t["svd_centred"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    counts = np.diff(offsets)
    keep = counts > 0
    sums = np.add.reduceat(x.astype(np.float64), offsets[:-1][keep], axis=0)
    su = np.linalg.svd(sums / counts[keep][:, None], compute_uv=False)
    v["rankme_t"] = entropy_rank(su, 1e-7)
    t["svd_utterances"] = time.perf_counter() - t0
    return v, t


def same_label_checks(x16: np.ndarray, centroids: np.ndarray, cfg: IndicatorConfig) -> dict:
    """scikit-learn's metrics given *our* k-means labels and our silhouette sample."""
    x = np.asarray(x16, dtype=np.float32)
    labels, _ = assign(x, centroids)
    rows = cl.sample_rows(len(x), cfg.silhouette_frames, cfg.seed, stream=1)
    ref_rows = np.random.RandomState(0).permutation(len(x))[:SILHOUETTE_SAMPLE]
    return {
        "davies_bouldin": float(davies_bouldin_score(x, labels)),
        "calinski_harabasz": float(calinski_harabasz_score(x, labels)),
        "silhouette": float(silhouette_score(x[rows], labels[rows])),
        # our labels on the sample silhouette_score(random_state=0) draws: separates the
        # sampling noise of a 10k-frame silhouette from the difference between clusterings
        "silhouette_ref_sample": float(cl.silhouette_values(x[ref_rows], labels[ref_rows]).mean()),
    }


# --- main ----------------------------------------------------------------------------------
def rel(a: float, b: float) -> float:
    return (a - b) / abs(b) if b else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--frames", type=int, default=180_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--n-init", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None, help="where the synthetic cache goes")
    ap.add_argument(
        "--no-ref-spread",
        dest="ref_spread",
        action="store_false",
        help="skip re-running the reference k-means with a second seed on layer 0",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "indicators.md")
    args = ap.parse_args()
    data = args.data or REPO / "runs" / f"bench-indicators-{args.frames}x{args.dim}"
    faiss.omp_set_num_threads(args.threads)
    offsets = make_data(data, args.layers, args.frames, args.dim, seed=0)
    cfg = IndicatorConfig(k=args.k)

    captured: dict[str, np.ndarray] = {}
    fit = cl.fit_layer_kmeans

    def capture_fit(*a, **kw):  # keep our centroids for the same-label checks
        centroids, k_used = fit(*a, **kw)
        captured["centroids"] = centroids
        return centroids, k_used

    cl.fit_layer_kmeans = capture_fit
    rows, times, spread = [], [], None
    with threadpool_limits(args.threads):
        for layer in range(args.layers):
            mm = np.load(data / f"layer-{layer:02d}.npy", mmap_mode="r")
            t0 = time.perf_counter()
            ours = layer_indicators(mm, offsets, IndicatorConfig(list(RANK_NAMES), k=args.k))
            t_rank = time.perf_counter() - t0
            t0 = time.perf_counter()
            ours |= layer_indicators(mm, offsets, IndicatorConfig(list(CLUSTER_NAMES), k=args.k))
            t_clu = time.perf_counter() - t0
            ref, t_ref = reference(mm, offsets, args.k, args.n_init)
            same = same_label_checks(mm, captured["centroids"], cfg)
            if layer == 0 and args.ref_spread:
                x = np.asarray(mm, dtype=np.float32)
                spread = (ref, reference_clusters(x, args.k, args.n_init, seed=1)[0])
                del x
            rows.append((layer, ours, ref, same))
            times.append((t_rank, t_clu, t_ref))
            print(
                f"layer {layer}: ours rank {t_rank:.1f}s clusters {t_clu:.1f}s | reference "
                + " ".join(f"{k} {v:.1f}s" for k, v in t_ref.items())
                + f" | load {load_average()}",
                flush=True,
            )
            for name in RANK_NAMES + CLUSTER_NAMES:
                print(f"  {name:18s} ours {ours[name]:.6g} ref {ref[name]:.6g}", flush=True)
    write_result(args.out, report(args, rows, times, spread))


def report(args, rows, times, spread) -> list[str]:
    cfg = IndicatorConfig()
    n_layers = len(rows)
    ours_rank = sum(t[0] for t in times)
    ours_clu = sum(t[1] for t in times)
    ref_t = {k: sum(t[2][k] for t in times) for k in times[0][2]}
    ref_rank = ref_t["svd"] + ref_t["svd_centred"] + ref_t["svd_utterances"]
    ref_clu = ref_t["kmeans"] + ref_t["davies_bouldin"] + ref_t["calinski_harabasz"]
    ref_clu += ref_t["silhouette"]
    ref_all = ref_rank + ref_clu + ref_t["load"]
    ours_all = ours_rank + ours_clu
    steps = [r[2]["_kmeans_steps"] for r in rows]
    lines = header("Label-free indicators: ours vs the scikit-learn + numpy pipeline")
    lines += [
        f"- faiss {faiss.__version__}; threads: {args.threads} (faiss OpenMP, BLAS and "
        "scikit-learn via threadpoolctl)",
        f"- Data: synthetic structured embeddings (see the script's docstring): {n_layers} "
        f"layers x {args.frames} frames x {args.dim}-d, float16 memmaps as extract_features "
        f"writes them, {int(rows[0][1]['utterances'])} utterances",
        f"- Ours: layer_indicators defaults (k = {args.k}, greedy k-means++ on 10 frames per "
        f"centre, {cfg.kmeans_iter} faiss iterations coarse to fine on up to "
        f"{cfg.kmeans_frames} seeded frames, silhouette on {cfg.silhouette_frames} frames "
        "with a 95% bootstrap interval), one call for the rank measures + one for the "
        "cluster measures",
        f"- Reference: MiniBatchKMeans(k = {args.k}, fairseq settings, n_init = "
        f"{args.n_init}; steps run: {', '.join(str(int(s)) for s in steps)}), sklearn "
        "davies_bouldin / calinski_harabasz / silhouette_score(sample_size=10000), numpy SVDs",
        f"- Load average at the end (machine shared with other jobs): {load_average()}",
        "",
        "## Time (all layers)",
        "",
        "| part | ours (s) | reference (s) | speed-up |",
        "|---|---:|---:|---:|",
        f"| rank measures (5): streamed Gram vs 3 SVDs | {ours_rank:.1f} | {ref_rank:.1f} | "
        f"{ref_rank / ours_rank:.1f}x |",
        f"| cluster measures (4): k-means + metrics | {ours_clu:.1f} | {ref_clu:.1f} | "
        f"{ref_clu / ours_clu:.1f}x |",
        f"| of which k-means fit (reference) | | {ref_t['kmeans']:.1f} | |",
        f"| of which DB / CH / silhouette (reference) | | {ref_t['davies_bouldin']:.1f} / "
        f"{ref_t['calinski_harabasz']:.1f} / {ref_t['silhouette']:.1f} | |",
        f"| loading float16 -> float32 (reference only) | | {ref_t['load']:.1f} | |",
        f"| **all indicators** | **{ours_all:.1f}** | **{ref_all:.1f}** | "
        f"**{ref_all / ours_all:.1f}x** |",
        "",
        "## Values (mean over layers; rel. diff = |ours / reference - 1|, mean and largest "
        "over layers)",
        "",
        "Time ours / reference: the shared time of the indicator's group (rank or cluster), "
        "all layers.",
        "",
        "| indicator | ours | reference | rel. diff mean / max | same labels: rel. diff vs "
        "sklearn | time ours (s) | time reference (s) | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in RANK_NAMES + CLUSTER_NAMES:
        o = np.mean([r[1][name] for r in rows])
        f = np.mean([r[2][name] for r in rows])
        diffs = [abs(rel(r[1][name], r[2][name])) for r in rows]
        if name in RANK_NAMES:
            same = "(same matrix)"
            to, tr = ours_rank, ref_rank
        else:
            same = (
                "n/a: k-means objective"
                if name == "inertia_per_frame"
                else f"{100 * max(abs(rel(r[1][name], r[3][name])) for r in rows):.2g}%"
            )
            to, tr = ours_clu, ref_clu
        lines.append(
            f"| {name} | {o:.6g} | {f:.6g} | {100 * np.mean(diffs):.2g}% / "
            f"{100 * max(diffs):.2g}% | {same} | {to:.1f} | {tr:.1f} | "
            f"{tr / to:.1f}x |"
        )
    if spread is not None:
        a, b = spread
        lines += [
            "",
            "Yardstick: the reference against itself, MiniBatchKMeans random_state 0 vs 1 "
            "(layer 0): "
            + ", ".join(f"{name} {100 * rel(b[name], a[name]):+.2f}%" for name in CLUSTER_NAMES)
            + ".",
        ]
    lines += [
        "",
        "## Per layer",
        "",
        "inertia_per_frame: mean squared distance per frame (ours: to our centroids; reference: to "
        "MiniBatchKMeans' centres), signed difference (negative = ours lower). Silhouette "
        "interval: ours, 95% bootstrap over the 10k-frame sample; 'ours on ref. sample': "
        "our labels on the frames the reference's silhouette_score drew.",
        "",
        "| layer | inertia/frame diff | DB ours / ref / same labels | CH ours / ref / same labels | "
        "silhouette ours [95%] / ref / same sample | silhouette ours on ref. sample | RankMe | "
        "RankMe-t | eff. rank | num. rank | alpha |",
        "|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for layer, o, f, s in rows:
        lines.append(
            f"| {layer} | {100 * rel(o['inertia_per_frame'], f['inertia_per_frame']):+.2f}% | "
            f"{o['davies_bouldin']:.4f} / {f['davies_bouldin']:.4f} / {s['davies_bouldin']:.4f} | "
            f"{o['calinski_harabasz']:.2f} / {f['calinski_harabasz']:.2f} / "
            f"{s['calinski_harabasz']:.2f} | {o['silhouette']:.4f} [{o['silhouette_lo']:.4f}, "
            f"{o['silhouette_hi']:.4f}] / {f['silhouette']:.4f} / {s['silhouette']:.4f} | "
            f"{s['silhouette_ref_sample']:.4f} ({100 * rel(s['silhouette_ref_sample'], f['silhouette']):+.2f}%) | "
            f"{o['rankme']:.2f} | {o['rankme_t']:.2f} | {o['effective_rank']:.2f} | "
            f"{o['numerical_rank']:.0f} | {o['alpha_req']:.3f} |"
        )
    return lines


if __name__ == "__main__":
    main()
