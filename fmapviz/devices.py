"""Which device a run uses: ``"auto"`` picks CUDA, then MPS, then the CPU; bad device strings get one line.

The Python API computes where the model and its input already are and never moves them; only the
command line and ``load_model(..., device="auto")`` choose a device, through :func:`resolve_device`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .errors import FmapvizError

DEVICE_HELP = "cpu, cuda, cuda:1, mps or auto (default: auto, the GPU when there is one: CUDA, then MPS, then cpu)"
_DEVICE_PATTERN = re.compile(r"^(cpu|cuda|mps|meta)(:\d+)?$")
# the float32 precision settings of convolutions and matmuls (PyTorch's fp32_precision API): backend, operation
_PRECISION_SETTINGS = (
    ("cudnn", "conv"),
    ("cudnn", "rnn"),
    ("cuda", "matmul"),
    ("mkldnn", "conv"),
    ("mkldnn", "matmul"),
)


class DeviceError(FmapvizError, ValueError):
    """A device that does not exist on this machine, cannot hold values, or differs between model and input.

    The command line exits with 2 (the ``--device`` option is what to change).
    """

    exit_code = 2


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def auto_device() -> torch.device:
    """The best device this machine has: the first CUDA device, else Apple's MPS, else the CPU.

    Example:
        >>> fmapviz.devices.auto_device().type in {"cpu", "cuda", "mps"}
        True
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The device named by ``device`` (``None`` or ``"auto"``: :func:`auto_device`), checked against this machine.

    Raises:
        DeviceError: the string names no device, the device is not on this machine (``cuda`` without CUDA,
            ``cuda:3`` with two GPUs, ``mps`` off a Mac), or it is ``meta``, which holds no values.

    Example:
        >>> fmapviz.devices.resolve_device("cpu")
        device(type='cpu')
    """
    if device is None or device == "auto":
        return auto_device()
    text = str(device).strip().lower()
    if not _DEVICE_PATTERN.match(text):
        raise DeviceError(f"Unknown device '{device}'. Use cpu, cuda, cuda:N, mps or auto.")
    resolved = torch.device(text)
    if resolved.type == "meta":
        raise DeviceError("The meta device holds shapes but no values; use cpu, cuda or mps (or leave --device out).")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"Device '{device}': this machine has no CUDA device; use cpu, or leave --device out.")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(
                f"Device '{device}': this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}."
            )
    if resolved.type == "mps" and not _mps_available():
        raise DeviceError(f"Device '{device}': MPS is not available on this machine; use cpu, or leave --device out.")
    return resolved


def describe(device: torch.device) -> str:
    """A device as a person reads it: ``"cuda:0 (NVIDIA H100 80GB HBM3)"``, ``"cpu"``.

    Example:
        >>> fmapviz.devices.describe(torch.device("cpu"))
        'cpu'
    """
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def check_same_device(model_device: torch.device, input_device: torch.device, what: str = "input") -> None:
    """Raise one line naming both devices when the model and its input are not on the same device.

    Raises:
        DeviceError: they differ (``cuda`` and ``cuda:0`` count as the same).

    Example:
        >>> fmapviz.devices.check_same_device(torch.device("cpu"), torch.device("cpu"))
    """
    if _canonical(model_device) != _canonical(input_device):
        raise DeviceError(
            f"The model is on {model_device} but the {what} is on {input_device}; "
            f"move one of them, e.g. x.to({str(model_device)!r})."
        )


def check_model_input(model: nn.Module, x: torch.Tensor, what: str = "input") -> torch.device:
    """The model's device, after checking that it holds values and that ``x`` is on it; one line if not.

    The public entry points that take ``(model, x)`` call this once, before any hook or forward pass.
    A model without parameters or buffers runs wherever ``x`` is.

    Raises:
        DeviceError: the model is on the ``meta`` device, or ``x`` is on another device than the model
            (the message names both).

    Example:
        >>> fmapviz.devices.check_model_input(torch.nn.Conv2d(3, 4, 3), torch.zeros(1, 3, 8, 8))
        device(type='cpu')
    """
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    if tensor is not None and tensor.device.type == "meta":
        raise DeviceError(
            "The model is on the meta device (no values); build it on cpu or cuda, or give it values with "
            "model.to_empty(device='cpu') and load_state_dict."
        )
    if not isinstance(x, torch.Tensor):  # the caller's own check names what x should be
        return tensor.device if tensor is not None else torch.device("cpu")
    if tensor is None:
        return x.device
    check_same_device(tensor.device, x.device, what)
    return tensor.device


def _canonical(device: torch.device) -> torch.device:
    if device.type in {"cuda", "mps"} and device.index is None:
        return torch.device(device.type, 0)
    return device


@contextmanager
def float32_precision(allow_tf32: bool = False) -> Iterator[None]:
    """Inside, float32 convolutions and matmuls run at full IEEE precision (no TF32 on NVIDIA GPUs, whose cuDNN
    PyTorch lets use TF32 by default); the user's settings are restored after, even on an error.

    Saliency maps and metrics compute inside it, so a map agrees with the CPU's to float rounding on any card.
    ``allow_tf32=True`` leaves every setting as it is (faster on Ampere and later, maps differ by ~1e-2).

    Example:
        >>> with fmapviz.devices.float32_precision():
        ...     torch.backends.cudnn.conv.fp32_precision
        'ieee'
    """
    if allow_tf32:
        yield
        return
    settings = [
        operation
        for backend, name in _PRECISION_SETTINGS
        if (operation := getattr(getattr(torch.backends, backend, None), name, None)) is not None
        and hasattr(operation, "fp32_precision")
    ]
    saved = [operation.fp32_precision for operation in settings]
    try:
        for operation in settings:
            operation.fp32_precision = "ieee"
        yield
    finally:
        for operation, value in zip(settings, saved):
            operation.fp32_precision = value
