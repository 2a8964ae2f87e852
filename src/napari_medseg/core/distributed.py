"""Data-parallel training across processes (PyTorch DDP, launched by ``torchrun``).

``torchrun --nproc_per_node=N -m napari_medseg.cli train ...`` sets
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; the engine then joins the process
group, wraps the model in DDP, draws different patches on each rank, and lets
only rank 0 validate, print and write checkpoints. Without those variables
nothing here does anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 validates, reports and saves."""
        return self.rank == 0


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group described by torchrun's environment, if any.

    Returns the job description and the device this rank should use (its own
    GPU, by ``LOCAL_RANK``, when training on CUDA).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return DistInfo(), device
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    return DistInfo(rank, world, local, owns), device


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one.

    Stopping (time budget, a stop request) must be decided together, or one
    rank leaves while the others wait forever in the gradient all-reduce.
    """
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def teardown(info: DistInfo, *, failed: bool = False) -> None:
    """Leave the process group if :func:`setup` created it.

    ``failed``: this rank is leaving on an error. It must not wait at the barrier then:
    the other ranks are blocked in their next all-reduce, so the job would hang with the
    error unprinted. It leaves at once; its exit makes torchrun stop the others.
    """
    if not (info.owns_group and dist.is_initialized()):
        return
    if failed:
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - the error being raised is the one to report
            pass
        return
    dist.barrier()
    dist.destroy_process_group()
