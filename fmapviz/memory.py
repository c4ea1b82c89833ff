"""Memory: what a run will need, what the device has free, and batch sizes that halve on out-of-memory.

* :func:`forward_bytes` measures the activations of one forward pass on the ``meta`` device
  (shapes only: no memory, no arithmetic), so a run that cannot fit is refused before it allocates.
* :func:`free_bytes` reads the device's free memory (CUDA, MPS, or the machine's available RAM).
* :func:`halving` runs a chunked job with an automatic chunk size and halves it on out-of-memory,
  saying so once; a chunk size the user chose is never changed: it gets an error naming the option.
  :func:`halving_chunks` does so for a job in consecutive slices, resuming at the slice that failed.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn
from torch.func import functional_call

from .errors import FmapvizError

T = TypeVar("T")
USABLE_FRACTION = 0.8  # of the free memory a run may plan to use


class MemoryLimitError(FmapvizError, MemoryError):
    """A run that cannot fit in the memory the device has free (the command line exits 2: an option to change)."""

    exit_code = 2


def free_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` in bytes (None when it cannot be read).

    Example:
        >>> fmapviz.memory.free_bytes(torch.device("cpu")) > 0
        True
    """
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    if device.type == "cpu":
        return _available_ram()
    return None


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def forward_bytes(
    model: nn.Module, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, *, kept: bool = True
) -> int:
    """Bytes of the input and of every module output of one forward pass on an input of ``shape`` (what a
    backward keeps); ``kept=False``: of the input and the largest module output only, the least a pass without
    gradients holds at once.

    The forward runs on the ``meta`` device through :func:`torch.func.functional_call` with meta copies of the
    parameters and buffers: the model is not moved or changed and nothing is allocated. A model that cannot run
    on ``meta`` (a data-dependent op) is measured as 0: the guard then lets it run.

    Example:
        >>> fmapviz.memory.forward_bytes(torch.nn.Conv2d(3, 8, 3, padding=1), (1, 3, 32, 32))
        45056
    """
    outputs = [0]

    def count(module: nn.Module, args: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor):
            outputs.append(output.numel() * output.element_size())

    handles = [module.register_forward_hook(count) for module in model.modules() if not any(module.children())]
    try:
        with torch.no_grad():
            meta_forward(model, torch.empty(shape, dtype=dtype, device="meta"))
    except Exception:  # noqa: BLE001 - an op without a meta kernel: no estimate
        return 0
    finally:
        for handle in handles:
            handle.remove()
    return torch.Size(shape).numel() * dtype.itemsize + (sum(outputs) if kept else max(outputs))


def rows_that_fit(device: torch.device, per_row: int) -> int | None:
    """How many rows of ``per_row`` bytes the free memory of ``device`` holds (None when either is unknown).

    Example:
        >>> fmapviz.memory.rows_that_fit(torch.device("cpu"), 2**20) > 0
        True
    """
    free = free_bytes(device)
    return int(USABLE_FRACTION * free // per_row) if free and per_row else None


def meta_forward(model: nn.Module, x: torch.Tensor) -> object:
    """``model(x)`` on the ``meta`` device: meta copies of its parameters and buffers through
    :func:`torch.func.functional_call`, so shapes come out and nothing is allocated or changed.

    Example:
        >>> fmapviz.memory.meta_forward(torch.nn.Conv2d(3, 8, 3), torch.empty(1, 3, 32, 32, device="meta")).shape
        torch.Size([1, 8, 30, 30])
    """
    named = itertools.chain(model.named_parameters(), model.named_buffers())
    tensors = {name: torch.empty_like(value, device="meta") for name, value in named}
    return functional_call(model, tensors, (x,), strict=False)


def check_fits(needed: int, device: torch.device, what: str, fix: str) -> None:
    """Raise one line when ``needed`` bytes exceed what ``device`` has free.

    Raises:
        MemoryLimitError: naming the need, the free memory and the option to change (``fix``).

    Example:
        >>> fmapviz.memory.check_fits(1024, torch.device("cpu"), "a tiny run", "--size")
    """
    free = free_bytes(device)
    if free is not None and needed > USABLE_FRACTION * free:
        raise MemoryLimitError(f"{what} needs about {_gib(needed)} but {device} has {_gib(free)} free; {fix}.")


def check_input_fits(
    model: nn.Module, shape: tuple[int, ...], what: str, fix: str = "pass a smaller --size (size=)"
) -> None:
    """Refuse, before anything is allocated, an input of ``shape`` whose forward pass cannot fit in the free memory of
    the model's device: the :func:`forward_bytes` of the model's dtype, at least the input's own bytes.

    Raises:
        MemoryLimitError: one line naming the need, the free memory and ``fix``.

    Example:
        >>> fmapviz.memory.check_input_fits(torch.nn.Conv2d(3, 8, 3), (1, 3, 32, 32), "a small input")
    """
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    floating = next((t for t in itertools.chain(model.parameters(), model.buffers()) if t.is_floating_point()), None)
    dtype = floating.dtype if floating is not None else torch.float32
    needed = max(forward_bytes(model, shape, dtype), torch.Size(shape).numel() * dtype.itemsize)
    check_fits(needed, first.device if first is not None else torch.device("cpu"), what, fix)


def _gib(count: float) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**28 else f"{count / 2**20:.0f} MiB"


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a device running out of memory (CUDA, MPS, or the CPU allocator)."""
    if isinstance(error, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def halving(run: Callable[[int], T], rows: int, *, what: str, option: str, chosen: bool) -> T:
    """``run(rows)``, retried with half the rows after each out-of-memory error when ``rows`` was chosen
    automatically (one warning, the first time); a user's ``rows`` (``chosen=True``) is never changed.

    Raises:
        MemoryLimitError: ``chosen`` rows that do not fit (naming ``option``), or one row that does not fit.

    Example:
        >>> fmapviz.memory.halving(lambda rows: rows, 8, what="IG steps", option="batch_size", chosen=False)
        8
    """
    warned = False
    while True:
        try:
            return run(rows)
        except Exception as error:  # noqa: BLE001 - only out-of-memory is handled
            if not is_out_of_memory(error):
                raise
            _release()
            if chosen or rows == 1:
                hint = f"lower {option}" if chosen and rows > 1 else "use a smaller input or another device"
                raise MemoryLimitError(f"{what}: {rows} row(s) at a time do not fit in memory; {hint}.") from None
            if not warned:
                warnings.warn(f"{what}: out of memory at {rows} rows at a time; retrying with fewer.", stacklevel=2)
                warned = True
            rows //= 2


def halving_chunks(run: Callable[[slice], None], total: int, rows: int, *, what: str, option: str, chosen: bool) -> int:
    """``run(part)`` for consecutive slices of ``range(total)``, ``rows`` long, through :func:`halving`: after an
    out-of-memory the failed slice and the rest run with half the rows (finished slices are kept, so ``run`` must
    leave no trace of a slice that failed). Returns the rows per slice used last.

    Example:
        >>> parts = []
        >>> fmapviz.memory.halving_chunks(parts.append, 5, 2, what="x", option="batch_size", chosen=False), parts
        (2, [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)])
    """
    done = 0

    def from_where_it_stopped(size: int) -> int:
        nonlocal done
        while done < total:
            run(slice(done, min(done + size, total)))
            done = min(done + size, total)
        return size

    return halving(from_where_it_stopped, rows, what=what, option=option, chosen=chosen)


def _release() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
