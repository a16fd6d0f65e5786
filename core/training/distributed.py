"""Data parallelism under torchrun / accelerate launch (plain torch.distributed).

Both launchers set RANK, WORLD_SIZE and LOCAL_RANK; rank 0 alone writes the run
directory. gloo on CPU, NCCL on GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"
    owns_group: bool = False  # this process group was started here (and is closed here)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def sum(self, value: float) -> float:
        if not self.enabled:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item())

    def any(self, flag: bool) -> bool:
        return self.sum(1.0 if flag else 0.0) > 0


def init_dist(group: bool = False) -> Dist:
    """The process's place in the job; ``group`` starts a process group even for one process
    (FSDP needs one)."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = f"cuda:{local}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local)
    owns = False
    if world > 1 or group:
        import torch.distributed as dist

        if not dist.is_initialized():
            owns = True
            if world == 1:  # a process group of one, outside torchrun: an in-memory store, no
                # port and nothing written to os.environ (a later vLLM engine in the same
                # process reads RANK/WORLD_SIZE/MASTER_PORT)
                dist.init_process_group("nccl" if cuda else "gloo", store=dist.HashStore(), rank=0, world_size=1)
            else:
                dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank=rank, world=world, local_rank=local, device=device, owns_group=owns)


def close_dist(d: Dist, finished: bool = False) -> None:
    """Destroy the process group this process made. After a finished training every rank waits
    for the others first: a rank that tears the group down while another still talks to it
    aborts (gloo: "terminate called without an active exception"). After a failure it does not
    wait, since the others may never arrive."""
    import torch.distributed as dist

    if d.owns_group and dist.is_available() and dist.is_initialized():
        if finished and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()
