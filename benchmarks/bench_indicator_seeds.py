"""How much do the k-means-dependent indicators move with the k-means seed, ours and the reference?

The companion of ``bench_indicators.py`` (same synthetic cache; run that first, or pass
``--layers`` it has written): for each chosen layer, our cluster measures with two seeds and
the reference pipeline (MiniBatchKMeans, fairseq settings, then scikit-learn's metrics) with
two seeds. It tells whether a difference between ours and the reference is larger than the
reference's difference from itself.

    python benchmarks/bench_indicator_seeds.py --layers 0,2,6
"""

from __future__ import annotations

import argparse
from pathlib import Path

import faiss
import numpy as np
from bench_indicators import reference_clusters, rel
from common import REPO, RESULTS, header, load_average, write_result
from threadpoolctl import threadpool_limits

from speechssl.indicators import IndicatorConfig, layer_indicators

MEASURES = ("inertia_per_frame", "davies_bouldin", "calinski_harabasz", "silhouette")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="0,2,6")
    ap.add_argument("--data", type=Path, default=REPO / "runs" / "bench-indicators-180000x768")
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "indicator-seeds.md")
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.threads)
    offsets = np.load(args.data / "offsets.npy")
    table = []
    with threadpool_limits(args.threads):
        for layer in (int(x) for x in args.layers.split(",")):
            mm = np.load(args.data / f"layer-{layer:02d}.npy", mmap_mode="r")
            ours = [
                layer_indicators(mm, offsets, IndicatorConfig(list(MEASURES), k=args.k, seed=s))
                for s in (0, 1)
            ]
            x = np.asarray(mm, dtype=np.float32)
            ref = [reference_clusters(x, args.k, 1, seed=s)[0] for s in (0, 1)]
            del x
            table.append((layer, ours, ref))
            print(f"layer {layer} done | load {load_average()}", flush=True)

    lines = header("k-means-dependent indicators: seed to seed, ours and the reference")
    lines += [
        f"- faiss {faiss.__version__}; threads: {args.threads} (faiss OpenMP, BLAS and "
        "scikit-learn via threadpoolctl)",
        f"- Data: {args.data.name} (synthetic, see bench_indicators.py); k = {args.k}",
        "- Ours: layer_indicators defaults, seed 0 and 1. Reference: MiniBatchKMeans (fairseq "
        "settings, n_init 1) random_state 0 and 1, then davies_bouldin_score, "
        "calinski_harabasz_score, silhouette_score(sample_size=10000, random_state=seed)",
        f"- Load average at the end: {load_average()}",
        "",
        "Differences are relative to the reference with seed 0. 'ours vs ref' is what "
        "bench_indicators.py reports; 'ref 1 vs ref 0' and 'ours 1 vs ours 0' are each "
        "pipeline against itself.",
        "",
        "| layer | measure | ours 0 | ours 1 | ref 0 | ref 1 | ours 0 vs ref 0 | ours 1 vs ours 0 "
        "| ref 1 vs ref 0 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for layer, ours, ref in table:
        for m in MEASURES:
            o0, o1, r0, r1 = ours[0][m], ours[1][m], ref[0][m], ref[1][m]
            lines.append(
                f"| {layer} | {m} | {o0:.5g} | {o1:.5g} | {r0:.5g} | {r1:.5g} | "
                f"{100 * rel(o0, r0):+.2f}% | {100 * rel(o1, o0):+.2f}% | {100 * rel(r1, r0):+.2f}% |"
            )
    write_result(args.out, lines)


if __name__ == "__main__":
    main()
