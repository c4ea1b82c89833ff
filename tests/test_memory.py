"""Memory guards: a forward measured on the meta device, free memory, and chunk sizes that halve on OOM."""

from __future__ import annotations

import time

import pytest
import torch
import torchvision
from conftest import FitsRows, assert_same_state, hook_count, model_state
from torch.utils.data import Dataset

import fmapviz
from fmapviz.memory import MemoryLimitError, check_fits, forward_bytes, free_bytes, halving


def test_forward_bytes_counts_input_and_every_leaf_output_without_touching_the_model():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
    before = model_state(model)
    expected = (3 * 32 * 32 + 8 * 32 * 32 + 8 * 32 * 32 + 8) * 4
    assert forward_bytes(model, (1, 3, 32, 32)) == expected
    assert forward_bytes(model, (4, 3, 32, 32)) == 4 * expected
    assert forward_bytes(model, (1, 3, 32, 32), kept=False) == (3 * 32 * 32 + 8 * 32 * 32) * 4  # input, largest
    assert hook_count(model) == 0 and next(model.parameters()).device.type == "cpu"
    assert_same_state(before, model_state(model))


def test_forward_bytes_of_a_torchvision_model_grows_with_the_square_of_the_size():
    model = torchvision.models.mobilenet_v2().eval()
    small, large = forward_bytes(model, (1, 3, 64, 64)), forward_bytes(model, (1, 3, 128, 128))
    assert small > 0 and 3.5 < large / small < 4.5


def test_check_fits_refuses_what_the_machine_cannot_hold_and_names_the_fix():
    check_fits(2**20, torch.device("cpu"), "a small run", "pass --size")
    with pytest.raises(MemoryLimitError, match=r"huge run needs about .* GiB but cpu has .* free; pass a smaller"):
        check_fits(2**60, torch.device("cpu"), "huge run", "pass a smaller --size")
    assert free_bytes(torch.device("cpu")) > 2**20


def _needs_at_most(limit: int, calls: list[int]):
    def run(rows: int) -> int:
        calls.append(rows)
        if rows > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return rows

    return run


def test_automatic_rows_halve_on_out_of_memory_with_one_warning():
    calls: list[int] = []
    with pytest.warns(UserWarning, match="out of memory at 64 rows") as caught:
        assert halving(_needs_at_most(10, calls), 64, what="IG steps", option="batch_size", chosen=False) == 8
    assert calls == [64, 32, 16, 8] and len(caught) == 1


def test_rows_the_user_chose_are_never_changed_and_the_error_names_the_option():
    calls: list[int] = []
    with pytest.raises(MemoryLimitError, match="64 row.* do not fit in memory; lower batch_size"):
        halving(_needs_at_most(10, calls), 64, what="IG steps", option="batch_size", chosen=True)
    assert calls == [64]


def test_other_errors_pass_through_untouched():
    def broken(rows: int) -> int:
        raise ValueError("not memory")

    with pytest.raises(ValueError, match="not memory"):
        halving(broken, 8, what="x", option="batch_size", chosen=False)


class LazyImages(Dataset):
    """``length`` random 3 x size x size images made on demand; reading more than ``reads`` of them fails the test."""

    def __init__(self, length: int, size: int = 16, reads: int | None = None) -> None:
        self.length, self.size, self.reads, self.read = length, size, reads, 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        self.read += 1
        assert self.reads is None or self.read <= self.reads, "images were read before the batch size was checked"
        return torch.rand(3, self.size, self.size, generator=torch.Generator().manual_seed(index))


def test_a_batch_size_that_cannot_fit_is_refused_before_anything_is_allocated(tiny_cnn):
    fmapviz.scan(tiny_cnn, LazyImages(1, reads=None), "features.2")  # imports and warms up outside the clock
    images = LazyImages(10**6, size=256, reads=1)  # a scan batch of 10**6 such images: terabytes
    started = time.perf_counter()
    with pytest.raises(MemoryLimitError, match=r"scan with batch_size=1000000 needs about .* GiB but cpu has .*"):
        fmapviz.scan(tiny_cnn, images, "features.2", batch_size=10**6)
    assert time.perf_counter() - started < 0.5 and images.read <= 1
    with pytest.raises(MemoryLimitError, match=r"maximize with batch_size=1000000 .* lower batch_size"):
        fmapviz.maximize(tiny_cnn, "features.2[0]", copies=10**6, batch_size=10**6, size=64, steps=1, progress=False)
    assert time.perf_counter() - started < 1.0
    assert hook_count(tiny_cnn) == 0
    fits = fmapviz.scan(tiny_cnn, LazyImages(6), "features.2", batch_size=4)
    assert fits.images == 6
    result = fmapviz.maximize(tiny_cnn, "features.2", channels=range(3), batch_size=2, size=16, steps=2, progress=False)
    assert result.images.shape == (3, 3, 16, 16) and result.settings["batch_size"] == 2


def test_maximize_halves_its_automatic_chunk_on_out_of_memory_and_names_a_chosen_one():
    model = FitsRows(rows=3).eval()
    options = dict(channels=range(6), size=16, steps=3, progress=False)
    with pytest.warns(UserWarning, match="maximize: out of memory at 6 rows") as caught:
        automatic = fmapviz.maximize(model, "net.features.2", **options)
    assert len([w for w in caught if "out of memory" in str(w.message)]) == 1
    assert automatic.settings["batch_size"] == 3 and automatic.images.shape[0] == 6
    assert hook_count(model) == 0 and all(p.requires_grad for p in model.parameters())
    explicit = fmapviz.maximize(model, "net.features.2", batch_size=3, **options)
    torch.testing.assert_close(automatic.images, explicit.images)
    torch.testing.assert_close(automatic.final_activation, explicit.final_activation)
    with pytest.raises(MemoryLimitError, match="maximize: 5 row.*lower batch_size"):
        fmapviz.maximize(model, "net.features.2", batch_size=5, **options)


def test_scan_halves_its_automatic_batches_on_out_of_memory_and_keeps_exact_statistics():
    model, images = FitsRows(rows=3).eval(), LazyImages(10)
    with pytest.warns(UserWarning, match="scan: out of memory at 32 rows") as caught:
        automatic = fmapviz.scan(model, images, ["net.features.0", "net.features.2"], topk=4)
    assert len([w for w in caught if "out of memory" in str(w.message)]) == 1
    assert automatic.images == 10 and max(b for b in model.batches[-4:]) <= 3
    explicit = fmapviz.scan(model, images, ["net.features.0", "net.features.2"], topk=4, batch_size=2)
    for name in explicit.layers:
        first, second = automatic.layers[name], explicit.layers[name]
        assert int(first.stats.count) == int(second.stats.count)  # no batch counted twice or half
        torch.testing.assert_close(first.stats.mean, second.stats.mean)
        torch.testing.assert_close(first.top_values, second.top_values)
        assert torch.equal(first.top_sources, second.top_sources) and torch.equal(first.histogram, second.histogram)
    with pytest.raises(MemoryLimitError, match="scan: 5 row.*lower batch_size"):
        fmapviz.scan(model, images, "net.features.2", batch_size=5)
    assert hook_count(model) == 0
