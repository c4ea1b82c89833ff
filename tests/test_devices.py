"""Choosing a device: auto picks the best one this machine has; bad device strings get one clear line."""

from __future__ import annotations

import pytest
import torch

from fmapviz.devices import DeviceError, auto_device, check_same_device, describe, float32_precision, resolve_device

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_is_the_best_device_of_this_machine():
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert auto_device().type == expected
    assert resolve_device(None) == resolve_device("auto") == auto_device()


@pytest.mark.parametrize("spelling", ["cpu", "CPU", " cpu "])
def test_cpu_is_always_there(spelling):
    assert resolve_device(spelling) == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("spelling", ["gpu", "cuda0", "tpu:1", ""])
def test_an_unknown_device_string_lists_the_known_ones(spelling):
    with pytest.raises(DeviceError, match="Unknown device .*Use cpu, cuda, cuda:N, mps or auto"):
        resolve_device(spelling)


def test_meta_is_refused_because_it_holds_no_values():
    with pytest.raises(DeviceError, match="meta device holds shapes but no values"):
        resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("spelling", ["cuda", "cuda:0"])
def test_cuda_on_a_machine_without_cuda_says_so(spelling):
    with pytest.raises(DeviceError, match="this machine has no CUDA device"):
        resolve_device(spelling)


@needs_cuda
def test_a_cuda_index_past_the_last_gpu_names_the_range():
    with pytest.raises(DeviceError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
    assert "(" in describe(resolve_device("cuda"))


def test_model_and_input_on_different_devices_name_both():
    check_same_device(torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(DeviceError, match=r"model is on cpu but the input is on meta"):
        check_same_device(torch.device("cpu"), torch.device("meta"))
    assert describe(torch.device("cpu")) == "cpu"


def _precisions() -> tuple[str, ...]:
    backends = torch.backends
    return (
        backends.cudnn.conv.fp32_precision,
        backends.cuda.matmul.fp32_precision,
        backends.mkldnn.conv.fp32_precision,
    )


def test_full_float32_precision_inside_and_the_users_settings_restored_after():
    before = _precisions()
    with float32_precision():
        assert _precisions() == ("ieee", "ieee", "ieee")
    assert _precisions() == before
    with pytest.raises(KeyError), float32_precision():
        raise KeyError("an error inside")
    assert _precisions() == before
    with float32_precision(allow_tf32=True):
        assert _precisions() == before
