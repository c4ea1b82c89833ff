"""Activation maximization: objective algebra, optimization, seeds, batching, clean-up, errors."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyCNN, assert_same_state, hook_count, model_state

import fmapviz
from fmapviz.engines.actmax import ActMaxResult
from fmapviz.engines.actmax import objectives as obj
from fmapviz.engines.actmax.param import PARAMS, correlate_colors, decorrelate_colors
from fmapviz.engines.actmax.transforms import TRANSFORMS, apply, standard

FAST = dict(size=16, steps=8, progress=False)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture
def tiny() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


def test_objectives_add_subtract_and_scale_like_numbers():
    tensors = {"layer": torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)}
    first, second = obj.channel("layer", 0), obj.channel("layer", 2)
    combined = 2 * first - second / 4 + 1.0
    expected = 2 * first(tensors) - second(tensors) / 4 + 1.0
    assert torch.allclose(combined(tensors), expected)
    assert torch.allclose((-first)(tensors), -first(tensors))
    assert torch.allclose(sum([first, second])(tensors), first(tensors) + second(tensors))
    assert combined.layers == frozenset({"layer"})
    assert "layer[0]" in combined.name and "layer[2]" in combined.name


def test_objective_strings_use_the_unit_notation():
    tensors = {"f": torch.arange(2 * 3 * 3 * 3, dtype=torch.float32).view(2, 3, 3, 3)}
    tensors["backbone:0"] = tensors["f"] + 1
    assert torch.equal(obj.parse_objective("f[1]")(tensors), tensors["f"][:, 1].mean((1, 2)))
    assert torch.equal(obj.parse_objective("f[1,0,2]")(tensors), tensors["f"][:, 1, 0, 2])
    assert torch.equal(obj.parse_objective("f[1,center]")(tensors), tensors["f"][:, 1, 1, 1])
    assert torch.equal(obj.parse_objective(fmapviz.Unit("f", 2, (2, 0)))(tensors), tensors["f"][:, 2, 2, 0])
    assert torch.equal(obj.parse_objective("backbone:0[1]")(tensors), tensors["backbone:0"][:, 1].mean((1, 2)))
    assert obj.parse_objective("backbone:0").layers == {"backbone:0"}  # a capture key, not a channel
    assert obj.parse_objective("layer4.1.relu#2[5]").layers == {"layer4.1.relu#2"}
    assert torch.equal(obj.parse_objective("f")(tensors), tensors["f"].pow(2).mean((1, 2, 3)))
    assert obj.parse_objective("deepdream:f").name == "deepdream:f"
    assert [obj.parse_objective(s).name for s in ("f[1]", "f[1,0,2]", "f[1,center]")] == [
        "f[1]",
        "f[1,0,2]",
        "f[1,center]",
    ]
    assert obj.parse_objective("class:954").needs_output


def test_class_names_match_case_insensitively_with_suggestions():
    categories = ["apple", "Granny Smith", "Banana"]
    assert obj.parse_objective("class:banana", categories=categories).name == "class:2"
    assert obj.parse_objective("class:GRANNY SMITH", categories=categories).name == "class:1"
    with pytest.raises(ValueError, match="Unknown class 'bananna'. Closest: Banana"):
        obj.parse_objective("class:bananna", categories=categories)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("features.2[abc]", "channel must be an integer"),
        ("features.2[1,3]", "layer\\[channel,row,col\\]"),
        ("features.2:1@3,3", "units"),
        ("class:banana", "pass categories="),
        ("class:-1", "negative"),
        ("neuron:features.2", "no string form"),
        ("", "Bad objective"),
    ],
)
def test_bad_objective_strings_raise_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        obj.parse_objective(spec)


def test_class_objective_on_a_segmentation_output_maximizes_that_class_map():
    # (N,K,H,W) output: "class:5" is class 5's map averaged over pixels, not class 0 at one pixel
    torch.manual_seed(0)
    segmenter = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 7, 1))
    segmenter.eval()
    result = fmapviz.maximize(segmenter, "class:5", size=12, steps=20, lr=0.1, progress=False)
    with torch.no_grad():
        before = segmenter((torch.full((1, 3, 12, 12), 0.5) - MEAN) / STD).mean((2, 3))[0]
        after = segmenter((result.images - MEAN) / STD).mean((2, 3))[0]
    torch.testing.assert_close(result.final_activation, after[5:6], atol=1e-4, rtol=1e-4)
    gains = after - before
    assert int(gains.argmax()) == 5 and gains[5] > 0  # class 5's mean rose, more than any other class's
    assert fmapviz.maximize(segmenter, "class", channels="all", size=12, steps=1, progress=False).channels == list(
        range(7)
    )
    logits = torch.randn(2, 7)
    assert torch.equal(obj.class_logit(5)({obj.OUTPUT: logits}), logits[:, 5])
    maps = torch.randn(2, 7, 4, 4)
    assert torch.equal(obj.class_logit(5)({obj.OUTPUT: maps}), maps[:, 5].mean((1, 2)))
    with pytest.raises(ValueError, match="7 classes"):
        obj.class_logit(7)({obj.OUTPUT: maps})


def test_unknown_layer_raises_layer_not_found_with_suggestions(tiny):
    with pytest.raises(fmapviz.LayerNotFoundError, match=r"Unknown layer 'features\.9'.*Closest: features"):
        fmapviz.maximize(tiny, "features.9[1]", **FAST)
    with pytest.raises(fmapviz.LayerNotFoundError, match=r"write the unit 'features\.2\[1\]'"):
        fmapviz.maximize(tiny, "features.2:1", **FAST)


def test_out_of_range_channel_names_the_layer_size(tiny):
    with pytest.raises(ValueError, match="Channel 99 is out of range for layer 'features.2' with 16 channels"):
        fmapviz.maximize(tiny, "features.2[99]", **FAST)


def test_direction_and_diversity_scores():
    activation = torch.randn(3, 4, 5, 5)
    tensors = {"l": activation}
    vector = torch.tensor([0.0, 2.0, 0.0, 0.0])
    assert torch.allclose(obj.direction("l", vector)(tensors), activation[:, 1].mean((1, 2)))
    same = {"l": activation[:1].expand(3, -1, -1, -1)}
    assert torch.allclose(obj.diversity("l")(same), torch.full((3,), -1.0))
    assert (obj.diversity("l")(tensors) > -1.0).all()


def test_channel_objective_rises_far_above_its_start(tiny):
    result = fmapviz.maximize(tiny, "features.2[3]", size=24, steps=40, lr=0.1, progress=False)
    assert result.final_activation.item() > 5 * max(result.initial_activation.item(), 0.05)
    assert result.history.shape == (40, 1)
    assert result.images.shape == (1, 3, 24, 24)
    assert 0.0 <= result.images.min() and result.images.max() <= 1.0


@pytest.mark.parametrize("param", sorted(PARAMS))
def test_batch_of_channels_equals_single_runs_with_same_seed(tiny, param):
    batched = fmapviz.maximize(tiny, "features.2", channels=[5, 0, 9], param=param, seed=3, **FAST)
    singles = [fmapviz.maximize(tiny, f"features.2[{c}]", param=param, seed=3, **FAST) for c in (5, 0, 9)]
    assert batched.channels == [5, 0, 9]
    assert torch.allclose(batched.images, torch.cat([s.images for s in singles]), atol=1e-5)
    assert torch.allclose(batched.final_activation, torch.cat([s.final_activation for s in singles]), atol=1e-5)


def test_results_do_not_depend_on_batch_size(tiny):
    whole = fmapviz.maximize(tiny, "features.2", channels=range(4), batch_size=4, **FAST)
    chunked = fmapviz.maximize(tiny, "features.2", channels=range(4), batch_size=3, **FAST)
    assert torch.allclose(whole.images, chunked.images, atol=1e-5)


def test_same_seed_same_image_and_other_seed_other_image(tiny):
    first = fmapviz.maximize(tiny, "features.2[1]", seed=7, **FAST)
    again = fmapviz.maximize(tiny, "features.2[1]", seed=7, **FAST)
    other = fmapviz.maximize(tiny, "features.2[1]", seed=8, **FAST)
    assert torch.equal(first.images, again.images)
    assert not torch.allclose(first.images, other.images)


def test_class_objectives_and_lists_give_one_image_each(tiny):
    result = fmapviz.maximize(tiny, ["class:1", "class:2", obj.channel("features.0", 0)], **FAST)
    assert result.labels == ["class:1", "class:2", "features.0[0]"]
    assert (result.final_activation > result.initial_activation).all()
    by_class = fmapviz.maximize(tiny, "class", channels=[1, 2], **FAST)
    assert torch.allclose(by_class.images, result.images[:2], atol=1e-5)


def test_copies_with_diversity_differ(tiny):
    objective = obj.channel("features.2", 0) + 0.5 * obj.diversity("features.2")
    result = fmapviz.maximize(tiny, objective, copies=2, **FAST)
    assert result.images.shape[0] == 2
    assert not torch.allclose(result.images[0], result.images[1])


def test_penalties_reduce_what_they_penalize(tiny):
    plain = fmapviz.maximize(tiny, "features.2[0]", param="pixels", decorrelate=False, size=16, steps=15,
                             progress=False)  # fmt: skip
    for penalty in (obj.total_variation(), obj.blur(), obj.l2()):
        tensors = {obj.INPUT: plain.images}
        smoothed = fmapviz.maximize(tiny, obj.channel("features.2", 0) - 20.0 * penalty, param="pixels",
                                    decorrelate=False, size=16, steps=15, progress=False)  # fmt: skip
        assert penalty({obj.INPUT: smoothed.images}) < penalty(tensors)


def test_init_image_starts_from_the_photo_and_zero_steps_keeps_it(tiny):
    photo = torch.rand(1, 3, 20, 28)
    for param in PARAMS:
        result = fmapviz.maximize(tiny, "features.2", init=photo, param=param, steps=0, progress=False)
        assert result.images.shape == (1, 3, 20, 28)
        assert torch.allclose(result.images, photo, atol=1e-3)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        fmapviz.maximize(tiny, "features.2", init=photo * 3, steps=1, progress=False)


def test_colour_decorrelation_round_trips():
    image = torch.randn(2, 3, 4, 5)
    assert torch.allclose(correlate_colors(decorrelate_colors(image)), image, atol=1e-5)


def test_transforms_use_only_each_images_generator():
    images = torch.rand(3, 3, 20, 20)
    chain = standard()
    batched = apply(images, chain, [torch.Generator().manual_seed(s) for s in (1, 2, 3)])
    alone = apply(images[1:2], chain, [torch.Generator().manual_seed(2)])
    assert batched.shape == (3, 3, 32, 32)
    assert torch.allclose(batched[1:2], alone, atol=1e-6)
    assert set(TRANSFORMS) == {"pad", "jitter", "random_scale", "random_rotate", "random_affine"}


def test_maximize_leaves_no_hooks_and_an_untouched_model(tiny):
    tiny.train()
    before = model_state(tiny)
    fmapviz.maximize(tiny, obj.channel("features.2", 1) + obj.class_logit(0), **FAST)
    assert hook_count(tiny) == 0
    assert_same_state(before, model_state(tiny))


def test_maximize_cleans_up_after_an_error_inside_the_loop(tiny):
    before = model_state(tiny)

    def failing(tensors):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fmapviz.maximize(tiny, obj.Objective(failing, "failing", frozenset({"features.2"})), **FAST)
    assert hook_count(tiny) == 0
    assert_same_state(before, model_state(tiny))


def test_gallery_draws_every_image_and_a_row_of_extras_per_channel(tmp_path):
    images = torch.zeros(3, 3, 16, 16)
    images[:, 0] = 1.0  # pure red tiles
    result = ActMaxResult(images, torch.zeros(1, 3), torch.zeros(3), torch.tensor([1.0, 2.0, 3.0]),
                                  ["l:4", "l:5", "l:6"], channels=[4, 5, 6])  # fmt: skip
    figure = fmapviz.show_gallery(result, ncols=3)
    pixels = figure.image
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    assert red.sum() >= 3 * 16 * 16
    path = figure.save(tmp_path / "gallery.png")
    assert path.stat().st_size > 0
    crops = torch.rand(3, 2, 3, 8, 8)
    with_extras = fmapviz.show_gallery(result, extra=crops)
    assert with_extras.image.shape[1] > pixels.shape[1] * 0.9
    with pytest.raises(ValueError, match="one name per image"):
        fmapviz.show_gallery(result, names=["a"])
    with pytest.raises(ValueError, match="extra has 2 entries"):
        fmapviz.show_gallery(result, extra=crops[:2])


def test_one_batch_of_several_layers_and_seeds_equals_one_channel_runs(tiny):
    goals = [obj.channel("features.0", 2), obj.channel("features.2", 5), obj.channel("features.2", 5)]
    batched = fmapviz.maximize(tiny, goals, seeds=[3, 3, 4], **FAST)
    singles = [fmapviz.maximize(tiny, goal, seed=seed, **FAST) for goal, seed in zip(goals, [3, 3, 4])]
    assert torch.allclose(batched.images, torch.cat([s.images for s in singles]), atol=1e-5)
    assert not torch.allclose(batched.images[1], batched.images[2])  # the same channel, another seed
    assert batched.steps_run == [8, 8, 8]
    with pytest.raises(ValueError, match=r"seeds= needs one seed per image \(3\), got 2 seeds"):
        fmapviz.maximize(tiny, goals, seeds=[3, 4], **FAST)


def test_converged_compares_windows_of_the_noisy_objective():
    from fmapviz.engines.actmax.stopping import converged, stop_window

    generator = torch.Generator().manual_seed(0)
    noise = 0.05 * torch.randn(64, 3, generator=generator)
    rising = torch.linspace(0, 10, 64)[:, None] + noise[:, :1]  # +1.3 a window of 8: far above 1 %
    flat = 5.0 + noise[:, 1:2]  # noise only: the window means agree within 1 %
    falling = torch.linspace(10, 5, 64)[:, None]
    values = torch.cat([rising, flat, falling], 1)
    assert converged(values, 0.01, 8).tolist() == [False, True, True]
    assert converged(values[:15], 0.01, 8).tolist() == [False, False, False]  # two windows are needed
    assert (stop_window(128), stop_window(48), stop_window(512)) == (16, 8, 64)


STOP = dict(size=16, steps=96, lr=0.1, progress=False, stop_tolerance=0.01)


def test_early_stopping_freezes_each_image_whatever_its_batch(tiny):
    channels = list(range(16))
    together = fmapviz.maximize(tiny, "features.2", channels=channels, batch_size=16, **STOP)
    alone = [fmapviz.maximize(tiny, f"features.2[{c}]", **STOP) for c in (0, 7, 15)]
    assert min(together.steps_run) < max(together.steps_run)  # images stop at their own step
    assert min(together.steps_run) < 96
    for channel, single in zip((0, 7, 15), alone):
        assert single.steps_run == [together.steps_run[channel]]
        assert torch.allclose(single.images[0], together.images[channel], atol=1e-5)
    chunked = fmapviz.maximize(tiny, "features.2", channels=channels, batch_size=5, **STOP)
    assert chunked.steps_run == together.steps_run
    assert torch.allclose(chunked.images, together.images, atol=1e-5)


def test_a_stopped_image_is_the_image_of_a_run_with_that_many_steps(tiny):
    stopped = fmapviz.maximize(tiny, "features.2", channels=range(16), **STOP)
    channel = min(range(16), key=lambda c: stopped.steps_run[c])
    steps = stopped.steps_run[channel]
    assert steps < 96
    plain = fmapviz.maximize(tiny, f"features.2[{channel}]", **{**STOP, "steps": steps, "stop_tolerance": None})
    assert torch.allclose(plain.images[0], stopped.images[channel], atol=1e-5)
    assert torch.allclose(plain.final_activation[0], stopped.final_activation[channel], atol=1e-4)
    history = stopped.history[:, channel]
    assert history.shape == (96,) and not history[:steps].isnan().any() and history[steps:].isnan().all()


def test_early_stopping_is_off_by_default(tiny):
    result = fmapviz.maximize(tiny, "features.2", channels=range(4), size=16, steps=40, lr=0.1, progress=False)
    assert result.steps_run == [40] * 4 and not result.history.isnan().any()
    with pytest.raises(ValueError, match="stop_tolerance must be 0 or more"):
        fmapviz.maximize(tiny, "features.2[0]", stop_tolerance=-0.1, **FAST)
