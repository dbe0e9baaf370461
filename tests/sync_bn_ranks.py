"""Two gloo ranks train a small BatchNorm net on halves of one batch (run under torchrun).

Not part of the library: tests/test_sync_batchnorm.py runs this file and compares what each
rank writes with :func:`reference`, one process with plain BatchNorm on the whole batch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

STEPS, BATCH = 2, 8


class Net(nn.Module):
    """Conv2d + BatchNorm2d (as in ResNet), Conv1d + BatchNorm1d on [B, C, T] (as in ECAPA)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2, self.bn2 = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv1, self.bn1 = nn.Conv1d(3, 4, 1), nn.BatchNorm1d(4)
        self.out = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn2(self.conv2(x))).flatten(2)
        return self.out(torch.tanh(self.bn1(self.conv1(h))).mean(-1))


def data(step: int) -> torch.Tensor:
    """The global batch of ``step``: its second half is shifted, so halves differ in mean."""
    x = torch.randn(BATCH, 2, 5, 6, generator=torch.Generator().manual_seed(step))
    x[BATCH // 2 :] = 2.0 * x[BATCH // 2 :] + 1.5
    return x


def loss_of(y: torch.Tensor) -> torch.Tensor:
    return (y**2 + y).mean()


def train(model: nn.Module, rows: slice) -> dict[str, torch.Tensor]:
    """SGD steps on ``rows`` of each global batch; the first step's outputs come back too."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    first = None
    for step in range(STEPS):
        opt.zero_grad()
        y = model(data(step)[rows])
        loss_of(y).backward()
        opt.step()
        first = y.detach() if first is None else first
    out = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {**out, "first_output": first}


def reference() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return train(Net(), slice(None))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--plain", action="store_true", help="keep per-rank BatchNorm (the control)")
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from speechssl.models.sync_batchnorm import convert_sync_batchnorm

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    torch.manual_seed(0)
    model = Net() if args.plain else convert_sync_batchnorm(Net(), "cpu")
    ddp = nn.parallel.DistributedDataParallel(model)
    half = BATCH // world
    state = train(ddp, slice(rank * half, (rank + 1) * half))
    state = {k.removeprefix("module."): v.contiguous() for k, v in state.items()}
    save_file(state, os.path.join(args.out, f"rank{rank}.safetensors"))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
