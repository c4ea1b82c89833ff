"""Linear CKA between layers, streamed over any number of images.

Linear CKA (Kornblith et al., 2019) of two representations X (n × p) and Y (n × q) of the
same n inputs, with columns centred, is::

    CKA(X, Y) = ||Xᵀ Y||²_F / (||Xᵀ X||_F · ||Yᵀ Y||_F)

This equals the Gram-matrix form HSIC(XXᵀ, YYᵀ) / sqrt(HSIC(XXᵀ, XXᵀ) · HSIC(YYᵀ, YYᵀ)),
but needs no n × n Gram matrix. :class:`StreamingCKA` uses this **exact feature-space
accumulation**: it keeps, in float64, each representation's mean and the centred co-moment
matrices Xᵀ X, Yᵀ Y and Xᵀ Y, and folds every batch in with the parallel co-moment update
of Chan, Golub and LeVeque (as :mod:`fmapviz.stats` does for variances)::

    C = C_a + C_b + (m_b − m_a)ₓ (m_b − m_a)ᵧᵀ · n_a n_b / n

Memory is O(p² + q² + p·q) per pair, flat in the number of images, and the result equals
one pass over all images to float rounding (not the minibatch estimator of Nguyen et al. 2021,
which averages per-batch HSICs and depends on the batch size).

Feature maps (N, C, H, W) are first average-pooled to a ``grid`` × ``grid`` map per channel
(``grid=1``: global average pooling, p = C), so a layer's features are the C·grid² pooled values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F


def pooled_features(maps: torch.Tensor, grid: int = 1) -> torch.Tensor:
    """(N, features) from (N, C, H, W) maps average-pooled to ``grid`` × ``grid``, or (N, C) as is.

    Raises:
        ValueError: ``maps`` is not 2-D or 4-D, or ``grid`` < 1.

    Example:
        >>> pooled_features(torch.randn(8, 16, 7, 7)).shape
        torch.Size([8, 16])
    """
    if grid < 1:
        raise ValueError(f"grid must be at least 1, got {grid}.")
    if maps.ndim == 2:
        return maps.detach()
    if maps.ndim == 3:  # (N, tokens, C) that capture could not read as a map: mean over tokens
        return maps.detach().mean(dim=1)
    if maps.ndim != 4:
        raise ValueError(f"maps must be (N,C,H,W) or (N,C), got shape {tuple(maps.shape)}.")
    pooled = F.adaptive_avg_pool2d(maps.detach().float(), grid) if grid > 1 else maps.detach().float().mean((2, 3))
    return pooled.flatten(1)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two feature matrices (n × p) and (n × q) of the same n inputs, in one pass.

    Raises:
        ValueError: the row counts differ or fewer than 2 rows.

    Example:
        >>> x = torch.randn(100, 10)
        >>> round(linear_cka(x, 3 * x), 6)
        1.0
    """
    streaming = StreamingCKA([("x", "y")])
    streaming.update({"x": x, "y": y})
    return streaming.cka("x", "y")


class StreamingCKA:
    """Linear CKA of chosen pairs of representations, folded in batch by batch.

    Args:
        pairs: the (name_a, name_b) pairs whose CKA is wanted; every name in them must be fed
            to :meth:`update` with each batch.

    Example:
        >>> cka = StreamingCKA([("a.layer1", "b.layer1")])
        >>> for batch in batches:
        ...     cka.update({"a.layer1": features_a(batch), "b.layer1": features_b(batch)})
        >>> cka.cka("a.layer1", "b.layer1")
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.pairs = list(dict.fromkeys((a, b) for a, b in pairs))
        self.names = list(dict.fromkeys(name for pair in self.pairs for name in pair))
        self.count = 0
        self.means: dict[str, torch.Tensor] = {}
        self.comoments: dict[tuple[str, str], torch.Tensor] = {}

    def update(self, features: Mapping[str, torch.Tensor]) -> StreamingCKA:
        """Fold one batch in: ``features[name]`` is (n, p) (or maps, pooled with grid 1) for every name.

        Raises:
            KeyError: a name of the pairs is missing.
            ValueError: the batches of different names have different row counts.
        """
        missing = [name for name in self.names if name not in features]
        if missing:
            raise KeyError(f"update() needs features for {', '.join(missing)}.")
        values = {name: pooled_features(features[name]).to(torch.float64) for name in self.names}
        rows = {value.shape[0] for value in values.values()}
        if len(rows) != 1:
            raise ValueError(f"Every representation needs the same inputs; got row counts {sorted(rows)}.")
        n_b = rows.pop()
        if n_b == 0:
            return self
        means = {name: value.mean(dim=0) for name, value in values.items()}
        centred = {name: values[name] - means[name] for name in self.names}
        n_a, n = self.count, self.count + n_b
        for key in self._keys():
            a, b = key
            batch = centred[a].T @ centred[b]
            if n_a == 0:
                self.comoments[key] = batch
            else:
                delta_a, delta_b = means[a] - self.means[a], means[b] - self.means[b]
                self.comoments[key] += batch + torch.outer(delta_a, delta_b) * (n_a * n_b / n)
        for name in self.names:
            self.means[name] = (
                means[name] if n_a == 0 else self.means[name] + (means[name] - self.means[name]) * (n_b / n)
            )
        self.count = n
        return self

    def _keys(self) -> list[tuple[str, str]]:
        return [(name, name) for name in self.names] + [pair for pair in self.pairs if pair[0] != pair[1]]

    def cka(self, a: str, b: str) -> float:
        """CKA of representations ``a`` and ``b`` (a pair given at construction, or a name with itself).

        Returns 0.0 when either representation is constant over the inputs.

        Raises:
            ValueError: fewer than 2 inputs seen, or an unknown pair.
        """
        if self.count < 2:
            raise ValueError("CKA needs at least 2 inputs; update() with more images first.")
        if (a, b) in self.comoments:
            cross = self.comoments[(a, b)]
        elif (b, a) in self.comoments:
            cross = self.comoments[(b, a)]
        else:
            raise ValueError(f"No CKA was accumulated for ({a!r}, {b!r}); list the pair in pairs=.")
        denominator = float(self.comoments[(a, a)].norm() * self.comoments[(b, b)].norm())
        return float(cross.square().sum()) / denominator if denominator > 0 else 0.0

    def matrix(self, rows: list[str], columns: list[str]) -> torch.Tensor:
        """(len(rows), len(columns)) float64 CKA of every listed pair."""
        return torch.tensor([[self.cka(a, b) for b in columns] for a in rows], dtype=torch.float64)
