"""How long `speechssl --help`, a command's `--help` and a typo take to answer (issue 15: 6.5 s
when building the parser imported torch, lhotse and scipy for every command).

Each case runs ``python -m speechssl.cli ARGS`` in a fresh process (what the console script
does), ``--repeats`` times after one warm-up, and reports the median and best wall time.
``--baseline DIR`` times the same cases on another source tree too, e.g. the code before the
change::

    mkdir -p /tmp/before && git archive HEAD src | tar -x -C /tmp/before
    python benchmarks/bench_cli_help.py --baseline /tmp/before/src
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, RESULTS, header, load_average, write_result

CASES = [
    ("--help",),
    ("pretrain", "--help"),
    ("dino", "--help"),
    ("finetune", "--help"),
    ("data", "prepare", "folder", "--help"),
    ("pretrian",),  # a mistyped command
    ("pretrain", "--trian.lr", "1"),  # a mistyped option
]


def run_once(args: tuple[str, ...], src: Path) -> tuple[float, int]:
    """Wall seconds and exit code of ``python -m speechssl.cli *args`` with ``src`` first."""
    return run_python(["-m", "speechssl.cli", *args], src)


def run_python(argv: list[str], src: Path) -> tuple[float, int]:
    env = os.environ | {"PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, check=False)
    return time.perf_counter() - t0, done.returncode


def time_case(args: tuple[str, ...], src: Path, repeats: int) -> tuple[list[float], int]:
    run_once(args, src)  # warm-up: the page cache holds the files afterwards
    runs = [run_once(args, src) for _ in range(repeats)]
    return [t for t, _ in runs], runs[-1][1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--baseline", type=Path, help="another source tree to time (its src/ folder)")
    p.add_argument("--out", type=Path, default=RESULTS / "cli-help.md")
    args = p.parse_args()

    load_before = load_average()
    start_s = time.perf_counter()
    rows = []
    for case in CASES:
        times, code = time_case(case, REPO / "src", args.repeats)
        base = time_case(case, args.baseline, args.repeats)[0] if args.baseline else None
        rows.append((case, times, code, base))
        print(f"{' '.join(case):35s} {statistics.median(times):.3f} s", flush=True)
    torch_s = [run_python(["-c", "import torch"], REPO / "src")[0] for _ in range(args.repeats)]
    total_s = time.perf_counter() - start_s

    lines = [
        *header("Time to answer `--help` and a typo"),
        f"- Each case: `python -m speechssl.cli ARGS` in a fresh process, {args.repeats} timed "
        "runs after one warm-up (median and best wall time, interpreter start included)",
        f"- Load average before / after: {load_before} / {load_average()} (the machine is "
        "shared; a load above its core count means other processes competed for the cores)",
        f"- For scale: a fresh `python -c 'import torch'` takes "
        f"{statistics.median(torch_s):.2f} s (median) here",
    ]
    if args.baseline:
        lines.append(
            f"- Before: the same cases on `{args.baseline}` (the tree before the change: every "
            "command's config, and with it torch, lhotse and scipy, imported to build the parser)"
        )
    lines += ["", _table_head(bool(args.baseline)), _table_rule(bool(args.baseline))]
    for case, times, code, base in rows:
        row = f"| `speechssl {' '.join(case)}` | {code} | {statistics.median(times):.3f} | "
        row += f"{min(times):.3f} |"
        if base is not None:
            row += f" {statistics.median(base):.3f} |"
        lines.append(row)
    lines += ["", f"Total benchmark time: {total_s:.0f} s."]
    write_result(args.out, lines)


def _table_head(baseline: bool) -> str:
    extra = " before: median s |" if baseline else ""
    return f"| command | exit code | median s | best s |{extra}"


def _table_rule(baseline: bool) -> str:
    return "|---|---:|---:|---:|" + ("---:|" if baseline else "")


if __name__ == "__main__":
    main()
