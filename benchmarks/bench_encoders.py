"""Training throughput of FrameTransformer presets vs transformers' HubertModel of equal size.

One training step = forward + backward (sum of squares of the last hidden state) on the same
batch of 4 x 4 s random audio, on CPU with ``torch.set_num_threads(2)``, dropout on (train
mode). Throughput is audio seconds per wall second (median of the timed steps); run with
two threads (the target) and one (a check: on a machine shared with other jobs, two OpenMP
threads can lose far more to waiting than they gain). Each
(model, size) runs in its own subprocess, so that peak memory is its own: we report the rise
of the process' peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``) from just before the first
step to the end, i.e. the activations + gradients of one step, not the weights.

Usage: python benchmarks/bench_encoders.py [--sizes tiny,small,base] [--threads 2,1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import RESULTS, header, load_average, timed, write_result  # noqa: E402

from speechssl.models.transformer import FrameTransformer  # noqa: E402
from speechssl.models.transformer_config import PRESETS, preset  # noqa: E402

BATCH, SECONDS = 4, 4.0
IMPLS = ("ours-logmel", "ours-waveform", "hf-hubert")


def make_model(size: str, impl: str) -> torch.nn.Module:
    cfg = PRESETS[size]
    if impl.startswith("ours"):
        return FrameTransformer(preset(size, frontend=impl.split("-")[1]))
    from transformers import HubertConfig, HubertModel

    hf_cfg = HubertConfig(
        hidden_size=cfg.dim,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.ffn_dim,
        conv_dim=(cfg.conv_dim,) * 7,
        num_conv_pos_embeddings=cfg.conv_pos_kernel,
        num_conv_pos_embedding_groups=cfg.conv_pos_groups,
        mask_time_prob=0.0,  # same work as ours: no masking
        attn_implementation="sdpa",
    )
    return HubertModel(hf_cfg)


def run_one(size: str, impl: str, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = make_model(size, impl).train()
    wave = torch.randn(BATCH, int(SECONDS * 16000)) * 0.1
    lengths = torch.full((BATCH,), wave.shape[1])

    def step() -> None:
        model.zero_grad(set_to_none=True)
        if impl.startswith("ours"):
            last = model(wave, lengths).hidden_states[-1]
        else:
            last = model(wave, output_hidden_states=True).hidden_states[-1]
        last.square().mean().backward()

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = timed(step, repeats)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "median_s": statistics.median(times),
        "peak_mib": (rss1 - rss0) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="tiny,small,base")
    parser.add_argument("--threads", default="2,1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=3, metavar=("SIZE", "IMPL", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        size, impl, threads = args.one
        print(json.dumps(run_one(size, impl, args.repeats, int(threads))))
        return
    thread_counts = [int(t) for t in args.threads.split(",")]
    lines = header("Encoder training throughput (forward + backward), CPU", thread_counts[0])
    lines[-2] += f" (also {', '.join(map(str, thread_counts[1:]))})" if thread_counts[1:] else ""
    lines += [
        f"- Batch: {BATCH} x {SECONDS:g} s random audio at 16 kHz, train mode (dropout on), "
        f"loss = mean square of the last hidden state; median of {args.repeats} steps after "
        "one warm-up. Peak memory: rise of the subprocess' peak RSS over the timed steps "
        "(activations + gradients, not weights).",
        "- hf-hubert: transformers HubertModel with the same dim/layers/heads/ffn, waveform "
        "CNN front-end (group norm, post-LN as HuBERT Base), sdpa attention, no masking.",
        f"- Load average at start: {load_average()} (the machine is shared; timings are noisy).",
        "",
        "| threads | size | model | params (M) | step (s) | audio s / wall s | peak RSS rise (MiB) |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for threads in thread_counts:
        for size in args.sizes.split(","):
            for impl in IMPLS:
                cmd = [sys.executable, __file__, "--one", size, impl, str(threads)]
                cmd += ["--repeats", str(args.repeats)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                res = json.loads(out.strip().splitlines()[-1])
                speed = BATCH * SECONDS / res["median_s"]
                lines.append(
                    f"| {threads} | {size} | {impl} | {res['params'] / 1e6:.1f} | "
                    f"{res['median_s']:.2f} | {speed:.1f} | {res['peak_mib']:.0f} |"
                )
                print(lines[-1], flush=True)
    write_result(RESULTS / "encoders.md", lines)


if __name__ == "__main__":
    main()
