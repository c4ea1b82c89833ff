"""Linear CKA between layers, streamed over any number of images.

Linear CKA (Kornblith et al., 2019) of two representations X (n × p) and Y (n × q) of the
same n inputs, with columns centred, is::

    CKA(X, Y) = ||Xᵀ Y||²_F / (||Xᵀ X||_F · ||Yᵀ Y||_F)

This equals the Gram-matrix form HSIC(XXᵀ, YYᵀ) / sqrt(HSIC(XXᵀ, XXᵀ) · HSIC(YYᵀ, YYᵀ)),
but needs no n × n Gram matrix. :class:`StreamingCKA` uses this **exact feature-space
accumulation**: it sums, in float64, each representation's values and the products Xᵀ X, Yᵀ Y
and Xᵀ Y, all taken around a fixed shift (the first batch's mean, so the sums do not cancel
catastrophically), and centres at the end: C = Σ(x−k)(y−k')ᵀ − (Σ(x−k))(Σ(y−k'))ᵀ / n.

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
        self.partners: dict[str, list[str]] = {}
        for a, b in self.pairs:
            self.partners.setdefault(a, []).append(b)
        self.count = 0
        self.shifts: dict[str, torch.Tensor] = {}  # the first batch's mean: sums are taken around it
        self.sums: dict[str, torch.Tensor] = {}  # Σ (x − shift)
        self.squares: dict[str, torch.Tensor] = {}  # Σ (x − shift)ᵀ (x − shift), p × p
        self.cross: dict[str, torch.Tensor] = {}  # Σ (x_a − shift_a)ᵀ [x_b − shift_b for b in partners[a]]

    def update(self, features: Mapping[str, torch.Tensor]) -> StreamingCKA:
        """Fold one batch in: ``features[name]`` is (n, p) (or maps, pooled with grid 1) for every name.

        Products are computed in the features' dtype (float32 maps: float32 products of values
        already shifted to near zero mean) and summed in float64.

        Raises:
            KeyError: a name of the pairs is missing.
            ValueError: the batches of different names have different row counts.
        """
        missing = [name for name in self.names if name not in features]
        if missing:
            raise KeyError(f"update() needs features for {', '.join(missing)}.")
        values = {name: pooled_features(features[name]) for name in self.names}
        rows = {value.shape[0] for value in values.values()}
        if len(rows) != 1:
            raise ValueError(f"Every representation needs the same inputs; got row counts {sorted(rows)}.")
        if rows.pop() == 0:
            return self
        dtype = torch.float64 if any(v.dtype == torch.float64 for v in values.values()) else torch.float32
        first = self.count == 0
        if first:
            self.shifts = {name: value.double().mean(dim=0) for name, value in values.items()}
        shifted = {name: (value.double() - self.shifts[name]).to(dtype) for name, value in values.items()}
        for name, value in shifted.items():
            self._add(self.sums, name, value.sum(dim=0, dtype=torch.float64))
            self._add(self.squares, name, value.T @ value)
        for a, partners in self.partners.items():
            right = torch.cat([shifted[b] for b in partners], dim=1)
            self._add(self.cross, a, shifted[a].T @ right)
        self.count += len(next(iter(values.values())))
        return self

    @staticmethod
    def _add(store: dict[str, torch.Tensor], name: str, value: torch.Tensor) -> None:
        """Add ``value`` into the float64 sum ``store[name]`` in place (no float64 copy of each product)."""
        if name in store:
            store[name].add_(value)
        else:
            store[name] = value.double()

    def _centred(self, a: str, b: str, raw: torch.Tensor) -> torch.Tensor:
        """Co-moment around the means from sums around the shifts: raw − (Σa)(Σb)ᵀ / n."""
        return raw - torch.outer(self.sums[a], self.sums[b]) / self.count

    def _cross(self, a: str, b: str) -> torch.Tensor:
        if b in self.partners.get(a, ()):
            start = sum(self.sums[name].numel() for name in self.partners[a][: self.partners[a].index(b)])
            return self._centred(a, b, self.cross[a][:, start : start + self.sums[b].numel()])
        if a in self.partners.get(b, ()):
            return self._cross(b, a).T
        raise ValueError(f"No CKA was accumulated for ({a!r}, {b!r}); list the pair in pairs=.")

    def cka(self, a: str, b: str) -> float:
        """CKA of representations ``a`` and ``b`` (a pair given at construction).

        Returns 0.0 when either representation is constant over the inputs.

        Raises:
            ValueError: fewer than 2 inputs seen, or an unknown pair.
        """
        if self.count < 2:
            raise ValueError("CKA needs at least 2 inputs; update() with more images first.")
        cross = self._cross(a, b)
        norm_a = self._centred(a, a, self.squares[a]).norm()
        norm_b = self._centred(b, b, self.squares[b]).norm()
        denominator = float(norm_a * norm_b)
        return float(cross.square().sum()) / denominator if denominator > 0 else 0.0

    def matrix(self, rows: list[str], columns: list[str]) -> torch.Tensor:
        """(len(rows), len(columns)) float64 CKA of every listed pair."""
        return torch.tensor([[self.cka(a, b) for b in columns] for a in rows], dtype=torch.float64)  # cpu: a table
