"""BatchNorm over the global batch of every DDP rank, on GPU and on CPU.

DINO converts the BatchNorm layers of its student *and* teacher to synchronised BatchNorm:
with a few utterances per GPU, per-rank batch statistics are noisy and each rank's running
statistics describe only its own shard (and only rank 0's are saved). torch's
``nn.SyncBatchNorm`` is GPU-only: its fused kernels have no CPU version, its forward refuses
CPU input once a process group exists, and DDP refuses to wrap a CPU module holding one.
:func:`convert_sync_batchnorm` therefore uses torch's on CUDA and, on CPU (gloo),
:class:`CpuSyncBatchNorm`, which computes the same statistics with two differentiable
all-reduces, so a CPU DDP run normalises and tracks what the GPU run would. Both are plain
BatchNorm outside DDP and in eval mode, with the same parameters and buffers.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["CpuSyncBatchNorm", "convert_sync_batchnorm"]


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum is the sum of every rank's gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (any input ``[B, C, ...]``) whose training statistics are all-reduced over
    the ranks of ``process_group`` (default: all); what ``nn.SyncBatchNorm`` computes."""

    def __init__(self, *args, process_group=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        syncing = self.training and dist.is_available() and dist.is_initialized()
        group = (self.process_group or dist.group.WORLD) if syncing else None
        if group is None or dist.get_world_size(group) == 1:
            return super().forward(input)
        return self._synced(input, group)

    def _factor(self) -> float:
        """This step's running-average factor (BatchNorm's rule; counts the step)."""
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative moving average
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    def _synced(self, x: torch.Tensor, group) -> torch.Tensor:
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype)
        total = _AllReduceSum.apply(torch.cat([x.sum(dims), count]), group)
        n = total[-1].detach()
        if n < 2:
            raise ValueError("SyncBatchNorm needs more than one value per channel over all ranks")
        mean = total[:-1] / n
        centred = x - mean.reshape(shape)
        var = _AllReduceSum.apply(centred.pow(2).sum(dims), group) / n  # biased, to normalise
        out = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            f = self._factor()
            with torch.no_grad():  # running variance: unbiased, as BatchNorm keeps it
                self.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
                self.running_var.mul_(1 - f).add_(var.detach() * (n / (n - 1)), alpha=f)
        return out


def convert_sync_batchnorm(
    module: nn.Module, device: str | torch.device | None = None, process_group=None
) -> nn.Module:
    """``module`` with every BatchNorm layer synchronised over ranks, sharing its parameters
    and buffers: ``nn.SyncBatchNorm`` for a CUDA run, :class:`CpuSyncBatchNorm` otherwise.

    Args:
        device: where the run trains (default: CUDA when available, as the trainer does).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    return _convert_cpu(module, process_group)


def _convert_cpu(module: nn.Module, process_group) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, CpuSyncBatchNorm
    ):
        out = CpuSyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            process_group=process_group,
        )
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        module = out
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child, process_group))
    return module
