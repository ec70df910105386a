"""Several processes (torchrun): which one this is, joining the group, and what they share.

``torchrun --nproc-per-node N -m resnetlab train ...`` starts N copies of the same
command. Each reads its own shard of every epoch (the loaders take ``rank`` and
``world_size``), DistributedDataParallel averages the gradients, and rank 0 alone
prints and writes files. Backend: nccl on CUDA, gloo on CPU, chosen from the device.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from resnetlab.errors import UserError

# What torchrun sets for every worker; WORLD_SIZE > 1 without the rest is not a torchrun start.
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process prints and writes run files."""
        return self.rank == 0


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them; a single process otherwise."""
    env = os.environ if env is None else env

    def number(name: str, default: int) -> int:
        value = env.get(name, str(default))
        try:
            return int(value)
        except ValueError:
            raise UserError(f"environment variable {name}={value!r} is not a number") from None

    size = number("WORLD_SIZE", 1)
    if size < 1:
        raise UserError(f"WORLD_SIZE must be at least 1, got {size}")
    if size > 1:
        missing = [k for k in TORCHRUN_VARIABLES if not env.get(k)]
        if missing:
            raise UserError(
                f"WORLD_SIZE={size} is set but {', '.join(missing)} not: start several "
                "processes with torchrun (torchrun --nproc-per-node N -m resnetlab train ...)"
            )
    world = World(number("RANK", 0), size, number("LOCAL_RANK", 0))
    if not 0 <= world.rank < size or world.local_rank < 0:
        raise UserError(f"RANK={world.rank} / LOCAL_RANK={world.local_rank} outside 0..{size - 1}")
    return world


def check_sync_bn(sync_bn: bool, device: torch.device) -> None:
    """SyncBatchNorm has CUDA kernels only: refuse it on CPU before any process starts work."""
    if sync_bn and device.type != "cuda":
        raise UserError(
            "--sync-bn needs CUDA (nccl): PyTorch's SyncBatchNorm does not run on CPU/gloo"
        )


def local_device(world: World, device: torch.device) -> torch.device:
    """The GPU of this process: ``cuda:LOCAL_RANK`` (or the only GPU a process may see)."""
    if device.type != "cuda" or world.world_size == 1:
        return device
    count = torch.cuda.device_count()
    index = world.local_rank if count > 1 else 0
    if index >= count:
        raise UserError(
            f"local rank {world.local_rank} has no GPU: this machine has {count}; "
            f"start at most {count} processes per machine (--nproc-per-node {count})"
        )
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[torch.device]:
    """Join torchrun's group for the block (nccl on CUDA, gloo on CPU) and leave it after.

    Yields this process's device. A single process, or one already in a group, joins nothing.
    The barrier at the start means no rank writes a file before every rank has read its input.
    """
    device = local_device(world, device)
    if world.world_size == 1 or dist.is_initialized():
        yield device
        return
    cuda = device.type == "cuda"
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        rank=world.rank,
        world_size=world.world_size,
        device_id=device if cuda else None,
    )
    try:
        dist.barrier(device_ids=[device.index] if cuda else None)
        yield device
    finally:
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` in a group; ``model`` itself otherwise.

    The model keeps its own name: checkpoints save ``model``, never the wrapper, so they
    load in one process and in any number of them.
    """
    if not active():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def sum_across_ranks(t: torch.Tensor) -> torch.Tensor:
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def reduce_epoch_stats(stats: dict, device: torch.device) -> dict:
    """Loss and accuracy of the epoch over every rank's samples, from each rank's means.

    One all_reduce per epoch; the images count becomes the whole run's.
    """
    if not active():
        return stats
    n = stats["images"]
    t = torch.tensor(
        [stats["loss"] * n, stats["acc"] * n / 100.0, float(n)], dtype=torch.float64, device=device
    )
    loss_sum, correct, images = sum_across_ranks(t).tolist()
    total = max(images, 1.0)
    acc = 100.0 * round(correct) / total
    return {**stats, "loss": loss_sum / total, "acc": acc, "images": round(images)}


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's BatchNorm statistics to every rank, so that all evaluate the saved model.

    DDP syncs buffers before each training forward, so after the last step every rank
    has updated them with its own batch; rank 0's are the ones the checkpoint keeps.
    """
    if not active():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def earliest_across_ranks(index: torch.Tensor) -> int:
    """The smallest ``index`` >= 0 over every rank, -1 if none has one (one host sync).

    Used for the first non-finite loss, so that every rank stops at the same check.
    """
    if not active():
        return int(index.item())
    none = torch.iinfo(torch.int64).max
    t = torch.where(index >= 0, index, none).to(torch.int64).reshape(1)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    found = int(t.item())
    return -1 if found == none else found
