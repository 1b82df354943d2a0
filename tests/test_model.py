"""brainseg_lib.model: output shapes, input-size errors, the parameter count, ``describe``."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from brainseg_lib.model import unet

PAPER_PARAMETERS = 31_042_369


def spec_parameter_count(base: int, in_ch: int = 1, out_ch: int = 1) -> int:
    """The parameter count of the spec, by arithmetic.

    Each level: two (3x3 conv with bias, padding 1 -> BatchNorm (weight + bias) -> ReLU).
    Encoder widths b, 2b, 4b, 8b; bottleneck 16b; ConvTranspose2d 2x2 stride 2 (with bias)
    halving the width; decoder levels take the concatenation (2w) down to w; 1x1 head.
    """
    def level(ci, co):
        return (9 * ci * co + co + 2 * co) + (9 * co * co + co + 2 * co)
    w = [base * 2 ** i for i in range(5)]
    n, c = 0, in_ch
    for wi in w[:4]:
        n += level(c, wi)
        c = wi
    n += level(w[3], w[4])
    for hi, lo in zip(w[:0:-1], w[-2::-1]):
        n += 4 * hi * lo + lo          # ConvTranspose2d(hi, lo, 2, stride 2)
        n += level(2 * lo, lo)
    return n + base * out_ch + out_ch


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return unet.UNet(base=4).eval()


@pytest.mark.parametrize("size", [32, 64])
def test_output_shape(tiny, size):
    with torch.no_grad():
        out = tiny(torch.rand(3, 1, size, size))
    assert out.shape == (3, 1, size, size)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_non_square_input(tiny):
    with torch.no_grad():
        assert tiny(torch.rand(1, 1, 32, 48)).shape == (1, 1, 32, 48)


@pytest.mark.parametrize("hw", [(30, 32), (32, 40), (8, 8), (33, 33)])
def test_side_not_multiple_of_16_is_a_clear_error(tiny, hw):
    with pytest.raises(ValueError, match="multiples of 16") as e:
        tiny(torch.rand(1, 1, *hw))
    assert f"{hw[0]}x{hw[1]}" in str(e.value)


def test_bad_base():
    with pytest.raises(ValueError, match="base width"):
        unet.UNet(base=0)


def test_paper_parameter_count():
    assert spec_parameter_count(64) == PAPER_PARAMETERS
    assert unet.count_parameters(unet.UNet(in_channels=1, base=64)) == PAPER_PARAMETERS


@pytest.mark.parametrize("base", [1, 4, 16])
def test_parameter_count_matches_spec_for_other_widths(base):
    assert unet.count_parameters(unet.UNet(base=base)) == spec_parameter_count(base)


def test_architecture_layout(tiny):
    assert len(tiny.encoders) == 4 and len(tiny.decoders) == 4 and len(tiny.upsamples) == 4
    assert isinstance(tiny.pool, nn.MaxPool2d) and tiny.pool.kernel_size == 2
    for up in tiny.upsamples:
        assert isinstance(up, nn.ConvTranspose2d) and up.kernel_size == (2, 2) and up.stride == (2, 2)
    for block in [*tiny.encoders, tiny.bottleneck, *tiny.decoders]:
        kinds = [type(m) for m in block]
        assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 2
        for conv in (block[0], block[3]):
            assert conv.kernel_size == (3, 3) and conv.padding == (1, 1)
    assert tiny.head.kernel_size == (1, 1) and tiny.head.out_channels == 1
    assert tiny.config() == {"in_channels": 1, "base": 4, "out_channels": 1, "depth": 4, "input_norm": "none"}


def test_describe():
    net = unet.UNet(base=4)
    net.train()
    rows = unet.describe(net, 64)
    assert len(rows) == 10
    expected = [
        ("encoder 1", 4, 64), ("encoder 2", 8, 32), ("encoder 3", 16, 16), ("encoder 4", 32, 8),
        ("bottleneck", 64, 4),
        ("decoder 4", 32, 8), ("decoder 3", 16, 16), ("decoder 2", 8, 32), ("decoder 1", 4, 64),
        ("head", 1, 64),
    ]
    assert [(r.stage, r.channels, r.height, r.width) for r in rows] == [(s, c, h, h) for s, c, h in expected]
    assert sum(r.parameters for r in rows) == unet.count_parameters(net)
    assert rows[0].parameters == unet.count_parameters(net.encoders[0])
    assert rows[5].parameters == unet.count_parameters(net.decoders[0]) + unet.count_parameters(net.upsamples[0])
    assert net.training                                  # mode restored
    assert not any(m._forward_hooks for m in net.modules())   # hooks removed


def test_describe_at_other_size():
    rows = unet.describe(unet.UNet(base=2), 32)
    assert (rows[4].height, rows[4].channels) == (2, 32) and (rows[-1].height, rows[-1].channels) == (32, 1)
