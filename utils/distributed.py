"""Data parallelism across processes started by torchrun or `accelerate launch`.

Both launchers set WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init_from_env` joins the
process group they describe (gloo on CPU, nccl on CUDA). Without them, or with WORLD_SIZE=1, it returns the
single-process `Dist`, whose operations are the identity, so the single-process path runs exactly as before.

Every rank holds the same sample (the same seed picks it); `shard` gives each rank every world_size-th item,
`gather_in_order` puts per-item results back in the single-process order, so that anything computed from
them (Fisher, rearrangement, logits) is bit-identical to one process. Sums too large to gather per item
(the least-squares normal equations) are all-reduced.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from utils.errors import UserError

log = logging.getLogger(__name__)


class DistributedError(UserError):
    pass


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None      # None: one process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, items: list) -> list:
        """This rank's items: every world_size-th one, from index rank (balanced for length-sorted batches)."""
        return list(items) if not self.active else list(items)[self.rank::self.world_size]

    def gather_in_order(self, local: list) -> list:
        """The inverse of `shard`: every rank's items (any picklable objects) back in the original order."""
        if not self.active:
            return list(local)
        parts = [None] * self.world_size
        torch.distributed.all_gather_object(parts, [_to_cpu(x) for x in local])
        total = sum(len(p) for p in parts)
        return [parts[i % self.world_size][i // self.world_size] for i in range(total)]

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """In place: the sum over ranks (nccl needs CUDA tensors, gloo CPU ones; moved as needed)."""
        if not self.active:
            return tensor
        work = tensor.to(self.device()) if tensor.device != self.device() else tensor
        torch.distributed.all_reduce(work)
        if work is not tensor:
            tensor.copy_(work)
        return tensor

    def all_gather_object(self, obj) -> list:
        if not self.active:
            return [obj]
        parts = [None] * self.world_size
        torch.distributed.all_gather_object(parts, obj)
        return parts

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


def _to_cpu(x):
    return x.cpu() if isinstance(x, torch.Tensor) else tuple(_to_cpu(y) for y in x) if isinstance(x, tuple) else x


def init_from_env(device_name: str = "auto", timeout_minutes: float = 30) -> Dist:
    """Join the process group that torchrun / accelerate launch describe in the environment (or none)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        check_unread_launch(os.environ)
        return Dist()
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise DistributedError(f"WORLD_SIZE={world} is set but {', '.join(missing)} is not: start the run with "
                               f"torchrun --nproc_per_node N main.py ... or accelerate launch --num_processes N "
                               f"main.py ..., or unset WORLD_SIZE for one process.")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    cuda = device_name != "cpu" and torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"local rank {local_rank} has no GPU (this machine has "
                                   f"{torch.cuda.device_count()}): start at most that many processes per machine.")
        torch.cuda.set_device(local_rank)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend, rank=rank, world_size=world,
                                             timeout=timedelta(minutes=timeout_minutes))
    log.info("process %d of %d (%s)", rank, world, backend)
    return Dist(rank, world, local_rank, backend)


# Launchers whose processes this tool does not join: each process would run the whole job on its own.
MPI_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


def check_unread_launch(env) -> None:
    """One process, but the environment says more were asked for: refuse rather than do all the work in
    one process while the user believes it was split. `accelerate launch --cpu --num_processes N` (no
    --multi_cpu support here) sets MASTER_ADDR/MASTER_PORT and ACCELERATE_USE_CPU but starts one process
    without WORLD_SIZE; mpirun sets its own size variables, which this tool does not read."""
    mpi = {v: env[v] for v in MPI_SIZE_VARS if v in env}
    mpi = {v: n for v, n in mpi.items() if n.strip().isdigit() and int(n) > 1}
    if mpi:
        shown = ", ".join(f"{v}={n}" for v, n in mpi.items())
        raise DistributedError(f"started by mpirun or an MPI launcher ({shown}), whose variables this tool does not "
                               f"read: every process would run the whole job on its own. Start the processes with "
                               f"torchrun --nproc_per_node N main.py ... (or accelerate launch --multi_gpu), or run "
                               f"python main.py once.")
    if "WORLD_SIZE" not in env and "MASTER_ADDR" in env and any(k.startswith("ACCELERATE_") for k in env):
        shown = ", ".join(f"{k}={env[k]}" for k in ("ACCELERATE_USE_CPU", "MASTER_ADDR", "MASTER_PORT") if k in env)
        raise DistributedError(f"started by accelerate launch for several processes ({shown}) but as one process "
                               f"without WORLD_SIZE/RANK, which this tool reads: accelerate's --cpu --num_processes N "
                               f"launch starts one process, so nothing would be split. For several CPU processes "
                               f"use torchrun --nproc_per_node N main.py ... --device cpu; for one, run python "
                               f"main.py (or accelerate launch --num_processes 1).")


def close(dist: Dist) -> None:
    if dist.active and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def check_enough_batches(dist: Dist, what: str, count: int, flag: str) -> None:
    """Every rank needs at least one item of each split, or its share of the work is empty."""
    if dist.active and count < dist.world_size:
        raise DistributedError(f"{what} has {count} batch(es), fewer than the {dist.world_size} processes: raise "
                               f"{flag} or start fewer processes.")
