"""fmapviz.tokens: token and channels-last layouts read as (N, C, H, W) maps, and capture's layout= option."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fmapviz
from fmapviz.tokens import from_spatial, resolve_layout, to_spatial


def numbered_tokens(leading: int, side: int, channels: int = 3, batch: int = 2) -> torch.Tensor:
    """(batch, leading + side*side, channels) with token t, channel c holding 100*t + c."""
    count = leading + side * side
    tokens = torch.arange(count)[:, None] * 100 + torch.arange(channels)[None, :]
    return tokens.float().expand(batch, -1, -1).clone()


def test_class_token_is_dropped_and_patches_fold_row_by_row():
    tokens = numbered_tokens(leading=1, side=4)
    spatial = to_spatial(tokens)
    assert spatial.shape == (2, 3, 4, 4)
    for row in range(4):
        for col in range(4):
            assert torch.equal(spatial[:, :, row, col], tokens[:, 1 + row * 4 + col])


def test_vit_b16_token_count_gives_a_14x14_grid():
    assert to_spatial(torch.zeros(1, 197, 768)).shape == (1, 768, 14, 14)


def test_register_tokens_are_dropped_with_the_class_token():
    tokens = numbered_tokens(leading=5, side=14, batch=1)  # class token + 4 registers, as in DINOv2-reg
    spatial = to_spatial(tokens)
    assert spatial.shape == (1, 3, 14, 14)
    assert torch.equal(spatial[0, :, 0, 0], tokens[0, 5])
    assert torch.equal(spatial[0, :, 13, 13], tokens[0, -1])


def test_tokens_without_leading_tokens_fold_whole():
    tokens = numbered_tokens(leading=0, side=7, batch=1)
    assert resolve_layout(tokens) == "tokens"
    assert torch.equal(to_spatial(tokens)[0, :, 0, 0], tokens[0, 0])


def test_channels_last_map_is_detected_and_permuted():
    swin_stage = torch.randn(2, 56, 56, 96)
    spatial = to_spatial(swin_stage)
    assert resolve_layout(swin_stage) == "nhwc"
    assert spatial.shape == (2, 96, 56, 56)
    assert torch.equal(spatial[1, 5, 10, 20], swin_stage[1, 10, 20, 5])


def test_nchw_maps_and_vectors_are_left_as_they_are():
    conv = torch.randn(1, 64, 28, 28)
    assert to_spatial(conv) is conv
    assert to_spatial(torch.randn(4, 10)).shape == (4, 10)
    pooled = torch.randn(1, 32, 1)  # AdaptiveAvgPool1d over tokens (HF Swin's pooler): not 7 + 5x5 one-channel tokens
    assert resolve_layout(pooled) == "nchw" and to_spatial(pooled) is pooled


def test_equal_channels_height_width_stays_nchw_unless_told():
    cube = torch.randn(1, 8, 8, 8)
    assert to_spatial(cube) is cube
    assert torch.equal(to_spatial(cube, layout="nhwc")[0, 1, 2, 3], cube[0, 2, 3, 1])


def test_tokens_without_a_square_grid_name_the_layout_override():
    with pytest.raises(ValueError, match=r"35 tokens do not form a square grid.*layout="):
        to_spatial(torch.zeros(1, 35, 8))


def test_ambiguous_register_counts_name_the_layout_override():
    with pytest.raises(ValueError, match=r"ambiguous \(2 leading \+ 3x3 or 7 leading \+ 2x2\).*layout="):
        to_spatial(torch.zeros(1, 11, 8), name="blocks.3")


def test_explicit_layout_that_does_not_fit_is_a_clear_error():
    with pytest.raises(ValueError, match="layout 'nhwc' needs a 4-D"):
        to_spatial(torch.zeros(1, 197, 768), layout="nhwc")
    with pytest.raises(ValueError, match="not \\(N, T, C\\) tokens"):
        to_spatial(torch.zeros(1, 35, 8), layout="tokens")
    with pytest.raises(ValueError, match="Unknown layout 'chw'"):
        to_spatial(torch.zeros(1, 3, 4, 4), layout="chw")


def test_explicit_nchw_override_keeps_tokens_raw():
    tokens = torch.zeros(1, 197, 768)
    assert to_spatial(tokens, layout="nchw") is tokens


@pytest.mark.parametrize("layout,shape", [("tokens", (2, 1 + 16, 3)), ("nhwc", (2, 4, 4, 3)), ("nchw", (2, 3, 4, 4))])
def test_from_spatial_inverts_the_spatial_view(layout, shape):
    original = torch.randn(shape)
    rebuilt = from_spatial(to_spatial(original, layout), original, layout)
    assert torch.equal(rebuilt, original)


class TokenNet(nn.Module):
    """patch embedding -> (N, 1+HW, C) tokens with a class token -> linear on the class token."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 6, 4, stride=4)
        self.mix = nn.Linear(6, 6)
        self.cls = nn.Parameter(torch.randn(1, 1, 6))
        self.odd = nn.Linear(6, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.embed(x).flatten(2).transpose(1, 2)
        tokens = self.mix(torch.cat([self.cls.expand(x.shape[0], -1, -1), patches], 1))
        extra = self.odd(tokens[:, :35])  # 35 tokens: no square grid
        return self.head(tokens.mean(1) + extra.mean(1))


def test_capture_reads_tokens_as_maps_and_leaves_unreadable_outputs_raw():
    torch.manual_seed(0)
    model, x = TokenNet().eval(), torch.randn(1, 3, 32, 32)
    maps = fmapviz.feature_maps(model, x, ["mix", "odd"])
    assert maps["mix"].shape == (1, 6, 8, 8)
    assert maps["odd"].shape == (1, 35, 6)


def test_capture_layout_override_per_layer_and_its_errors():
    torch.manual_seed(0)
    model, x = TokenNet().eval(), torch.randn(1, 3, 32, 32)
    raw = fmapviz.feature_maps(model, x, ["mix", "embed"], layout={"mix": "nchw"})
    assert raw["mix"].shape == (1, 65, 6) and raw["embed"].shape == (1, 6, 8, 8)
    with pytest.raises(ValueError, match=r"Layer 'odd'.*layout=\{'odd': \.\.\.\}"):
        fmapviz.feature_maps(model, x, "odd", layout="tokens")
    with pytest.raises(fmapviz.LayerNotFoundError, match="layout names 'nope'"):
        fmapviz.feature_maps(model, x, "mix", layout={"nope": "tokens"})


def test_token_grads_come_back_in_the_map_layout_and_match_autograd():
    torch.manual_seed(0)
    model, x = TokenNet().eval(), torch.randn(1, 3, 32, 32)
    with fmapviz.capture(model, "mix", keep_grad=True) as maps:
        out = model(x)
    out[0, 1].backward()
    assert maps.grads["mix"].shape == (1, 6, 8, 8)
    # reference: the same gradient from plain autograd on the raw token tensor
    tokens = {}
    handle = model.mix.register_forward_hook(lambda m, a, o: tokens.setdefault("t", o))
    try:
        out = model(x)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(out[0, 1], tokens["t"])
    assert torch.allclose(maps.grads["mix"][0, :, 2, 3], grad[0, 1 + 2 * 8 + 3], atol=1e-6)
