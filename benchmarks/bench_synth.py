"""Synthesis speed of the embedded corpus: 30 minutes of labelled speech, goal under a minute.

python benchmarks/bench_synth.py --out benchmarks/results/synth.md
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from common import RESULTS, header, load_average, write_result

from speechssl.data.synth import synthesize_from_config
from speechssl.data.synth_config import SynthConfig


def _cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--workers", type=str, default="1,2", help="worker counts to time")
    ap.add_argument("--out", type=Path, default=RESULTS / "synth.md")
    args = ap.parse_args()

    lines = [
        *header("Synthetic corpus: synthesis speed"),
        f"- Load average before: {load_average()}",
        "",
        "| workers | utterances | audio min | voices | languages | voice x language pairs "
        "| wall s | CPU s | x real time |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for workers in [int(w) for w in args.workers.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = SynthConfig(
                out=Path(tmp), minutes=args.minutes, seed=0, workers=workers, progress=False
            )
            cpu0 = _cpu_seconds()
            t0 = time.perf_counter()
            cuts = synthesize_from_config(cfg)
            wall = time.perf_counter() - t0
            cpu = _cpu_seconds() - cpu0
        seconds = sum(c.duration for c in cuts)
        speakers = {c.supervisions[0].speaker for c in cuts}
        languages = {c.supervisions[0].language for c in cuts}
        pairs = {(c.supervisions[0].speaker, c.supervisions[0].language) for c in cuts}
        lines.append(
            f"| {workers} | {len(cuts)} | {seconds / 60:.1f} | {len(speakers)} | {len(languages)} "
            f"| {len(pairs)} | {wall:.2f} | {cpu:.2f} | {seconds / wall:,.0f} |"
        )
    lines += [
        "",
        f"- Load average after: {load_average()}",
        "- Goal: 30 minutes in under 60 s on 2 cores. Every voice speaks every language "
        "(voice x language pairs = voices x languages).",
        "- CPU s: user + system time of this process and its finished workers, less sensitive "
        "than wall time to other load on the machine.",
    ]
    write_result(args.out, lines)


if __name__ == "__main__":
    main()
