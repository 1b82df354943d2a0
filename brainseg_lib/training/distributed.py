"""Data-parallel training under ``torchrun`` (DistributedDataParallel), and nothing else.

``torchrun --standalone --nproc-per-node N -m brainseg_lib train --profile P`` trains one
run on N processes; a plain ``python -m brainseg_lib train`` stays a single process and
none of this code changes what it computes (``DistContext`` of a world of one is a no-op).

The design: **every rank computes the single-process step of the global batch, split N ways.**

* The global batch is the profile's ``batch_size``; each rank gets ``batch_size / N`` rows
  (an error when that does not divide). Every rank draws the same epoch permutation and
  the same augmentation (the generators are seeded by (seed, epoch), see
  ``data.loaders.resident_batches``) and keeps its own contiguous slice of each global
  batch: the ranks see disjoint shards whose union is exactly the single-process batch.
  Each rank augments the whole global batch before slicing (the draws cover the batch),
  which repeats a small part of the step's work N times.
* The loss is that of the global batch. BCE is a mean over pixels, so the mean of the
  ranks' BCE (DDP averages gradients) is the global BCE. The soft Dice takes its sums over
  the whole batch, so under DDP its three sums are all-reduced (differentiably) first.
* BatchNorm sees the statistics of the global batch: on CUDA ``torch.nn.SyncBatchNorm``;
  on CPU (which ``SyncBatchNorm`` refuses) ``GlobalBatchNorm2d`` below, the same
  arithmetic over gloo. Without it each rank would normalise with the statistics of its
  own 1/N of the batch and keep rank 0's running statistics only (DDP broadcasts rank
  0's buffers), i.e. a different, smaller-batch model than the profile describes. The
  price is one all-reduce per BatchNorm layer in the forward and one in the backward.
* The model is initialised from ``seed`` on every rank (DDP also broadcasts rank 0's
  weights); the global torch generator is then reseeded per rank, for any randomness
  that is per rank (none today: shuffling and augmentation are global by design).
* Rank 0 alone validates, writes checkpoints, snapshots, the history and every result;
  the other ranks wait for it and receive each epoch's history row, so callbacks run on
  every rank with the same row (a callback that stops training stops every rank).
  ``resume`` loads ``last.pt`` on every rank, so on several nodes the run folder must be on
  a shared filesystem. With ``max_train_seconds`` the ranks share one clock (the slowest
  rank's), so they stop at the same step and a ``time_cosine`` LR is the same everywhere.
* Threads: ``threads`` is per process (torchrun sets OMP_NUM_THREADS=1 for N > 1).

What remains different from one process is float summation order: the all-reduces, the
per-shard convolutions and the BatchNorm sums add the same numbers in another order.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from brainseg_lib.training.losses import get_loss

# a rank waits this long for the others (rank 0's validation, its final TEST evaluation)
TIMEOUT = datetime.timedelta(minutes=60)


def world_from_env() -> tuple[int, int, int]:
    """(WORLD_SIZE, RANK, LOCAL_RANK) as torchrun sets them; (1, 0, 0) outside torchrun."""
    env = os.environ
    return int(env.get("WORLD_SIZE", 1)), int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0))


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run; with ``world_size == 1`` every method is a no-op."""
    device: torch.device
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def max(self, value: float) -> float:
        """The largest ``value`` over the ranks (float64), the same on every rank."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.item()

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the ranks (float64)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return t.tolist()

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the block first (e.g. building a data cache), then the others."""
        if self.enabled and not self.is_main:
            dist.barrier()
        yield
        if self.enabled and self.is_main:
            dist.barrier()

    def check_batch(self, n_train: int, batch_size: int) -> None:
        """Refuse a global batch that does not split evenly over the ranks."""
        rows = min(n_train, batch_size)
        if self.enabled and rows % self.world_size:
            raise ValueError(f"the global batch of {rows} images does not split evenly over "
                             f"{self.world_size} processes: choose batch_size (and, when the "
                             f"training set is smaller than a batch, its size) divisible by "
                             f"{self.world_size}")

    def shard(self, batches):
        """This rank's contiguous slice of each global batch (the batches themselves when
        not distributed)."""
        if not self.enabled:
            return batches
        return self._shards(batches)

    def _shards(self, batches):
        for x, y in batches:
            b = x.shape[0] // self.world_size
            if b * self.world_size != x.shape[0]:
                raise ValueError(f"a batch of {x.shape[0]} does not split over {self.world_size} ranks")
            yield x.narrow(0, self.rank * b, b), y.narrow(0, self.rank * b, b)

    def prepare_model(self, model: nn.Module, seed: int) -> nn.Module:
        """Global-batch BatchNorm and a per-rank torch generator (call before building the
        optimiser); the model itself when not distributed."""
        if not self.enabled:
            return model
        torch.manual_seed((seed * 1_000_003 + 7919 * (self.rank + 1)) % (2**63))
        if self.device.type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return to_global_batchnorm(model)

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel (it averages the gradients over the ranks)."""
        if not self.enabled:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def loss(self, name: str):
        """The training loss of the global batch (``losses.get_loss`` when not distributed)."""
        return get_loss(name, reduce_sums=_AllReduceSum.apply if self.enabled else None)


def setup(device: torch.device) -> DistContext:
    """This process's DistContext; under torchrun (WORLD_SIZE > 1) the process group is
    initialised here unless it already is: nccl on CUDA (one GPU per process, LOCAL_RANK),
    gloo on CPU."""
    world, rank, local_rank = world_from_env()
    if world <= 1:
        return DistContext(device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"distributed training runs on cuda (nccl) or cpu (gloo), not {device.type}")
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise RuntimeError("the initialised process group disagrees with WORLD_SIZE / RANK")
    return DistContext(device, world, rank, local_rank)


@contextlib.contextmanager
def session(device: torch.device):
    """``setup(device)`` for a block; destroys the process group at the end if it made it.
    A block that ends normally waits at a barrier first, so no rank closes its connections
    while another still reads rank 0's last broadcast (gloo would report 'connection reset
    by peer' there)."""
    made = dist.is_available() and not dist.is_initialized()
    ctx = setup(device)
    try:
        yield ctx
        if ctx.enabled and made:
            dist.barrier()
    finally:
        if ctx.enabled and made and dist.is_initialized():
            dist.destroy_process_group()


# --------------------------------------------------------------------------- global-batch loss
class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the backward sums the ranks' gradients, so that
    after DDP divides by N each rank's inputs get d(mean of the ranks' losses)/d(input)."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad



# --------------------------------------------------------------------------- global-batch BatchNorm
class _GlobalBatchNormFn(torch.autograd.Function):
    """y = (x - mean) * invstd * w + b with mean / invstd of the global batch; the backward
    all-reduces the two per-channel sums of the standard BatchNorm gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, invstd, count):
        shape = (1, -1, 1, 1)
        xhat = (x - mean.view(shape)) * invstd.view(shape)
        ctx.save_for_backward(xhat, weight, invstd)
        ctx.count = count
        return xhat * weight.view(shape) + bias.view(shape)

    @staticmethod
    def backward(ctx, dy):
        xhat, weight, invstd = ctx.saved_tensors
        shape, c = (1, -1, 1, 1), weight.numel()
        local = torch.cat([dy.sum((0, 2, 3)), (dy * xhat).sum((0, 2, 3))])
        total = local.clone()
        dist.all_reduce(total)
        mean_dy, mean_dy_xhat = (total / ctx.count).split(c)
        dx = (dy - mean_dy.view(shape) - xhat * mean_dy_xhat.view(shape)) * (weight * invstd).view(shape)
        # weight and bias: this rank's share; DDP averages the ranks' gradients
        return dx, local[c:], local[:c], None, None, None


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch over all ranks (what
    ``nn.SyncBatchNorm`` does on CUDA; this one runs on CPU tensors over gloo). In eval
    mode, or outside an initialised process group, it is a plain BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.affine and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        self._check_input_dim(x)
        dims = (0, 2, 3)
        with torch.no_grad():
            s = torch.cat([x.sum(dims, dtype=torch.float64),
                           torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64, device=x.device)])
            dist.all_reduce(s)
            count = float(s[-1])
            mean = (s[:-1] / count).to(x.dtype)
            sq = (x - mean.view(1, -1, 1, 1)).square().sum(dims, dtype=torch.float64)
            dist.all_reduce(sq)
            var = (sq / count).to(x.dtype)
            if self.track_running_stats:
                self.num_batches_tracked.add_(1)
                f = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - f).add_(mean, alpha=f)
                self.running_var.mul_(1 - f).add_(var * (count / max(count - 1, 1)), alpha=f)
        return _GlobalBatchNormFn.apply(x, self.weight, self.bias, mean, torch.rsqrt(var + self.eps), count)


def to_global_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm2d replaced by a GlobalBatchNorm2d holding the same
    parameters and buffers (like ``nn.SyncBatchNorm.convert_sync_batchnorm``)."""
    if type(module) is nn.BatchNorm2d:
        bn = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            bn.weight, bn.bias = module.weight, module.bias
        if module.track_running_stats:
            bn.running_mean, bn.running_var = module.running_mean, module.running_var
            bn.num_batches_tracked = module.num_batches_tracked
        return bn.train(module.training)
    for name, child in module.named_children():
        module.add_module(name, to_global_batchnorm(child))
    return module
