"""Early stopping of activation maximization: an image stops once its objective has converged.

Under random transforms the objective is noisy from step to step, so it is compared over windows:
an image has converged when the mean of its last ``window`` values gained at most ``tolerance`` times
that mean (in absolute value) over the mean of the ``window`` values before. Each image is judged on its
own values only, and a stopped image is frozen (its parameters keep the values they had when it stopped),
so when an image stops and what it becomes do not depend on the other images of its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def stop_window(steps: int) -> int:
    """Steps per comparison window: an eighth of ``steps``, at least 8 (so the earliest stop is after 16).

    Example:
        >>> stop_window(128), stop_window(32)
        (16, 8)
    """
    return max(8, steps // 8)


def converged(values: torch.Tensor, tolerance: float, window: int) -> torch.Tensor:
    """(N,) bool: which images' objective has converged, from ``values`` (steps, N) of their objective per step.

    Example:
        >>> rising, flat = torch.arange(32.0), torch.ones(32)
        >>> converged(torch.stack([rising, flat], 1), 0.01, 8).tolist()
        [False, True]
    """
    if values.shape[0] < 2 * window:
        return torch.zeros(values.shape[1], dtype=torch.bool, device=values.device)
    recent, before = values[-window:].mean(0), values[-2 * window : -window].mean(0)
    return recent - before <= tolerance * recent.abs()


class EarlyStop:
    """The optimization state of one batch: each image's objective per step, which images stopped and when.

    With ``tolerance=None`` no image ever stops.
    """

    def __init__(self, count: int, steps: int, tolerance: float | None, device: torch.device) -> None:
        self.count, self.steps, self.tolerance, self.window = count, steps, tolerance, stop_window(steps)
        self.values: list[torch.Tensor] = []  # per step (N,), NaN for images that had stopped
        self.stopped = torch.zeros(count, dtype=torch.bool, device=device)
        self.steps_run = [steps] * count
        self.active = list(range(count))  # images still optimized
        self._held: list[torch.Tensor] = []

    @property
    def finished(self) -> bool:
        return not self.active

    def record(self, step: int, score: torch.Tensor, parameters: Sequence[torch.Tensor]) -> None:
        """After ``step``'s optimizer update: keep the images that stopped before as they were, note the
        objective ``score`` of the active images (or of all), and stop those that converged (parameters batch
        first)."""
        if score.shape[0] != len(self.active):
            score = score[self.active]
        if len(self.active) == self.count:
            self.values.append(score)
        else:
            full = torch.full((self.count,), float("nan"), device=score.device, dtype=score.dtype)
            full[self.active] = score
            self.values.append(full)
            with torch.no_grad():
                for parameter, held in zip(parameters, self._held):
                    parameter[self.stopped] = held[self.stopped]
        if self.tolerance is None:
            return
        done = converged(torch.stack(self.values[-2 * self.window :]), self.tolerance, self.window).tolist()
        new = [row for row in self.active if done[row]]
        if not new:
            return
        if not self._held:
            self._held = [parameter.detach().clone() for parameter in parameters]
        with torch.no_grad():
            for parameter, held in zip(parameters, self._held):
                held[new] = parameter[new]
        for row in new:
            self.steps_run[row] = step + 1
            self.stopped[row] = True
        self.active = [row for row in self.active if row not in new]

    def history(self) -> torch.Tensor:
        """(steps, N) objective per step, NaN after an image stopped (and for steps after all had stopped)."""
        device = self.stopped.device
        if not self.values:
            return torch.zeros(0, self.count, device=device)
        history = torch.stack(self.values)
        missing = torch.full((self.steps - history.shape[0], self.count), float("nan"), device=device)
        return torch.cat([history, missing])
