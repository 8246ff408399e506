"""Several processes, one run: torchrun launches, DistributedDataParallel training, sharded generation.

torchrun starts one process per device and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT in each; `launch` joins them into one process group (NCCL for CUDA devices, Gloo for
the CPU) for the length of a command. A process started without torchrun is a world of one, and
every helper here then does nothing.

What the ranks split, and why the result does not depend on how many there are:
    training    every rank draws the same global batch from the step's generator, seeded by
                (seed, step), and keeps its own contiguous rows of it (`batch_rows`);
                DistributedDataParallel averages the gradients of the equal slices, which is the
                gradient of the global batch, so every rank makes the single-process update (to
                rounding). Checkpoints hold global state only: a run resumes on any number of ranks.
    generation  rank r writes chunks r, r + W, r + 2W, ... of a dataset (`my_chunks`); chunk i
                draws its x0 from a generator seeded by (seed, i), so the data are bit for bit
                those of one process.
Only rank 0 writes checkpoints, logs, run configs and manifests. Run and dataset directories must
be on a filesystem every rank sees (one node, or a shared filesystem across nodes).
"""
from __future__ import annotations

import inspect
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .errors import ConfigError

# torch 2.13 renamed broadcast_buffers (deprecated there) to forward_sync_buffers; older releases
# (the GPU image's 2.11) know only the first
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
                   else {"broadcast_buffers": False})


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank in [0, size), and its rank on its node (its GPU index)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and shows progress."""
        return self.rank == 0


def world() -> World:
    """The current process group's world; a world of one when none was joined."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank_device(device: torch.device | str) -> torch.device:
    """device, with a CUDA device without an index made this process's own GPU (cuda:LOCAL_RANK); a
    ConfigError when this rank has none (more processes per node than GPUs: NCCL takes one GPU per rank)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and launched():
        local, count = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
        if local >= count:
            raise ConfigError(f"device cuda under torchrun: local rank {local} has no GPU of its own "
                              f"({count} visible); start at most {count} per node (--nproc_per_node={count}) "
                              "or use --device cpu")
        return torch.device("cuda", local)
    return device


@contextmanager
def launch(device: torch.device | str) -> Iterator[torch.device]:
    """Joins torchrun's process group (env:// rendezvous; NCCL on CUDA, Gloo on the CPU) until the block
    ends, and yields this process's device. Outside torchrun, or when a group exists already, it joins
    nothing and yields the device as given."""
    device = rank_device(device)
    if not launched() or dist.is_initialized():
        yield device
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # DistributedDataParallel imports torch.distributed.nn.functional on first use, whose functions take
    # `group=group.WORLD` as a default argument. Imported while the group exists, they would hold it
    # until interpreter shutdown: destroy_process_group could not stop Gloo's worker threads, and one
    # of them freeing a finished all-reduce during shutdown aborts the process ("terminate called
    # without an active exception"). Imported first, the defaults are None.
    # (bound to a private name: `import torch.distributed...` here would make `torch` a local of this function)
    from torch.distributed.nn import functional as _ddp_functional  # noqa: F401
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    try:
        yield device
    finally:
        dist.destroy_process_group()


def batch_problem(batch_size: int) -> str | None:
    """None when a global batch splits evenly across the ranks, else the problem (for config checks)."""
    size = world().size
    return None if batch_size % size == 0 else \
        f"must split evenly across the {size} ranks of this launch, got {batch_size}"


def batch_rows(batch_size: int) -> slice:
    """This rank's rows of a global batch of batch_size: the r-th of world-size equal contiguous slices.

    Equal slices make DistributedDataParallel's average of per-rank mean-loss gradients the gradient
    of the global batch's mean loss.
    """
    problem = batch_problem(batch_size)
    if problem:
        raise ValueError(f"batch_size {problem}")
    w = world()
    rows = batch_size // w.size
    return slice(w.rank * rows, (w.rank + 1) * rows)


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """model wrapped in DistributedDataParallel when there are several ranks (gradients averaged across
    them in backward), else model itself. Buffers are constants here, so they are not re-broadcast."""
    if world().size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   **_NO_BUFFER_SYNC)


def mean(values: Tensor) -> Tensor:
    """The mean of values over the ranks (a new tensor; values itself when alone)."""
    size = world().size
    if size == 1:
        return values
    total = values.clone()
    dist.all_reduce(total)  # Gloo has no ReduceOp.AVG: sum, then divide
    return total / size


def barrier() -> None:
    """Waits until every rank gets here."""
    if world().size > 1:
        dist.barrier()


def my_chunks(count: int) -> list[int]:
    """The chunk indices of this rank among count chunks: rank, rank + W, rank + 2W, ..."""
    w = world()
    return list(range(w.rank, count, w.size))
