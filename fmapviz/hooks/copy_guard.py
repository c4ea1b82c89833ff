"""The copy-before-write guard: captured maps held by reference keep their values next to in-place ops.

While a capture holds maps by reference (see :data:`fmapviz.hooks.recording.COPY_AT_ONCE_BYTES`), every op of
the forward goes through :class:`CopyBeforeWrite`, a dispatch mode that acts only on ops writing into a held
map's storage. It rests on private PyTorch APIs (:mod:`fmapviz._torch_internals`); with those switched off,
captures copy every map instead and never start the guard.
"""

from __future__ import annotations

from typing import Any

import torch

from .._torch_internals import TorchDispatchMode, out_of_place, storage_use_count, written_arguments


def storage_key(tensor: torch.Tensor) -> int | None:
    """The address of ``tensor``'s storage, shared by every view of it; None for tensors without plain storage."""
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None


def _run_out_of_place(twin: Any, target: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """Run ``twin`` and move ``target`` onto its result; None when the result's layout differs from target's."""
    result = twin(*args, **kwargs)
    if result.shape != target.shape or result.dtype != target.dtype or result.stride() != target.stride():
        return None  # the in-place op would keep target's layout: copy the maps and run it instead
    return target.set_(result)


class CopyBeforeWrite(TorchDispatchMode):
    """Keeps captured tensors intact when an in-place op is about to overwrite their storage.

    ``watched`` maps a :func:`storage_key` to the keys of the maps in ``maps`` that hold that storage;
    the capture fills and clears both. Usually the captured map is copied first. For a pointwise in-place
    op (``relu_``, ``add_``, ``hardtanh_``) on a tensor that nothing but the model's own tensor and our
    maps refer to, the op runs out of place instead and the model's tensor moves onto the new storage: the
    map keeps the old values without a copy, and the model cannot tell the difference.
    """

    def __init__(self, watched: dict[int | None, list[str]], maps: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.watched = watched
        self.maps = maps

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        watched = self.watched
        if watched:
            for index, name in written_arguments(func):
                target = args[index] if index < len(args) else kwargs.get(name)
                if not isinstance(target, torch.Tensor):
                    continue
                keys = watched.pop(storage_key(target), ())
                twin = out_of_place(func) if keys else None
                if twin is not None and self._only_maps_share(target, keys):
                    redirected = _run_out_of_place(twin, target, args, kwargs)
                    if redirected is not None:
                        return redirected
                for key in keys:
                    self.maps[key] = self.maps[key].clone()
        return func(*args, **kwargs)

    def _only_maps_share(self, target: torch.Tensor, keys: list[str]) -> bool:
        """True when the storage's only users are ``target`` and the maps stored under ``keys``."""
        if target.requires_grad or target.storage_offset() != 0:
            return False
        try:
            storage = target.untyped_storage()
        except (RuntimeError, NotImplementedError):  # no plain storage (sparse, tensor subclasses): copy instead
            return False
        holders = 2 + len({id(self.maps[key]) for key in keys})  # target, `storage`, the maps
        return storage_use_count(storage) == holders
