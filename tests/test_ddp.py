"""Two gloo processes under torchrun train like one process with the same global batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from launch import clean_env, free_port  # noqa: E402
from train_toy import make_cuts  # noqa: E402

SCRIPT = Path(__file__).parent / "train_toy.py"


def _torchrun(args: list[str], timeout: float = 90) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(SCRIPT), *args]  # fmt: skip
    subprocess.run(cmd, check=True, env=clean_env(), timeout=timeout)


@pytest.fixture(scope="module")
def cuts_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("toy")
    make_cuts(d / "audio", n=8).to_file(d / "cuts.jsonl.gz")
    return d / "cuts.jsonl.gz"


def test_two_ranks_equal_one_process_with_the_same_global_batch(cuts_file, tmp_path):
    common = ["--cuts", str(cuts_file), "--max-steps", "6", "--ckpt-every", "3", "--noise", "0"]
    # lhotse gives rank r every 2nd batch (r, r+2, ...); one process accumulating 2 batches of
    # the same size per step sees exactly the same global batch.
    _torchrun([*common, "--run-dir", str(tmp_path / "ddp"), "--batch", "2"])
    single = [sys.executable, str(SCRIPT), *common, "--run-dir", str(tmp_path / "one")]
    subprocess.run(
        [*single, "--batch", "2", "--accum", "2"], check=True, env=clean_env(), timeout=90
    )

    r0 = load_file(tmp_path / "ddp" / "final-rank0.safetensors")
    r1 = load_file(tmp_path / "ddp" / "final-rank1.safetensors")
    one = load_file(tmp_path / "one" / "final-rank0.safetensors")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
        torch.testing.assert_close(r0[k], one[k], atol=1e-6, rtol=0, msg=f"DDP != single: {k}")
    assert not torch.equal(r0["enc.weight"], load_file(tmp_path / "one" / "checkpoints" /
                                                       "step-000003" / "model.safetensors")["enc.weight"])  # fmt: skip
    # Only rank 0 wrote the run's files.
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == [
        "latest", "step-000003", "step-000006"]  # fmt: skip


def test_uneven_shards_do_not_hang(cuts_file, tmp_path):
    # Rank 0 has 2 batches per epoch, rank 1 only one: each cycles its own shard.
    run = tmp_path / "run"
    _torchrun(["--cuts", str(cuts_file), "--run-dir", str(run), "--max-steps", "5",
               "--ckpt-every", "5", "--shard"], timeout=90)  # fmt: skip
    assert (run / "checkpoints" / "step-000005").is_dir()
    state = torch.load(run / "checkpoints" / "step-000005" / "trainer.pt", weights_only=True)
    assert [r["epoch"] for r in state["ranks"]] == [2, 4]  # same steps, different epochs
