import math

import pytest
import torch

from napari_unet.model import (
    UNet,
    UNetConfig,
    alignment,
    context_margin,
    is_valid_input_size,
    output_size,
    valid_input_size,
    valid_input_sizes,
)


def test_paper_network_shape_and_layers():
    cfg = UNetConfig()
    net = UNet(cfg)
    assert net.n_conv_layers == 23
    assert output_size(cfg, 572) == 388
    assert context_margin(cfg) == 92
    assert alignment(cfg) == 16
    with torch.no_grad():
        y = UNet(UNetConfig(base_channels=2)).eval()(torch.zeros(1, 1, 572, 572))
    assert y.shape == (1, 2, 388, 388)
    widths = [m.out_channels for m in net.down.modules() if isinstance(m, torch.nn.Conv2d)][::2]
    assert widths == [64, 128, 256, 512, 1024]


def test_he_initialisation_std():
    torch.manual_seed(0)
    net = UNet(UNetConfig(base_channels=32))
    conv = net.down[2][0]  # 3x3 conv, 64 -> 128 channels: N = 9 * 64
    expected = math.sqrt(2 / (9 * conv.in_channels))
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0


def test_dropout_only_in_training():
    net = UNet(UNetConfig(base_channels=2, depth=3, dropout=0.5))
    x = torch.randn(1, 1, 92, 92)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))


@pytest.mark.parametrize("depth", [2, 3, 4, 5])
def test_valid_sizes_are_exactly_the_accepted_ones(depth):
    cfg = UNetConfig(depth=depth, base_channels=2, dropout=0)
    net = UNet(cfg).eval()
    sizes = valid_input_sizes(cfg, 1, 260)
    assert sizes, "some size must be valid"
    for n, out in sizes[:3]:
        with torch.no_grad():
            assert net(torch.zeros(1, 1, n, n)).shape[-1] == out
    steps = {b[0] - a[0] for a, b in zip(sizes, sizes[1:])}
    assert steps == {alignment(cfg)}
    assert not is_valid_input_size(cfg, sizes[0][0] + 1)


def test_invalid_size_message_names_the_nearest_valid_one():
    cfg = UNetConfig()
    with pytest.raises(ValueError, match="nearest valid size is 572"):
        output_size(cfg, 570)
    assert valid_input_size(cfg, 570) == 572
    assert valid_input_size(cfg, 10) == 188


def test_same_padding_keeps_size():
    cfg = UNetConfig(padding="same", base_channels=2)
    assert output_size(cfg, 256) == 256
    with torch.no_grad():
        assert UNet(cfg).eval()(torch.zeros(1, 1, 64, 48)).shape == (1, 2, 64, 48)


@pytest.mark.parametrize(
    "kwargs,msg",
    [({"padding": "full"}, "padding"), ({"depth": 0}, "depth"), ({"dropout": 1.0}, "dropout"),
     ({"in_channels": 0}, "in_channels"), ({"input_compression": -1.0}, "input_compression"),
     ({"input_compression": math.inf}, "input_compression"), ({"keep_linear": True}, "keep_linear")],
)
def test_bad_config(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        UNetConfig(**kwargs)


def test_narrowed_keeps_the_strongest_channels_exactly():
    """A wide network whose extra channels carry nothing (zero filters) narrows to the same function."""
    from napari_unet.model import narrowed

    torch.manual_seed(0)
    wide = UNet(UNetConfig(base_channels=8, depth=3, dropout=0.0, n_classes=3)).eval()
    small = UNet(UNetConfig(base_channels=4, depth=3, dropout=0.0, n_classes=3)).eval()
    # put small's weights into a random subset of wide's channels and zero the rest
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in wide.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.weight.zero_()
                m.bias.zero_()
    levels = [torch.sort(torch.randperm(8 * 2**i, generator=g)[: 4 * 2**i]).values for i in range(3)]

    def put(dst, src, keep_out, keep_in, transposed=False):
        if transposed:
            dst.weight.data[keep_in[:, None], keep_out] = src.weight.data
        else:
            dst.weight.data[keep_out[:, None], keep_in] = src.weight.data
        dst.bias.data[keep_out] = src.bias.data

    prev = torch.arange(1)
    for i in range(3):
        put(wide.down[i][0], small.down[i][0], levels[i], prev)
        put(wide.down[i][2], small.down[i][2], levels[i], levels[i])
        prev = levels[i]
    for j in range(2):
        lv = 1 - j
        put(wide.upconv[j], small.upconv[j], levels[lv], prev, transposed=True)
        put(wide.up[j][0], small.up[j][0], levels[lv], torch.cat([levels[lv], 8 * 2**lv + levels[lv]]))
        put(wide.up[j][2], small.up[j][2], levels[lv], levels[lv])
        prev = levels[lv]
    put(wide.head, small.head, torch.arange(3), prev)
    # biases of zero filters are zero, so the kept (non-zero) filters are exactly small's
    x = torch.rand(1, 1, 44, 44)
    with torch.no_grad():
        assert torch.allclose(wide(x), small(x), atol=1e-5)
        narrow = narrowed(wide, 4).eval()
        assert narrow.config.base_channels == 4
        assert torch.allclose(narrow(x), small(x), atol=1e-5)
    with pytest.raises(ValueError, match="widen"):
        narrowed(small, 8)


def test_input_compression_is_the_logarithm_in_front_of_the_same_network():
    """k = 0 is the paper's network; k > 0 runs the same weights on sign(x) log(1 + k|x|) / log(1 + k),
    which keeps 0 and +-1 and lifts a dim value (5 % of the range) to about a quarter of it."""
    torch.manual_seed(0)
    plain = UNet(UNetConfig(base_channels=4, depth=3, dropout=0.0)).eval()
    log = UNet(UNetConfig(base_channels=4, depth=3, dropout=0.0, input_compression=30.0)).eval()
    log.load_state_dict(plain.state_dict())
    x = torch.randn(1, 1, 44, 44)
    squashed = torch.sign(x) * torch.log1p(30 * x.abs()) / math.log1p(30)
    with torch.no_grad():
        assert torch.allclose(log(x), plain(squashed), atol=1e-6)
        assert not torch.allclose(log(x), plain(x), atol=1e-3)
    v = torch.tensor([-1.0, 0.0, 0.05, 1.0])
    f = torch.sign(v) * torch.log1p(30 * v.abs()) / math.log1p(30)
    assert torch.allclose(f[[0, 1, 3]], v[[0, 1, 3]]) and 0.25 < float(f[2]) < 0.3
    # headers written before the option existed read as the paper's network
    old = {k: v for k, v in UNetConfig().to_dict().items() if k != "input_compression"}
    assert UNetConfig.from_dict(old).input_compression == 0.0


def test_keep_linear_gives_the_first_layer_each_channel_linear_and_compressed():
    """keep_linear: the first convolution sees channel i linear, then compressed; a linear network
    widened by with_compressed_view computes the same until its new (zero) weights train."""
    from napari_unet.model import with_compressed_view

    torch.manual_seed(0)
    both = UNet(UNetConfig(in_channels=2, base_channels=4, depth=3, dropout=0.0, input_compression=30.0,
                           keep_linear=True)).eval()
    assert both.down[0][0].weight.shape[1] == 4 == both.config.first_layer_inputs
    plain = UNet(UNetConfig(in_channels=4, base_channels=4, depth=3, dropout=0.0)).eval()
    plain.load_state_dict(both.state_dict())
    x = torch.randn(1, 2, 44, 44)
    c = torch.sign(x) * torch.log1p(30 * x.abs()) / math.log1p(30)
    with torch.no_grad():
        assert torch.allclose(both(x), plain(torch.stack([x[:, 0], c[:, 0], x[:, 1], c[:, 1]], 1)), atol=1e-6)

    linear = UNet(UNetConfig(base_channels=4, depth=3, dropout=0.0, n_classes=3)).eval()
    wider = with_compressed_view(linear, 30.0).eval()
    assert wider.config.keep_linear and wider.config.input_compression == 30.0
    with torch.no_grad():
        assert torch.equal(wider(x[:, :1]), linear(x[:, :1]))
        wider.down[0][0].weight[:, 1] += 0.1  # once the compressed input has weight, it counts
        assert not torch.allclose(wider(x[:, :1]), linear(x[:, :1]), atol=1e-3)
    with pytest.raises(ValueError, match="already compresses"):
        with_compressed_view(wider, 10.0)
