"""Memory guards: a forward measured on the meta device, free memory, and chunk sizes that halve on OOM."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import assert_same_state, hook_count, model_state

from fmapviz.memory import MemoryLimitError, check_fits, forward_bytes, free_bytes, halving


def test_forward_bytes_counts_input_and_every_leaf_output_without_touching_the_model():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
    before = model_state(model)
    expected = (3 * 32 * 32 + 8 * 32 * 32 + 8 * 32 * 32 + 8) * 4
    assert forward_bytes(model, (1, 3, 32, 32)) == expected
    assert forward_bytes(model, (4, 3, 32, 32)) == 4 * expected
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
