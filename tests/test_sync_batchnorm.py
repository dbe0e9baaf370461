"""Synchronised BatchNorm on 2 gloo ranks = BatchNorm on the union of their batches (DINO)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from speechssl.models.sync_batchnorm import CpuSyncBatchNorm, convert_sync_batchnorm

sys.path.insert(0, str(Path(__file__).parent))
from sync_bn_ranks import BATCH, Net, reference, train  # noqa: E402
from train_toy import make_cuts  # noqa: E402

HERE = Path(__file__).parent


def _torchrun(script: Path, args: list[str], timeout: float = 120) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(port), str(script), *args]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, timeout=timeout)


def test_conversion_shares_weights_and_buffers_and_is_plain_without_ddp():
    torch.manual_seed(0)
    net = Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    conv = convert_sync_batchnorm(net, "cpu")
    assert isinstance(conv.bn1, CpuSyncBatchNorm) and isinstance(conv.bn2, CpuSyncBatchNorm)
    assert conv.state_dict().keys() == before.keys()
    assert all(torch.equal(conv.state_dict()[k], v) for k, v in before.items())
    # No process group: exactly BatchNorm.
    ref = reference()
    torch.manual_seed(0)
    got = train(convert_sync_batchnorm(Net(), "cpu"), slice(None))
    assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_two_ranks_normalise_and_track_the_union_of_their_batches(tmp_path):
    _torchrun(HERE / "sync_bn_ranks.py", ["--out", str(tmp_path)])
    r0, r1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    ref = reference()  # one process, plain BatchNorm, the whole batch
    for k in ("bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"):
        assert torch.equal(r0[k], r1[k]), k  # every rank tracks the same statistics
        torch.testing.assert_close(r0[k], ref[k], atol=1e-6, rtol=1e-5, msg=k)
    assert int(r0["bn1.num_batches_tracked"]) == 2
    # Each rank's outputs are its rows of the whole batch's; the weights after the steps (the
    # gradients through the global statistics) match too.
    half = BATCH // 2
    torch.testing.assert_close(r0["first_output"], ref["first_output"][:half], atol=1e-6, rtol=0)
    torch.testing.assert_close(r1["first_output"], ref["first_output"][half:], atol=1e-6, rtol=0)
    for k in ("conv2.weight", "bn2.weight", "conv1.weight", "bn1.bias", "out.weight"):
        torch.testing.assert_close(r0[k], ref[k], atol=1e-6, rtol=1e-5, msg=k)


@pytest.fixture(scope="module")
def cuts_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("toy")
    make_cuts(d / "audio", n=8, seconds=0.3).to_file(d / "cuts.jsonl.gz")
    return d / "cuts.jsonl.gz"


def test_dino_under_ddp_keeps_one_set_of_batchnorm_statistics(cuts_file, tmp_path):
    run = tmp_path / "run"
    _torchrun(HERE / "train_toy.py", ["--method", "dino", "--cuts", str(cuts_file),
              "--run-dir", str(run), "--max-steps", "2", "--ckpt-every", "2"])  # fmt: skip
    r0, r1 = (load_file(run / f"final-rank{r}.safetensors") for r in (0, 1))
    stats = [k for k in r0 if k.endswith(("running_mean", "running_var"))]
    assert any(k.startswith("teacher_encoder.") for k in stats)
    assert any(k.startswith("encoder.") for k in stats)
    for k in stats:  # the ranks saw different utterances: only synchronised stats agree
        assert torch.equal(r0[k], r1[k]), k
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # weights too (DDP)
