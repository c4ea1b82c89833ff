"""Seeds as arguments: a seeded ``torch.Generator``, draws that do not depend on the device, and the two context
managers that seed a library's global RNG (torch's for captum, numpy's for captum's GradientShap) and give the
caller's state back on exit.

The same seed gives the same picture on every machine: random numbers are drawn on the CPU, from a CPU
generator, and then moved to the input's device (a CUDA generator draws other numbers from the same seed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (default: the CPU, as :func:`randn` and :func:`rand` want) seeded
    with ``seed``: random draws that leave the global RNG untouched.

    Example:
        >>> first = torch.rand(2, generator=generator(0, torch.device("cpu")))
        >>> torch.equal(first, torch.rand(2, generator=generator(0, torch.device("cpu"))))
        True
    """
    return torch.Generator(device=device).manual_seed(seed)


def randn(shape: tuple[int, ...] | torch.Size, draws: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Standard-normal numbers of ``shape`` from the CPU generator ``draws``, on ``like``'s device and dtype:
    the same numbers whatever that device is.

    Example:
        >>> draws = randn((2,), generator(0), torch.zeros(1, dtype=torch.float64))
        >>> torch.equal(draws, randn((2,), generator(0), torch.zeros(1, dtype=torch.float64)))
        True
    """
    return torch.randn(tuple(shape), generator=draws, dtype=like.dtype).to(like.device)


def rand(shape: tuple[int, ...] | torch.Size, draws: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) numbers of ``shape`` from the CPU generator ``draws``, on ``like``'s device and dtype.

    Example:
        >>> bool((rand((3,), generator(0), torch.zeros(1)) < 1).all())
        True
    """
    return torch.rand(tuple(shape), generator=draws, dtype=like.dtype).to(like.device)


def normal(stdev: torch.Tensor, draws: torch.Generator) -> torch.Tensor:
    """``torch.normal(0, stdev)`` drawn on the CPU from ``draws`` and moved to ``stdev``'s device: captum's
    NoiseTunnel noise, the same numbers on every device (on the CPU, the numbers captum draws itself).

    Example:
        >>> normal(torch.zeros(2), generator(0)).tolist()
        [0.0, 0.0]
    """
    return torch.normal(0.0, stdev.detach().cpu(), generator=draws).to(stdev.device)


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for ``device`` for code that does not take a generator (captum), restoring the caller's
    state on exit. The CPU generator is always seeded (captum's KernelSHAP and sensitivity draw there). For
    a CPU only the CPU generator is touched: ``torch.manual_seed`` would also reseed every CUDA device (left
    unrestored), and costs ~0.7 ms a call while CUDA is not initialized."""
    if device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield
        return
    with torch.random.fork_rng(devices=[device], device_type=device.type):
        torch.manual_seed(seed)
        yield


@contextmanager
def numpy_seeded(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG (captum's GradientShap draws its points with it), restoring the caller's state."""
    import numpy as np

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
