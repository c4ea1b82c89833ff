"""Activation maximization: optimize images so that objectives (channels, classes, layers) grow.

Speed comes from not doing wasted work: parameters are frozen (no weight gradients), the
forward pass stops after the deepest layer an objective reads (unless a class objective
needs the output), the model sees the image at its own size (no upsample unless
``model_size=`` asks), and the images of many channels are optimized in one batch.

Seeds, by design: image ``i`` has its own ``torch.Generator`` seeded ``seed + copy`` (``copy``
is 0 unless ``copies > 1``), used for its initial noise and for every random transform it
sees. A per-image objective (one per channel or class) reads only its own image's
activations. So image ``i`` of a batched run equals a single run with the same seed, and
``channels=range(16)`` gives the same images as sixteen one-channel calls; ``seeds=`` gives each image
its own seed, so one batch can hold several copies of many objectives, from several layers.

``stop_tolerance=`` stops each image once its objective has converged (:mod:`.stopping`); a stopped image
is frozen, so it too is the same whatever batch it is part of.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import LayerNotFoundError, closest_names
from ...hooks import capture, model_guard
from ...inputs import IMAGENET_MEAN, IMAGENET_STD, model_device
from ...memory import check_fits, forward_bytes, halving_chunks, rows_that_fit
from ...model_input import accepts_loaded_model, fixed_model_size, model_dtype
from ...models import LoadedModel
from ...outputs import output_tensor
from ...vocabulary import Unit, bare_int_error, is_unit
from .objectives import INPUT, OUTPUT, Objective, channel, class_logit, parse_objective
from .param import PARAMS
from .stopping import EarlyStop
from .transforms import Transform, apply, resolve_transforms

ObjectiveLike = str | Objective


@dataclass
class ActMaxResult:
    """What :func:`maximize` returns.

    Attributes:
        images: (N,3,H,W) optimized images in [0, 1], on the model's device.
        history: (steps, N) objective value of each image at each step (with random transforms); NaN after
            the image stopped early.
        initial_activation: (N,) objective of each starting image, without random transforms.
        final_activation: (N,) objective of each final image, without random transforms.
        labels: N readable objective names (``"features.10[17]"``, ``"class:954"``).
        names: what each image shows, in words: the class name (``"banana"``) where ``categories`` were
            known, else the label.
        channels: the channel (or class) index of each image when ``channels=`` was given, else None.
        settings: the arguments used (size, steps, lr, param, seed, ...).
        steps_run: the optimization steps each image got: ``steps``, or fewer where ``stop_tolerance=``
            stopped it early.
    """

    images: torch.Tensor
    history: torch.Tensor
    initial_activation: torch.Tensor
    final_activation: torch.Tensor
    labels: list[str]
    channels: list[int] | None = None
    names: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    steps_run: list[int] = field(default_factory=list)


@accepts_loaded_model(
    inputs=(), mean="mean", std="std", categories="categories", size="input_size", model_size=fixed_model_size
)
def maximize(
    model: nn.Module | LoadedModel,
    objective: ObjectiveLike | Sequence[ObjectiveLike] | Callable[[int], Objective],
    *,
    channels: Iterable[int] | str | None = None,
    size: int | tuple[int, int] = 224,
    steps: int = 256,
    lr: float = 0.05,
    param: str = "fft",
    decorrelate: bool = True,
    transforms: str | Sequence[Transform] | None = "standard",
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    stop_tolerance: float | None = None,
    batch_size: int | str = "auto",
    progress: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    init: torch.Tensor | None = None,
    categories: Sequence[str] | None = None,
    copies: int = 1,
    model_size: int | tuple[int, int] | None = None,
) -> ActMaxResult:
    """Optimize images that maximize ``objective`` (Lucid-style feature visualization).

    Args:
        model: any image model; used as is (eval mode, frozen parameters, all restored afterwards).
        objective: an :class:`Objective`, its string form (``"features.10[17]"``, ``"features.10"``,
            ``"class:954"``; see :mod:`fmapviz.engines.actmax.objectives`), or a list of them (one image
            each). With ``channels=``: a layer name (one image per channel of it), ``"class"`` (one image
            per class index), or a function ``index -> Objective``.
        channels: channel (or class) indices, or ``"all"``; image ``i`` maximizes channel ``channels[i]``.
        size: image height and width in pixels (ignored when ``init`` is given).
        steps: optimization steps (Adam).
        lr: Adam learning rate.
        param: ``"fft"`` (1/f-scaled Fourier spectrum) or ``"pixels"``.
        decorrelate: use Lucid's ImageNet colour decorrelation.
        transforms: ``"standard"`` (pad, jitter, scale, rotate, jitter), ``"none"``/None, or a list of transforms.
        seed: seed of the per-image generators (see the module docstring).
        seeds: one seed per image instead (e.g. ``seed + copy`` for copies of many channels in one call).
        stop_tolerance: stop an image once the mean of its objective over the last window of steps (an eighth
            of ``steps``, at least 8) gained at most this fraction over the window before (e.g. 0.01); it is
            then frozen and ``steps_run`` says when. None (the default): every image runs every step.
        batch_size: images optimized together; ``"auto"`` picks 16 on CPU (bigger batches do not pay
            there) and, on a GPU, what its free memory holds, halved and retried on out-of-memory. Results do not
            depend on it. A given size that cannot fit is refused before anything is allocated.
        progress: show a tqdm bar with the current mean objective.
        mean, std: the model's input normalization (default ImageNet), applied inside.
        init: start from these images (1 or N, 3, H, W) in [0, 1] instead of noise (DeepDream on a photo).
        categories: class names, for ``"class:banana"``.
        copies: images per objective, each with seed ``seed + copy`` (use with ``diversity``).
        model_size: resize the transformed image to this size before the model (lucent uses 224);
            default: the model sees the image at its own size.

    Returns:
        An :class:`ActMaxResult`.

    Raises:
        LayerNotFoundError: an objective names a layer the model lacks; the message lists the closest.
        ValueError: an objective string, channel, parameterization or size is invalid.
        MemoryLimitError: a ``batch_size`` that does not fit in the device's free memory (or one image does not).

    Example:
        >>> result = fmapviz.maximize(model, "features.10", channels=range(4), size=64, steps=8, progress=False)
        >>> result.images.shape, result.labels[0]
        (torch.Size([4, 3, 64, 64]), 'features.10[0]')
    """
    if param not in PARAMS:
        raise ValueError(f"Unknown param '{param}'. Use one of {sorted(PARAMS)}.")
    if steps < 0 or copies < 1:
        raise ValueError(f"steps must be >= 0 and copies >= 1, got steps={steps}, copies={copies}.")
    if steps == 0 and init is None:
        raise ValueError("steps must be >= 1: with steps=0 the images are the starting noise (steps=0 needs init=).")
    if stop_tolerance is not None and not stop_tolerance >= 0:
        raise ValueError(f"stop_tolerance must be 0 or more (or None), got {stop_tolerance}.")
    device, dtype = model_device(model), model_dtype(model)
    height, width = _pair(size) if init is None else tuple(init.shape[-2:])
    chain = resolve_transforms(transforms)
    mean_t = torch.tensor(IMAGENET_MEAN if mean is None else mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(IMAGENET_STD if std is None else std, device=device).view(1, -1, 1, 1)

    with model_guard(model):
        shared, per_image, channel_list = _objectives(model, objective, channels, categories, (height, width), device)
        if shared is not None:
            count = max(copies, init.shape[0] if init is not None and init.dim() == 4 else 1)
            objectives = [shared] * count
        else:
            if copies > 1:
                raise ValueError("copies > 1 needs a single objective, not one per channel or a list.")
            objectives = per_image
        seeds = _image_seeds(seeds, seed, copies, len(objectives))
        _check_layers(model, list({id(objective): objective for objective in objectives}.values()))
        starts = _init_images(init, len(objectives), device)
        shape = (1, mean_t.shape[1], *(_pair(model_size) if model_size is not None else (height, width)))
        chunk = _chunk_size(batch_size, len(objectives), device, model, shape)

        def evaluate(image: torch.Tensor, chosen: list[Objective], random: list[torch.Generator] | None):
            x = apply(image, chain, random) if random is not None else image
            if model_size is not None:
                x = F.interpolate(x, size=_pair(model_size), mode="bilinear", align_corners=False)
            # the image and its optimizer stay float32; the forward runs in the model's dtype (float16, bfloat16)
            tensors = _forward(model, ((as_channels(x, mean_t.shape[1]) - mean_t) / std_t).to(dtype), chosen)
            tensors[INPUT] = image
            if shared is not None:
                return shared(tensors).float()
            # unbind: one backward node per tensor; B slices would each backprop through a full-size zero tensor
            parts = {key: value.unbind(0) for key, value in tensors.items()}
            return torch.cat([obj({k: v[i][None] for k, v in parts.items()}) for i, obj in enumerate(chosen)]).float()

        images, history, initial, final, steps_run = [], [], [], [], []
        from tqdm.auto import tqdm

        bar = tqdm(total=steps * len(objectives), disable=not progress, desc="maximize", unit="img-step")

        def optimize(part: slice) -> None:
            """Optimize the images of ``part``; the results are kept only when the whole chunk finishes."""
            bar.n = sum(steps_run)  # the steps of a chunk cut short by out-of-memory count again
            generators = [torch.Generator().manual_seed(s) for s in seeds[part]]
            parameters, render = PARAMS[param](
                (height, width),
                generators,
                decorrelate=decorrelate,
                init=None if starts is None else starts[part],
                device=device,
            )
            optimizer = torch.optim.Adam(parameters, lr=lr)
            chosen = objectives[part]
            with torch.no_grad():
                before = evaluate(render(), chosen, None)
            stop = EarlyStop(len(chosen), steps, stop_tolerance, device)
            for step in range(steps):
                optimizer.zero_grad(set_to_none=True)
                image, rows = render(), stop.active
                if shared is None and len(rows) < len(chosen):  # a stopped image leaves the forward
                    score = evaluate(image[rows], [chosen[i] for i in rows], [generators[i] for i in rows])
                else:  # a shared objective may compare the images (diversity): it sees them all
                    score = evaluate(image, chosen, generators)
                (-score.sum()).backward()
                optimizer.step()
                stop.record(step, score.detach(), parameters)
                bar.update(len(rows))
                if step % 8 == 0 or step == steps - 1:
                    bar.set_postfix(objective=f"{score.detach().mean().item():.3g}")
                if stop.finished:
                    break
            with torch.no_grad():
                image = render()
                after = evaluate(image, chosen, None)
            initial.append(before)
            final.append(after)
            images.append(as_channels(as_channels(image.detach(), mean_t.shape[1]), 3))  # what the model saw
            history.append(stop.history())
            steps_run.extend(stop.steps_run)

        try:
            chunk = halving_chunks(
                optimize, len(objectives), chunk, what="maximize", option="batch_size", chosen=batch_size != "auto"
            )
        finally:
            bar.close()

    settings = dict(size=(height, width), steps=steps, lr=lr, param=param, decorrelate=decorrelate, seed=seed,
                    transforms=transforms if isinstance(transforms, str) or transforms is None else "custom",
                    batch_size=chunk, mean=tuple(mean_t.flatten().tolist()), std=tuple(std_t.flatten().tolist()),
                    copies=copies, model_size=model_size, init=init is not None,
                    stop_tolerance=stop_tolerance)  # fmt: skip
    return ActMaxResult(
        images=torch.cat(images),
        history=torch.cat(history, dim=1),
        initial_activation=torch.cat(initial),
        final_activation=torch.cat(final),
        labels=[obj.name for obj in objectives],
        channels=channel_list,
        names=[class_name(obj.name, categories) for obj in objectives],
        settings=settings,
        steps_run=steps_run,
    )


def as_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """(N,3,H,W) images as the model's 1 (luminance, ITU-R 601) or 3 channels; (N,1,H,W) repeated to 3."""
    if images.shape[1] == channels:
        return images
    if channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype)
        return (images * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)
    return images.expand(-1, channels, -1, -1)


def _image_seeds(seeds: Sequence[int] | None, seed: int, copies: int, count: int) -> list[int]:
    """One seed per image: ``seeds`` as given, else ``seed + copy`` for copies, else ``seed``."""
    if seeds is None:
        return [seed + i for i in range(count)] if copies > 1 else [seed] * count
    if isinstance(seeds, (int, str)) or len(seeds) != count:
        given = seeds if isinstance(seeds, (int, str)) else f"{len(seeds)} seeds"
        raise ValueError(f"seeds= needs one seed per image ({count}), got {given}; or pass seed= for all of them.")
    return [int(value) for value in seeds]


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size}.")
    return int(height), int(width)


def _objectives(
    model: nn.Module,
    objective: Any,
    channels: Iterable[int] | str | None,
    categories: Sequence[str] | None,
    size: tuple[int, int],
    device: torch.device,
) -> tuple[Objective | None, list[Objective], list[int] | None]:
    """(shared objective, per-image objectives, channel indices): exactly one of the first two is used."""
    if isinstance(objective, int) or (isinstance(objective, Sequence) and any(isinstance(o, int) for o in objective)):
        value = objective if isinstance(objective, int) else next(o for o in objective if isinstance(o, int))
        convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
        raise bare_int_error(value, convs[-1] if convs else "features.10")
    if channels is None:
        if isinstance(objective, (str, Unit, Objective)):
            return parse_objective(objective, categories), [], None
        if callable(objective):
            raise ValueError("A function objective needs channels=, e.g. channels=range(16).")
        per_image = [parse_objective(item, categories) for item in objective]
        if not per_image:
            raise ValueError("The objective list is empty.")
        return None, per_image, None
    if isinstance(objective, (Objective, Unit)) or (
        isinstance(objective, str) and (is_unit(objective) or objective.startswith(("class:", "deepdream:")))
    ):
        raise ValueError(
            f"With channels=, pass a layer name (e.g. 'features.10'), 'class' or a function index -> Objective; "
            f"got {getattr(objective, 'name', objective)!r}."
        )
    if callable(objective) and not isinstance(objective, str):
        make = objective
    elif objective == "class":
        make = class_logit
    else:
        make = lambda index: channel(objective, index)  # noqa: E731
    if isinstance(channels, str):
        if channels != "all":
            raise ValueError(f"channels must be indices or 'all', got '{channels}'.")
        channels = range(_channel_count(model, objective, size, device))
    channel_list = [int(c) for c in channels]
    if not channel_list:
        raise ValueError("channels is empty; pass indices such as range(16) or 'all'.")
    return None, [make(c) for c in channel_list], channel_list


def _channel_count(model: nn.Module, objective: Any, size: tuple[int, int], device: torch.device) -> int:
    if not isinstance(objective, str):
        raise ValueError("channels='all' needs a layer name (or 'class') as the objective.")
    probe = torch.zeros(1, 3, *size, device=device)
    with torch.no_grad():
        if objective == "class":
            return output_tensor(model(probe)).shape[1]  # classes are dimension 1, also for (N,K,H,W)
        _check_layers(model, [channel(objective, 0)])
        with capture(model, objective, stop_early=True) as maps:
            model(probe)
    return maps[objective].shape[1]


def _check_layers(model: nn.Module, objectives: Sequence[Objective]) -> None:
    names = [name for name, _ in model.named_modules() if name]
    known = set(names)
    for objective in objectives:
        for layer in sorted(objective.layers - known):
            base, _, index = layer.rpartition(":")
            if base in known and index.isdigit():  # the old "layer:channel" form
                raise LayerNotFoundError(
                    f"Unknown layer '{layer}' in objective '{objective.name}'. For channel {index} of {base}, "
                    f"write the unit '{base}[{index}]'."
                )
            hint = closest_names(layer, names) or names[:5]
            raise LayerNotFoundError(
                f"Unknown layer '{layer}' in objective '{objective.name}'. Closest: {', '.join(hint)}. "
                "See fmapviz.summary(model)."
            )


def _forward(model: nn.Module, x: torch.Tensor, objectives: Sequence[Objective]) -> dict[str, torch.Tensor]:
    layers = sorted(set().union(*(obj.layers for obj in objectives)))
    needs_output = any(obj.needs_output for obj in objectives)
    output = None
    if layers:
        with capture(model, layers, keep_grad=True, stop_early=not needs_output) as maps:
            output = model(x)
        tensors = dict(maps)
    else:
        output, tensors = model(x), {}
    if needs_output:
        tensors[OUTPUT] = output_tensor(output)
    return tensors


def _init_images(init: torch.Tensor | None, count: int, device: torch.device) -> torch.Tensor | None:
    if init is None:
        return None
    images = init.unsqueeze(0) if init.dim() == 3 else init
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"init must be (3,H,W) or (N,3,H,W) in [0, 1], got shape {tuple(init.shape)}.")
    if images.shape[0] not in (1, count):
        raise ValueError(f"init has {images.shape[0]} images but {count} are optimized; pass 1 or {count}.")
    if images.min() < 0 or images.max() > 1:
        raise ValueError("init must hold values in [0, 1] (a display image, not a normalized tensor).")
    return images.to(device).expand(count, -1, -1, -1)


def auto_batch_size(model: nn.Module, size: int | tuple[int, int], count: int, channels: int = 3) -> int:
    """The images :func:`maximize` optimizes together with ``batch_size="auto"``, for ``count`` images of ``size``
    pixels: 16 on the CPU, on a GPU as many as its free memory holds (never more than ``count``).

    Example:
        >>> auto_batch_size(model, 128, count=100)  # a model on the CPU
        16
    """
    return _chunk_size("auto", count, model_device(model), model, (1, channels, *_pair(size)))


def _chunk_size(
    batch_size: int | str, count: int, device: torch.device, model: nn.Module | None = None, shape: tuple = ()
) -> int:
    """Images optimized together: ``batch_size``, or automatically 16 on the CPU and, on a GPU, as many as its
    free memory holds (one forward's activations per image, times 4 for the backward and the transforms).
    :func:`maximize` halves an automatic size on out-of-memory; a given one that cannot fit raises MemoryLimitError.
    """
    if batch_size == "auto":
        if device.type == "cpu":
            return min(count, 16)
        per_image = 4 * forward_bytes(model, shape, model_dtype(model)) if model is not None and shape else 0
        return max(1, min(count, rows_that_fit(device, per_image) or 64))
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or 'auto', got {batch_size!r}.")
    rows = min(batch_size, count)
    if model is not None and shape:  # the forward activations alone: refused before anything is allocated
        needed = rows * forward_bytes(model, shape, model_dtype(model))
        check_fits(needed, device, f"maximize with batch_size={batch_size}", "lower batch_size (actmax --batch-size)")
    return rows


def class_name(label: str, categories: Sequence[str] | None) -> str:
    """``"banana"`` for the label ``"class:954"`` when ``categories`` name class 954, else the label.

    Example:
        >>> class_name("class:1", ["cat", "dog"]), class_name("features.10[3]", ["cat", "dog"])
        ('dog', 'features.10[3]')
    """
    head, _, index = label.partition(":")
    if head == "class" and index.isdigit() and categories is not None and int(index) < len(categories):
        return str(categories[int(index)])
    return label
