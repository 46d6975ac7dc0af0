"""Data-parallel training with ``torchrun``: one process per device, gradients summed across processes.

The scheme (what :class:`attnlab.train.Trainer` does with a :class:`DistContext`):

1. Every rank draws the same global batch order (``bucket_batches(seed, epoch)`` is a pure function) and takes
   its contiguous slice of each global batch (:func:`local_share`, built on ``attnlab.data.shard``).
2. Each rank computes the *summed* token loss of its slice and its token count, and back-propagates the sum.
3. :func:`sync_gradients` all-reduces the gradients as sums and divides them by the *global* token count (itself
   all-reduced), so every rank holds ``d(sum of all losses) / d(theta) / (all tokens)``: exactly the gradient one
   process computes on the whole global batch, up to the order of float additions. Ranks then take identical
   optimizer steps and stay identical without ever broadcasting weights again.

Averaging per-rank mean losses (what ``DistributedDataParallel`` does) is wrong when ranks hold different numbers
of tokens, which length-bucketed batches always do; hence the manual all-reduce. A parameter that received no
gradient on some rank contributes zeros (in every world size, so one process behaves the same way).

Backends: ``gloo`` on CPU, ``nccl`` on CUDA (one GPU per process, ``cuda:LOCAL_RANK``). Launch with
``torchrun --nproc_per_node N -m attnlab.cli train ...``; :func:`init_from_env` reads ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK`` and returns the single-process context when they are absent.

Dropout differs per rank (each rank's torch RNG is seeded with ``seed + rank``), so runs with dropout match the
single-process run in distribution, not bit for bit; with dropout 0 they match up to float reassociation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from attnlab.data.batching import shard

T = TypeVar("T")

__all__ = [
    "SINGLE",
    "DistContext",
    "all_gather_tensor",
    "broadcast_parameters",
    "init_from_env",
    "local_share",
    "resolve_device",
    "shutdown",
    "sync_gradients",
]

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world`` processes, its device and the collective backend
    (``None`` for a single process, where every collective is a no-op)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files (checkpoints, logs, weights)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks in place (moved to the backend's device and back if needed)."""
        if not self.distributed:
            return tensor
        work = tensor.to(self.device) if tensor.device != self.device else tensor
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        if work is not tensor:
            tensor.copy_(work)
        return tensor

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Overwrite ``tensor`` on every rank with rank ``src``'s value (in place)."""
        if not self.distributed:
            return tensor
        work = tensor.to(self.device) if tensor.device != self.device else tensor
        dist.broadcast(work, src=src)
        if work is not tensor:
            tensor.copy_(work)
        return tensor

    def agree(self, ok: bool) -> bool:
        """Rank 0's verdict on every rank (e.g. whether it could prepare the run directory)."""
        flag = torch.tensor([1.0 if ok else 0.0], dtype=torch.float64)
        return bool(self.broadcast(flag)[0] > 0.5)

    def on_main(self, action: Callable[[], T], what: str) -> T | None:
        """Run ``action`` on rank 0 only and tell every rank whether it worked, so none waits on a failed one.

        Returns the action's result on rank 0 (None elsewhere). If it raised, rank 0 re-raises that error and the
        other ranks raise ``RuntimeError`` saying rank 0 could not ``what``.
        """
        result, failure = None, None
        if self.is_main:
            try:
                result = action()
            except Exception as exc:  # re-raised below, after telling the other ranks
                failure = exc
        if not self.agree(failure is None):
            if failure is not None:
                raise failure
            raise RuntimeError(f"rank 0 could not {what}; see its error")
        return result


SINGLE = DistContext()


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: ``cuda:LOCAL_RANK`` when CUDA is available, else CPU; ``"cpu"``/``"cuda"`` as asked."""
    if isinstance(device, torch.device):
        return device
    if device not in DEVICES:
        raise ValueError(f"device: expected one of {DEVICES}, received {device!r}")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for, but torch.cuda.is_available() is False on this machine")
    return torch.device("cuda", local_rank)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}: expected an int, received {value!r}") from None


def init_from_env(device: str | torch.device = "auto", *, timeout_s: float = 1800.0) -> DistContext:
    """The context of this process: single-process unless ``WORLD_SIZE > 1`` (set by ``torchrun``), in which case
    the default process group is initialised (``gloo`` on CPU, ``nccl`` on CUDA) if it is not already."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK/WORLD_SIZE: expected 0 <= RANK < WORLD_SIZE, received RANK={rank}, WORLD_SIZE={world}")
    dev = resolve_device(device, local_rank)
    if world == 1:
        return DistContext(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        from datetime import timedelta

        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return DistContext(rank=rank, world=world, local_rank=local_rank, device=dev, backend=backend)


def shutdown(ctx: DistContext) -> None:
    """Tear down the process group (if this context made one)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def local_share(indices: Sequence[int], ctx: DistContext) -> list[int]:
    """This rank's slice of a global batch: ``attnlab.data.shard`` when every rank gets at least one item; for a
    batch smaller than the world (the tail of an epoch) the first ranks get one item each and the rest none (they
    then contribute zero gradients and zero tokens, which keeps the update equal to one process's)."""
    if not ctx.distributed:
        return list(indices)
    if len(indices) >= ctx.world:
        return shard(indices, ctx.rank, ctx.world)
    return list(indices[ctx.rank : ctx.rank + 1])


def broadcast_parameters(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers to every rank (identical starting weights whatever the init RNG)."""
    if not ctx.distributed:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            ctx.broadcast(tensor.data)


def sync_gradients(params: Iterable[nn.Parameter], total_tokens: float, ctx: DistContext) -> None:
    """Turn each rank's gradient of its *summed* loss into the global mean-per-token gradient, in place.

    Missing gradients become zeros (on every world size, so one process and N processes treat an unused
    parameter alike); with several ranks the gradients are flattened into one buffer per dtype and all-reduced
    as sums; then everything is divided by ``total_tokens`` (the global token count).
    """
    if total_tokens <= 0:
        raise ValueError(f"total_tokens: expected a positive token count, received {total_tokens}")
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if ctx.distributed:
        by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
        for p in params:
            by_dtype.setdefault(p.grad.dtype, []).append(p)
        for group in by_dtype.values():
            flat = torch.cat([p.grad.reshape(-1) for p in group])  # (sum of numels,)
            ctx.all_reduce_sum(flat)
            offset = 0
            for p in group:
                n = p.grad.numel()
                p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
                offset += n
    for p in params:
        p.grad.div_(float(total_tokens))


def all_gather_tensor(tensor: torch.Tensor, ctx: DistContext) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape and dtype on all ranks), as CPU tensors in rank order."""
    if not ctx.distributed:
        return [tensor.detach().cpu().clone()]
    work = tensor.detach().to(ctx.device).contiguous()
    out = [torch.empty_like(work) for _ in range(ctx.world)]
    dist.all_gather(out, work)
    return [t.cpu() for t in out]
