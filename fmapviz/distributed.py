"""torchrun in one place: joining the process group, this process's rank, barriers, gathers, and checks made
on rank 0 that every process obeys.

Outside a process group (no ``torchrun``, or a PyTorch without ``torch.distributed``) every helper
answers as for a single process: rank 0 of 1, a barrier that returns at once, a gather of one value.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .errors import FmapvizError


def is_distributed() -> bool:
    """Whether this process is in a ``torch.distributed`` process group."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, the number of processes): (0, 1) outside a process group."""
    if is_distributed():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait until every process of the group gets here (returns at once outside a group)."""
    if is_distributed():
        torch.distributed.barrier()


def gather_objects(value: Any) -> list[Any]:
    """Every process's ``value``, in rank order, on every process (``[value]`` outside a group).

    Values travel pickled (``all_gather_object``): keep them plain (tensors on CPU, lists, numbers).
    """
    if not is_distributed():
        return [value]
    values: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(values, value)
    return values


def check_on_rank_zero(check: Callable[[], None]) -> None:
    """Run ``check`` on rank 0 only and raise what it raises on every process, so that no process waits in a
    barrier for one that stopped (outside a group: just ``check()``).

    The exception travels pickled: keep it plain (an :class:`~fmapviz.errors.FmapvizError` with its message).

    Example:
        >>> check_on_rank_zero(lambda: None)  # under torchrun: every rank returns, or every rank raises
    """
    error = None
    if rank_and_world()[0] == 0:
        try:
            check()
        except Exception as raised:  # noqa: BLE001 - raised again below, on every process
            error = raised
    shared = gather_objects(error if error is None or _picklable(error) else FmapvizError(str(error)))[0]
    if error is not None:
        raise error
    if shared is not None:
        raise shared


def _picklable(value: Any) -> bool:
    try:
        pickle.loads(pickle.dumps(value))
    except Exception:  # noqa: BLE001 - any failure means: send something plainer
        return False
    return True


@contextmanager
def torchrun_group(device: str | None = None) -> Iterator[tuple[int, str | None]]:
    """Join the process group ``torchrun`` describes in the environment, if any, for the length of the block.

    A group this call started is destroyed when the block ends; one already joined is left as it is.

    Yields:
        (rank, device): this process's rank (0 without torchrun) and where it should run: ``device``
        as given, else ``cuda:LOCAL_RANK`` under torchrun on a GPU machine, else None.

    Example:
        >>> with torchrun_group() as (rank, device):
        ...     result = fmapviz.scan(fmapviz.load_model("mobilenet_v2", device=device), "photos/", "features.7")
        ...     if rank == 0:
        ...         _ = result.save("out/")
    """
    started = False
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not is_distributed():
        torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        started = True
    try:
        if device is None and is_distributed() and torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
        yield rank_and_world()[0], device
    finally:
        if started:
            torch.distributed.destroy_process_group()
