"""Beyond plain CNNs: ViT, Swin, dict/namedtuple/.logits outputs, detection and segmentation in every engine.

All torchvision models here have random weights (only mobilenet_v2 has real weights on this
machine). No test writes a reshape function: token and channels-last layouts are fmapviz's job.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, namedtuple

import numpy as np
import pytest
import torch
import torchvision
from conftest import TinyCNN, assert_same_state, hook_count, model_state, small_vit
from torch import nn

import fmapviz
from fmapviz.engines.saliency import LayerSearchCache
from fmapviz.engines.saliency.targets import BoxScoreTarget, MaskTarget
from fmapviz.plot.maps import channel_grid


@pytest.fixture(scope="module", autouse=True)
def flush_denormals():
    """Random-weight MobileNetV3 backbones produce denormal floats that make CPU kernels ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None).eval()
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision starts the head at zero: constant logits
    return model


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return torchvision.models.swin_t(weights=None).eval()


@pytest.fixture(scope="module")
def image224():
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------------ ViT


def test_vit_blocks_are_captured_as_14x14_maps_of_their_patch_tokens(vit, image224):
    maps = fmapviz.feature_maps(vit, image224, ["conv_proj", "encoder.layers.encoder_layer_3", "encoder.ln"])
    assert {name: tuple(value.shape) for name, value in maps.items()} == dict.fromkeys(maps, (1, 768, 14, 14))
    with torch.no_grad():  # reference without hooks: run the first four blocks piecewise
        tokens = vit._process_input(image224)
        tokens = torch.cat([vit.class_token.expand(1, -1, -1), tokens], 1) + vit.encoder.pos_embedding
        tokens = vit.encoder.layers[:4](tokens)
    block = maps["encoder.layers.encoder_layer_3"]
    assert torch.equal(block[0, :, 0, 0], tokens[0, 1])  # token 0 is the class token
    assert torch.equal(block[0, :, 3, 5], tokens[0, 1 + 3 * 14 + 5])


def test_show_maps_draws_vit_tokens_as_14x14_tiles(vit, image224):
    maps = fmapviz.feature_maps(vit, image224, "encoder.layers.encoder_layer_5")
    figure = fmapviz.show_maps(maps, "top:4", annotate=False)
    expected = channel_grid(torch.rand(4, 14, 14), annotate=False).image.shape
    assert figure.image.shape == expected
    assert figure.image.shape != channel_grid(torch.rand(4, 7, 7), annotate=False).image.shape


def test_vit_gradcam_picks_the_last_block_input_whose_patches_reach_the_logits(vit, image224):
    before, hooks = model_state(vit), hook_count(vit)
    result = fmapviz.saliency(vit, image224, "gradcam", layers=None)
    assert result.layer == "encoder.layers.encoder_layer_11.ln_1"
    assert result.maps.shape == (1, 1, 224, 224)
    assert torch.isfinite(result.maps).all() and result.maps.std() > 0
    assert hook_count(vit) == hooks
    assert_same_state(before, model_state(vit))


def test_vit_layer_probe_runs_once_per_model_then_its_pick_is_reused_for_other_classes():
    small = small_vit(num_layers=4)
    x = torch.randn(1, 3, 32, 32)
    on_graph = []  # does block 1's output join the autograd graph? only while the probe captures it
    small.encoder.layers[1].register_forward_hook(lambda module, args, output: on_graph.append(output.requires_grad))
    searches = LayerSearchCache()
    first = fmapviz.saliency(small, x, "gradcam", target=2, layer_search=searches)
    later = fmapviz.saliency(small, x, "gradcam", target=4, layer_search=searches)  # same architecture, same pick
    explicit = fmapviz.saliency(small, x, "gradcam", target=4, layers=first.layers)
    assert first.layer == later.layer == "encoder.layers.encoder_layer_3.ln_1"
    # first call: shape pass, then the probe (block 1 on the graph); later and explicit calls: no probe
    assert on_graph == [False, True, False, False]
    assert torch.equal(later.maps, explicit.maps)


def test_vit_activation_maximization_raises_a_token_channel(vit):
    result = fmapviz.maximize(
        vit, "encoder.layers.encoder_layer_0[7]", size=224, steps=3, lr=0.1, transforms="none", progress=False
    )
    assert result.final_activation[0] > result.initial_activation[0]


# ----------------------------------------------------------------------------------------- Swin


def test_swin_stages_are_channels_last_and_captured_as_nchw(swin, image224):
    maps = fmapviz.feature_maps(swin, image224, ["features.1", "features.3", "features.5"])
    expected = {"features.1": (1, 96, 56, 56), "features.3": (1, 192, 28, 28), "features.5": (1, 384, 14, 14)}
    assert {name: tuple(value.shape) for name, value in maps.items()} == expected
    with torch.no_grad():  # reference without hooks: the first two stages, channels last
        stage = swin.features[:2](image224)
    assert stage.shape == (1, 56, 56, 96)
    assert torch.equal(maps["features.1"][0, 2, 1, 3], stage[0, 1, 3, 2])
    assert torch.equal(maps["features.1"][0, :, 10, 20], stage[0, 10, 20])


def test_show_maps_draws_swin_stage_as_56x56_tiles(swin, image224):
    maps = fmapviz.feature_maps(swin, image224, "features.1")
    figure = fmapviz.show_maps(maps, [0, 1, 2, 3], annotate=False)
    assert figure.image.shape == channel_grid(torch.rand(4, 56, 56), annotate=False).image.shape


def test_swin_gradcam_on_a_channels_last_stage(swin, image224):
    before = model_state(swin)
    result = fmapviz.saliency(swin, image224, "gradcam", layers="features.5")
    assert result.maps.shape == (1, 1, 224, 224)
    assert torch.isfinite(result.maps).all() and result.maps.std() > 0
    assert hook_count(swin) == 0
    assert_same_state(before, model_state(swin))


def test_swin_activation_maximization_raises_a_stage_channel(swin):
    result = fmapviz.maximize(swin, "features.1[11]", size=64, steps=3, lr=0.1, transforms="none", progress=False)
    assert result.final_activation[0] > result.initial_activation[0]


# ------------------------------------------------------------------- dict, namedtuple, .logits outputs

Pair = namedtuple("Pair", ["logits", "pooled"])


@dataclasses.dataclass
class Output:
    pooled: torch.Tensor  # first field, but .logits wins
    logits: torch.Tensor


class Structured(nn.Module):
    """TinyCNN whose head returns a dict, a namedtuple or an object with ``.logits``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.net, self.kind = TinyCNN(), kind

    def forward(self, x: torch.Tensor):
        pooled = self.net.pool(self.net.features(x)).flatten(1)
        logits = self.net.fc(pooled)
        if self.kind == "dict":
            return {"logits": logits, "pooled": pooled}
        if self.kind == "namedtuple":
            return Pair(logits, pooled)
        return Output(pooled=pooled, logits=logits)


@pytest.mark.parametrize("kind", ["dict", "namedtuple", "logits"])
def test_structured_outputs_work_in_capture_saliency_and_actmax(kind):
    torch.manual_seed(0)
    model, x = Structured(kind).eval(), torch.randn(2, 3, 16, 16)
    plain = TinyCNN().eval()
    plain.load_state_dict(model.net.state_dict())
    with torch.no_grad():
        expected = plain(x)
    captured = fmapviz.feature_maps(model, x, "net.features.1")
    assert captured["net.features.1"].shape == (2, 8, 16, 16)

    gradient = fmapviz.saliency(model, x, "gradient", target=3)
    x_grad = x.clone().requires_grad_()
    (reference,) = torch.autograd.grad(plain(x_grad)[:, 3].sum(), x_grad)
    assert torch.allclose(gradient.attributions[:, 0], reference, atol=1e-6)

    cam = fmapviz.saliency(model, x, "gradcam", target="top")
    assert cam.layer == "net.features"
    assert torch.equal(cam.target[:, 0], expected.argmax(1))

    result = fmapviz.maximize(model, "class:2", size=16, steps=8, lr=0.1, transforms="none", progress=False)
    assert result.final_activation[0] > result.initial_activation[0]
    assert hook_count(model) == 0


class Pyramid(nn.Module):
    """A backbone returning an OrderedDict of two maps, and a head reading both (a tiny FPN)."""

    def __init__(self) -> None:
        super().__init__()
        self.fine, self.coarse = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor):
        return OrderedDict(fine=self.fine(x), coarse=self.coarse(x))


class PyramidNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone, self.head = Pyramid(), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = self.backbone(x)
        return self.head(torch.cat([levels["fine"].mean((2, 3)), levels["coarse"].mean((2, 3))], 1))


def test_dict_of_maps_gives_one_entry_per_level_unless_pick_says_otherwise():
    torch.manual_seed(0)
    model, x = PyramidNet().eval(), torch.randn(2, 3, 8, 8)
    maps = fmapviz.feature_maps(model, x, "backbone")
    assert {key: tuple(value.shape) for key, value in maps.items()} == {
        "backbone:fine": (2, 4, 8, 8),
        "backbone:coarse": (2, 4, 4, 4),
    }
    assert torch.equal(maps["backbone:coarse"], model.backbone.coarse(x).detach())
    picked = fmapviz.feature_maps(model, x, "backbone", pick=lambda out: out["coarse"])
    assert list(picked) == ["backbone"] and picked["backbone"].shape == (2, 4, 4, 4)


def test_summary_lists_each_pyramid_level_under_its_module():
    rows = fmapviz.summary(PyramidNet(), (1, 3, 8, 8))
    assert rows["backbone:fine"].output_shape == (1, 4, 8, 8)
    assert rows["backbone:coarse"].stride == (2, 2)
    assert rows["backbone:coarse"].type == "Pyramid"


def test_gradients_of_every_pyramid_level_match_autograd():
    torch.manual_seed(0)
    model, x = PyramidNet().eval(), torch.randn(2, 3, 8, 8)
    with fmapviz.model_guard(model), fmapviz.capture(model, "backbone", keep_grad=True) as maps:
        model(x)[:, 1].sum().backward()
    reference = model.backbone(x)
    fine, coarse = reference["fine"], reference["coarse"]
    score = model.head(torch.cat([fine.mean((2, 3)), coarse.mean((2, 3))], 1))[:, 1].sum()
    expected = torch.autograd.grad(score, [fine, coarse])
    assert torch.allclose(maps.grads["backbone:fine"], expected[0], atol=1e-7)
    assert torch.allclose(maps.grads["backbone:coarse"], expected[1], atol=1e-7)
    assert hook_count(model) == 0


# ------------------------------------------------------------------------ detection, segmentation


@pytest.fixture(scope="module")
def detector():
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    torch.manual_seed(0)
    small = dict(min_size=224, max_size=224, rpn_pre_nms_top_n_test=64, rpn_post_nms_top_n_test=32)
    model = fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, box_score_thresh=0.0, box_detections_per_img=20, **small
    )
    return model.eval()


@pytest.fixture(scope="module")
def photo224():
    return torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))


def test_detection_backbone_gives_one_map_per_fpn_level(detector, photo224):
    maps = fmapviz.feature_maps(detector, photo224, "backbone")
    assert {name: tuple(value.shape) for name, value in maps.items()} == {
        "backbone:0": (1, 256, 7, 7),
        "backbone:1": (1, 256, 7, 7),
        "backbone:pool": (1, 256, 4, 4),
    }
    with torch.no_grad():  # reference without hooks: the backbone on the detector's own preprocessing
        reference = detector.backbone(detector.transform(list(photo224))[0].tensors)
    for level, value in reference.items():
        assert torch.equal(maps[f"backbone:{level}"], value)
    figure = fmapviz.show_maps(maps, "top:4", layer="backbone:pool", annotate=False)
    assert figure.image.shape == channel_grid(torch.rand(4, 4, 4), annotate=False).image.shape


def test_gradcam_with_box_score_target_on_the_fpn_backbone(detector, photo224):
    with torch.no_grad():
        found = detector(photo224)[0]
    assert len(found["boxes"]) > 0
    target = BoxScoreTarget(found["boxes"][:3], found["labels"][:3])
    before = model_state(detector)
    result = fmapviz.saliency(detector, photo224, "gradcam", target=target, layers="backbone")
    # the box head pools levels "0" and "1"; "pool" feeds only the RPN, whose proposals are not differentiable
    assert set(result.layer_maps) == {"backbone:0", "backbone:1", "backbone"}
    assert result.maps.shape == (1, 1, 224, 224)
    assert torch.isfinite(result.maps).all() and result.maps.std() > 0
    assert torch.equal(result.maps, result.layer_maps["backbone:0"] + result.layer_maps["backbone:1"])
    assert hook_count(detector) == 0
    assert_same_state(before, model_state(detector))


def test_per_box_target_gives_one_map_per_box_from_one_forward(detector, photo224):
    with torch.no_grad():
        found = detector(photo224)[0]
    boxes, labels = found["boxes"][:3], found["labels"][:3]
    forwards = []
    handle = detector.backbone.register_forward_hook(lambda *args: forwards.append(1))
    try:
        together = fmapviz.saliency(
            detector, photo224, "gradcam", target=BoxScoreTarget(boxes, labels, per_box=True), layers="backbone"
        )
    finally:
        handle.remove()
    assert len(forwards) == 1 and together.maps.shape == (1, 3, 224, 224)
    for box in range(3):
        alone = BoxScoreTarget(boxes[box : box + 1], labels[box : box + 1])
        single = fmapviz.saliency(detector, photo224, "gradcam", target=alone, layers="backbone")
        torch.testing.assert_close(together.maps[:, box], single.maps[:, 0], rtol=1e-5, atol=1e-6)
    assert hook_count(detector) == 0


def test_callable_targets_with_several_columns_work_for_captum_methods_too():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    x = torch.randn(2, 3, 12, 12)

    def two_logits(output: torch.Tensor) -> torch.Tensor:
        return output[:, [1, 3]]

    for method in ("gradient", "integrated_gradients", "occlusion"):
        options = {"patch": 4} if method == "occlusion" else {}
        both = fmapviz.saliency(model, x, method, target=two_logits, **options)
        classes = fmapviz.saliency(model, x, method, target=[[1, 3]], **options)
        assert both.maps.shape == (2, 2, 12, 12), method
        torch.testing.assert_close(both.maps, classes.maps, rtol=1e-5, atol=1e-6, msg=method)
    with pytest.raises(ValueError, match=r"shape \(2,\), or K scores per image"):
        fmapviz.saliency(model, x, "gradient", target=lambda output: output[:, :2, None])


def test_automatic_layer_for_a_detector_is_the_backbone(detector, photo224):
    with torch.no_grad():
        found = detector(photo224)[0]
    target = BoxScoreTarget(found["boxes"][:1], found["labels"][:1])
    result = fmapviz.saliency(detector, photo224, "gradcam", target=target)
    assert result.layer == "backbone"


def test_box_target_without_matches_fails_cleanly_and_restores_the_model(detector, photo224):
    before = model_state(detector)
    nowhere = BoxScoreTarget(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([1]))
    with pytest.raises(ValueError, match="No detection matches the reference boxes"):
        fmapviz.saliency(detector, photo224, "gradcam", target=nowhere, layers="backbone")
    assert hook_count(detector) == 0
    assert_same_state(before, model_state(detector))


def test_box_score_target_sums_matching_detections():
    output = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]]),
            "labels": torch.tensor([3, 3, 4, 3]),
            "scores": torch.tensor([0.9, 0.5, 0.8, 0.7]),
        }
    ]
    target = BoxScoreTarget(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([3]), iou_threshold=0.5)
    assert torch.allclose(target(output), torch.tensor([0.9 + 0.5]))  # label 4 and the far box do not count
    with_iou = BoxScoreTarget(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([3]), add_iou=True)
    assert torch.allclose(with_iou(output), torch.tensor([0.9 + 1.0 + 0.5 + 0.81]))
    with pytest.raises(TypeError, match="list of dicts"):
        target(torch.zeros(1, 4))


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    return torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None).eval()


def test_mask_target_gradcam_on_a_segmentation_model(segmenter, photo224):
    with torch.no_grad():
        out = segmenter(photo224)["out"]
    category = int(out.argmax(1).flatten().mode().values)
    target = MaskTarget(category, out.argmax(1)[0] == category)
    manual = (out[0, category] * (out.argmax(1)[0] == category)).sum()
    assert torch.allclose(target(out), manual[None])
    result = fmapviz.saliency(segmenter, photo224, "gradcam", target=target, layers="backbone")
    assert set(result.layer_maps) == {"backbone:low", "backbone:high", "backbone"}
    assert torch.isfinite(result.maps).all() and result.maps.std() > 0
    with pytest.raises(ValueError, match="at the output's resolution"):
        fmapviz.saliency(segmenter, photo224, "gradient", target=MaskTarget(0, torch.ones(8, 8)))
    assert hook_count(segmenter) == 0


def test_segmentation_maps_show_and_raise_a_class_by_activation_maximization(segmenter, photo224):
    maps = fmapviz.feature_maps(segmenter, photo224, "backbone")
    assert maps["backbone:high"].shape[-2:] == (14, 14) and maps["backbone:low"].shape[-2:] == (28, 28)
    figure = fmapviz.show_maps(maps, "top:4", layer="backbone:high", annotate=False)
    assert np.asarray(figure.image).shape == channel_grid(torch.rand(4, 14, 14), annotate=False).image.shape
    result = fmapviz.maximize(segmenter, "class:5", size=64, steps=4, lr=0.1, transforms="none", progress=False)
    assert result.final_activation[0] > result.initial_activation[0]
