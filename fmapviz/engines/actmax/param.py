"""How the optimized image is parameterized: raw pixels or a 1/f-scaled Fourier spectrum.

Every parameterization returns ``(parameters, render)``: the tensors the optimizer
updates and ``render() -> (B,3,H,W)`` image in [0, 1]. Colours optionally go through
Lucid's ImageNet colour decorrelation, and a sigmoid keeps values in [0, 1].
:data:`PARAMS` is the registry. Noise is drawn from one ``torch.Generator`` per image,
so image ``i`` starts the same whatever batch it is part of.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Render = Callable[[], torch.Tensor]

# Square root of the ImageNet colour correlation matrix (from Lucid), columns scaled to unit max norm.
# cpu: a constant, moved to the image where it is used
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()
_FOURIER_MAGIC = 4.0  # Lucid's scale that brings the inverse FFT to roughly unit variance


def _noise(shape: Sequence[int], generators: Sequence[torch.Generator], std: float) -> torch.Tensor:
    # cpu: drawn from the CPU generators (the same noise on every device); the callers move it
    return torch.stack([torch.randn(tuple(shape), generator=g) * std for g in generators])


def decorrelate_colors(image: torch.Tensor) -> torch.Tensor:
    """Map decorrelated colour channels (B,3,H,W) to RGB-correlated ones."""
    return F.conv2d(image, COLOR_CORRELATION.to(image)[:, :, None, None])


def correlate_colors(image: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`decorrelate_colors`."""
    return F.conv2d(image, torch.linalg.inv(COLOR_CORRELATION).to(image)[:, :, None, None])


def _to_rgb(raw: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    return torch.sigmoid(decorrelate_colors(raw) if decorrelate else raw)


def _from_rgb(image: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    raw = torch.logit(image.clamp(1e-4, 1 - 1e-4))
    return correlate_colors(raw) if decorrelate else raw


def pixel_image(
    size: tuple[int, int],
    generators: Sequence[torch.Generator],
    *,
    decorrelate: bool = True,
    init: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    std: float = 0.01,
) -> tuple[list[torch.Tensor], Render]:
    """One free value per pixel and colour; starts from small noise or from ``init`` (B,3,H,W) in [0, 1]."""
    raw = _from_rgb(init, decorrelate) if init is not None else _noise((3, *size), generators, std)
    raw = raw.detach().to(device).requires_grad_(True)
    return [raw], lambda: _to_rgb(raw, decorrelate)


def _spectrum_scale(height: int, width: int) -> torch.Tensor:
    rows = torch.fft.fftfreq(height)[:, None]
    cols = torch.fft.rfftfreq(width)[None, :]
    frequency = (rows**2 + cols**2).sqrt()
    return 1.0 / frequency.clamp_min(1.0 / max(height, width))


def fourier_image(
    size: tuple[int, int],
    generators: Sequence[torch.Generator],
    *,
    decorrelate: bool = True,
    init: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    std: float = 0.01,
) -> tuple[list[torch.Tensor], Render]:
    """A Fourier spectrum scaled by 1/frequency (Lucid's ``fft_image``): steps change low frequencies most."""
    height, width = size
    scale = _spectrum_scale(height, width).to(device)
    if init is not None:
        raw = _from_rgb(init.to(device), decorrelate) * _FOURIER_MAGIC
        spectrum = torch.view_as_real(torch.fft.rfft2(raw, norm="ortho") / scale)
    else:
        spectrum = _noise((3, height, width // 2 + 1, 2), generators, std)
    spectrum = spectrum.detach().to(device).requires_grad_(True)

    def render() -> torch.Tensor:
        raw = torch.fft.irfft2(torch.view_as_complex(spectrum) * scale, s=(height, width), norm="ortho")
        return _to_rgb(raw / _FOURIER_MAGIC, decorrelate)

    return [spectrum], render


PARAMS: dict[str, Callable[..., tuple[list[torch.Tensor], Render]]] = {
    "pixels": pixel_image,
    "fft": fourier_image,
}
