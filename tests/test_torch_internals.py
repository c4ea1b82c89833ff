"""Private torch and captum APIs live in fmapviz._torch_internals only, and every fallback gives the same results."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import TinyCNN, hook_count
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

import fmapviz
from fmapviz import _torch_internals
from fmapviz._torch_internals import private_apis_enabled, use_private_apis
from fmapviz.engines.inference import PackedLayer, fast_forward, inference_copy
from fmapviz.engines.saliency import saliency

PACKAGE = Path(fmapviz.__file__).parent
DOOR = PACKAGE / "_torch_internals.py"
FOREIGN = ("torch", "captum")
PYTHON_PROTOCOLS = {"_fields", "_replace", "_asdict", "_make", "_field_defaults", "_repr_pretty_", "_missing_"}
"""Underscore names that are public Python API (namedtuple, IPython, enum), not library internals."""

CHECKED_FUNCTIONS = {"getattr", "hasattr", "setattr", "delattr"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _torch_private_names() -> set[str]:
    """Underscore attributes of the torch objects the package handles (modules, tensors, storages, ops)."""
    tensor = torch.zeros(1)
    objects = (torch, nn.Module(), tensor, nn.Parameter(tensor), tensor.untyped_storage(), torch.ops.aten.relu_.default)
    return {name for obj in objects for name in dir(obj) if _private(name)}


def _defined_names(trees: list[ast.AST]) -> set[str]:
    """Every name the given modules define: functions, classes, arguments, assigned names and attributes."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[0])
    return names


def private_uses(tree: ast.AST, own: set[str], torch_private: set[str]) -> list[str]:
    """The private torch / captum APIs one module imports or touches, as ``line: what``.

    An underscore attribute counts as foreign when the package defines no such name, or when it is one of
    torch's own (``_modules``, ``_version``) read from anything but ``self`` / ``cls``.
    """
    found = []

    def foreign(name: str, receiver: ast.AST | None) -> bool:
        if not _private(name) or name in PYTHON_PROTOCOLS:
            return False
        on_self = isinstance(receiver, ast.Name) and receiver.id in ("self", "cls")
        return name not in own or (name in torch_private and not on_self)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in FOREIGN and any(_private(part) for part in parts):
                    found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            parts = node.module.split(".")
            if parts[0] in FOREIGN and (
                any(_private(part) for part in parts) or any(_private(alias.name) for alias in node.names)
            ):
                found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and foreign(node.attr, node.value):
            found.append(f"{node.lineno}: .{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in CHECKED_FUNCTIONS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and foreign(node.args[1].value, node.args[0])
        ):
            found.append(f"{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    return found


def package_trees() -> dict[Path, ast.AST]:
    return {path: ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_but_torch_internals_touches_a_private_torch_or_captum_api():
    trees = package_trees()
    assert DOOR in trees and len(trees) > 50
    own = _defined_names([tree for path, tree in trees.items() if path != DOOR])
    torch_private = _torch_private_names()
    broken = {
        str(path.relative_to(PACKAGE)): uses
        for path, tree in trees.items()
        if path != DOOR and (uses := private_uses(tree, own, torch_private))
    }
    assert not broken, broken
    assert private_uses(trees[DOOR], own, torch_private)  # the scan does see the door's own uses


def test_the_scan_sees_each_kind_of_private_use():
    source = (
        "import torch._dynamo\n"
        "from torch.utils._python_dispatch import TorchDispatchMode\n"
        "from torch.nn.modules.utils import _pair\n"
        "from captum._utils.models import LinearModel\n"
        "count = getattr(torch._C, '_storage_Use_Count', None)\n"
        "version = tensor._version\n"
        "children = module._modules\n"
        "class Own:\n"
        "    def __init__(self):\n"
        "        self._modules = []\n"
        "    def read(self, other):\n"
        "        return self._modules, other._helper, point._fields, self.__class__\n"
        "def _helper():\n"
        "    pass\n"
    )
    tree = ast.parse(source)
    uses = private_uses(tree, _defined_names([tree]), _torch_private_names())
    assert sorted(int(use.split(":")[0]) for use in uses) == [1, 2, 3, 4, 5, 5, 6, 7], uses


# each fallback gives the same results


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def _dispatch_modes_seen(model: nn.Module) -> list:
    modes: list = []
    model.layer4.register_forward_pre_hook(lambda module, args: modes.append(_get_current_dispatch_mode()))
    return modes


def test_capture_fallback_copies_every_map_and_keeps_values_next_to_in_place_ops(monkeypatch):
    model = resnet18()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    block = model.layer1[0]
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        before_add = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(stem)))))  # `out += identity` follows
    modes = _dispatch_modes_seen(model)
    capture_module = importlib.import_module("fmapviz.hooks.recording")
    monkeypatch.setattr(capture_module, "COPY_AT_ONCE_BYTES", 0)  # on: every map is watched by the guard
    watched = fmapviz.feature_maps(model, x, "all")
    assert modes[-1] is not None
    with use_private_apis(False):
        copied = fmapviz.feature_maps(model, x, "all")
    assert modes[-1] is None  # off: no dispatch mode ever started
    assert list(copied) == list(watched)
    assert all(torch.equal(copied[key], watched[key]) for key in watched)
    assert torch.equal(copied["layer1.0.bn2"], before_add) and (before_add < 0).any()  # kept the pre-add value
    assert torch.equal(copied["layer1.0.bn1"], block.bn1(block.conv1(stem)))  # before ReLU(inplace=True)
    assert hook_count(model) == 1  # only this test's own hook


def test_summary_fallback_follows_module_settings_to_the_same_geometry():
    torch.manual_seed(0)
    odd = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding="same"),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
        nn.MaxPool2d(3, stride=2, padding=1, dilation=2),
        nn.Conv2d(4, 4, 4, padding="valid", stride=2),
        nn.AvgPool2d(2),
        nn.AdaptiveAvgPool2d((2, None)),
    ).eval()
    models = [(resnet18(), (1, 3, 64, 64)), (torchvision.models.mobilenet_v2(weights=None), (1, 3, 64, 64))]
    for model, size in [*models, (odd, (1, 3, 40, 40))]:
        on = fmapviz.summary(model, size)
        with use_private_apis(False):
            off = fmapviz.summary(model, size)
        assert list(off) == list(on), type(model).__name__
        assert hook_count(model) == 0


def test_fast_forward_fallback_runs_the_plain_model():
    model = resnet18()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x)
        fast = fast_forward(model)
        with use_private_apis(False):
            assert inference_copy(model) is model  # hooks cannot be seen: nothing is traced
            plain = fast_forward(model)
            torch.testing.assert_close(plain(x), expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-5)  # a traced copy made before
    assert plain.copy is model and fast.copy is not model


def test_packed_layer_takes_the_plain_path_while_switched_off():
    conv = nn.Conv2d(3, 4, 3)
    packed = PackedLayer(conv, nn.ReLU())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        with use_private_apis(False):
            torch.testing.assert_close(packed(x), conv(x).relu())
        assert packed.packed_weight is None and packed.packable  # on again later: the fused call is still open
        torch.testing.assert_close(packed(x), conv(x).relu(), rtol=1e-5, atol=1e-5)
    assert (packed.packed_weight is not None) == torch.backends.mkldnn.is_available()


def test_cache_key_and_model_walk_fallbacks():
    weight = torch.zeros(3)
    assert _torch_internals.tensor_version(weight) == _torch_internals.tensor_version(weight)
    model = TinyCNN()
    model.tied = model.features[0]
    on = _torch_internals.modules_and_parameters(model)
    with use_private_apis(False):
        assert _torch_internals.tensor_version(weight) != _torch_internals.tensor_version(weight)  # always rebuilt
        off = _torch_internals.modules_and_parameters(model)
        assert _torch_internals.has_hooks(nn.ReLU())
    assert [list(map(id, part)) for part in off] == [list(map(id, part)) for part in on]
    assert not _torch_internals.has_hooks(nn.ReLU())


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("kernel_shap", {"samples": 30, "seed": 0}),
        ("gradient", {"smooth": "smoothgrad", "smooth_samples": 3, "seed": 0}),
        ("smoothgrad", {"samples": 3, "seed": 0}),
    ],
)
def test_captum_methods_give_the_same_maps_with_the_fallbacks(method, options):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        on = saliency(model, x, method, target=[1, 2], **options).maps
        with use_private_apis(False):
            off = saliency(model, x, method, target=[1, 2], **options).maps
    torch.testing.assert_close(off, on)
    assert on.abs().sum() > 0


def test_lrp_layer_list_fallback_matches_captum():
    on = set(_torch_internals.lrp_supported_layers())
    with use_private_apis(False):
        off = set(_torch_internals.lrp_supported_layers())
    assert off == {layer for layer in on if layer.__module__.startswith("torch.")}


# the switch


def test_the_switch_restores_itself_after_the_block_and_after_an_exception():
    assert private_apis_enabled()
    with use_private_apis(False):
        assert not private_apis_enabled() and not _torch_internals.dispatch_modes_enabled()
        with use_private_apis(True):
            assert private_apis_enabled()
        assert not private_apis_enabled()
    assert private_apis_enabled()
    with pytest.raises(RuntimeError, match="boom"), use_private_apis(False):
        raise RuntimeError("boom")
    assert private_apis_enabled() and _torch_internals.dispatch_modes_enabled()


def test_the_environment_variable_turns_private_apis_off_at_import():
    code = "import fmapviz._torch_internals as t; print(t.private_apis_enabled(), t.dispatch_modes_enabled())"
    environment = {**os.environ, _torch_internals.PUBLIC_ONLY_VARIABLE: "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True)
    assert result.stdout.split() == ["False", "False"]
