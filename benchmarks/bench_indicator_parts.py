"""The smaller measurements behind the indicators' design choices, on one core.

1. Peak memory of the cluster measures of one 768-d layer over one hour (bench_indicators.py's
   synthetic cache, layer 3), k = 1024, in a fresh process.
2. k-means++ seeding: distances from a Gram matrix vs one pass over the rows per centre.
3. Sampling noise of a 10k-frame silhouette: the same labels (ours, layer 0), 6 samples.
4. The live monitor's pool: reading a 10-minute pool from disk vs from memory (WAV bytes),
   on the real speech of ../shared/data (RAVDESS).

    python benchmarks/bench_indicators.py          # first: writes the synthetic cache
    python benchmarks/bench_indicator_parts.py
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from common import DATA_ROOT, REPO, RESULTS, header, load_average, write_result
from threadpoolctl import threadpool_limits

CACHE = REPO / "runs" / "bench-indicators-180000x768"


def peak_memory(data: Path) -> float:
    """Peak RSS (MB) of a fresh process computing the cluster measures of layer 3."""
    code = f"""
import numpy as np, faiss, resource
from threadpoolctl import threadpool_limits
from speechssl.indicators import CLUSTER_NAMES, IndicatorConfig, layer_indicators
faiss.omp_set_num_threads(1)
mm = np.load("{data}/layer-03.npy", mmap_mode="r"); off = np.load("{data}/offsets.npy")
with threadpool_limits(1):
    layer_indicators(mm, off, IndicatorConfig(list(CLUSTER_NAMES)))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def seeding_times() -> list[tuple[int, int, int, float, float, bool]]:
    """(rows, dim, k, seconds with the Gram, seconds with a pass per centre, rule's choice)."""
    from speechssl.kmeans import fit

    rule = fit._use_gram
    rng = np.random.default_rng(0)
    rows = []
    for n, d, k in [(10_240, 768, 1024), (10_240, 256, 1024), (10_000, 256, 128)]:
        x = rng.normal(size=(n, d)).astype(np.float32)
        times = []
        for forced in (True, False):
            fit._use_gram = lambda *a, forced=forced: forced
            t0 = time.perf_counter()
            fit.kmeans_pp_init(x, k, 0, n, None)
            times.append(time.perf_counter() - t0)
        fit._use_gram = rule
        rows.append((n, d, k, times[0], times[1], rule(n, d, k, 2 + int(np.log(k)))))
    return rows


def silhouette_noise(data: Path) -> list[float]:
    from speechssl.indicators import clusters as cl
    from speechssl.kmeans import assign

    mm = np.load(data / "layer-00.npy", mmap_mode="r")
    x = np.asarray(mm, dtype=np.float32)
    centroids, _ = cl.fit_layer_kmeans(mm, 1024, 200_000, 10, 0)
    labels, _ = assign(x, centroids)
    out = []
    for s in range(6):
        rows = cl.sample_rows(len(x), 10_000, s, 1)
        out.append(float(cl.silhouette_values(x[rows], labels[rows]).mean()))
    return out


def pool_loading(data_root: Path) -> tuple[int, float, float, float]:
    from speechssl.audio.io import load_cut
    from speechssl.evaluation.tasks import preset_cuts
    from speechssl.indicators.assess import select_pool

    cuts = list(preset_cuts("ravdess", data_root, REPO / "runs" / "cache"))
    pool = select_pool(cuts, 10 / 60, 0)
    t0 = time.perf_counter()
    disk = [load_cut(c) for c in pool]
    t_disk = time.perf_counter() - t0
    memory = [c.move_to_memory(audio_format="wav") for c in pool]
    t0 = time.perf_counter()
    again = [load_cut(c) for c in memory]
    t_mem = time.perf_counter() - t0
    diff = max(float(np.abs(a - b).max()) for a, b in zip(disk, again, strict=True))
    return len(pool), t_disk, t_mem, diff


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=CACHE)
    ap.add_argument("--data-root", type=Path, default=DATA_ROOT)
    ap.add_argument("--out", type=Path, default=RESULTS / "indicator-parts.md")
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    peak = peak_memory(args.data)
    with threadpool_limits(1):
        seeding = seeding_times()
        sil = silhouette_noise(args.data)
        n_pool, t_disk, t_mem, diff = pool_loading(args.data_root)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = header("Indicators: the smaller measurements behind the design", 1)
    lines += [
        f"- faiss {faiss.__version__}; one thread (faiss, BLAS via threadpoolctl)",
        f"- Load average at the end: {load_average()}",
        "",
        "## Peak memory, cluster measures of one 768-d layer (180k frames, k = 1024)",
        "",
        f"Fresh process, whole run: **{peak:.0f} MB** peak RSS (the k-means sample in float32, "
        "the seeding's Gram matrix, the coarse stages' copies, the memory-mapped layer's pages, "
        "and the Python / torch / faiss imports).",
        "",
        "## k-means++ seeding: Gram matrix vs one pass over the rows per centre (2 + ln k "
        "candidates per centre)",
        "",
        "| rows | dim | k | Gram (s) | rows pass (s) | rule picks |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for n, d, k, t_gram, t_rows, gram in seeding:
        choice = "Gram" if gram else "rows pass"
        lines.append(f"| {n} | {d} | {k} | {t_gram:.2f} | {t_rows:.2f} | {choice} |")
    sd = float(np.std(sil) / np.mean(sil))
    lines += [
        "",
        "## Sampling noise of a 10k-frame silhouette (same labels, layer 0, 6 samples)",
        "",
        f"Values: {', '.join(f'{v:.4f}' for v in sil)}; relative sd **{100 * sd:.1f}%**, "
        f"range {100 * (max(sil) - min(sil)) / np.mean(sil):.1f}%.",
        "",
        "## Live monitor pool: 10 minutes of RAVDESS read from disk vs held in memory (WAV)",
        "",
        f"{n_pool} cuts: disk (FLAC/WAV decode) **{t_disk:.2f} s**, memory **{t_mem:.2f} s**; "
        f"largest sample difference {diff:.1e}.",
        "",
        f"(This process's own peak RSS, for scale: {own:.0f} MB.)",
    ]
    write_result(args.out, lines)


if __name__ == "__main__":
    main()
