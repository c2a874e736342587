"""The U-Net of Ronneberger, Fischer and Brox (MICCAI 2015) and its size arithmetic.

The network knows nothing of tiles or images: it maps a ``(N, C, H, W)`` tensor to
``(N, classes, H', W')``. With ``padding="valid"`` (the paper) every 3x3 convolution
drops one pixel on each side, so ``H' < H``; :func:`output_size` and
:func:`valid_input_size` give the arithmetic the tiler needs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

__all__ = [
    "UNetConfig",
    "UNet",
    "output_size",
    "is_valid_input_size",
    "valid_input_size",
    "valid_input_sizes",
    "context_margin",
    "alignment",
    "narrowed",
]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a U-Net.

    Parameters
    ----------
    in_channels : int
        Channels of the input image (1 for grey).
    n_classes : int
        Output classes (softmax over this axis).
    depth : int
        Number of resolution levels, the bottleneck included (5 in the paper: 4 poolings).
    base_channels : int
        Feature maps at the first level (64 in the paper); doubled at every level.
    padding : {"valid", "same"}
        ``"valid"``: unpadded convolutions, as in the paper (output smaller than input,
        seam-free tiling). ``"same"``: zero-padded convolutions (output as large as input).
    dropout : float
        Drop-out probability at the end of the contracting path (the paper uses it there).
    input_compression : float
        ``k`` of a logarithmic first step, ``x -> sign(x) log(1 + k|x|) / log(1 + k)``, on the
        normalised input (0, the paper: none). It keeps 0 and 1 where they are and lifts what
        is dim: a nucleus at 5 % of the range (bright debris took the rest) reaches 27 % at
        ``k = 30``. Part of the network, so every tiling, exporter and format sees it.
    keep_linear : bool
        With ``input_compression``: give the first convolution the linear input as well, each
        input channel followed by its compressed copy (``2 * in_channels`` inputs), so the
        network can use either (False: the compressed input replaces the linear one).
    """

    in_channels: int = 1
    n_classes: int = 2
    depth: int = 5
    base_channels: int = 64
    padding: str = "valid"
    dropout: float = 0.5
    input_compression: float = 0.0
    keep_linear: bool = False

    def __post_init__(self):
        if self.in_channels < 1 or self.n_classes < 1:
            raise ValueError("in_channels and n_classes must be at least 1")
        if self.depth < 1:
            raise ValueError("depth must be at least 1")
        if self.base_channels < 1:
            raise ValueError("base_channels must be at least 1")
        if self.padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', not {self.padding!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if not (self.input_compression >= 0 and math.isfinite(self.input_compression)):
            raise ValueError("input_compression must be a finite number >= 0 (0: none)")
        if self.keep_linear and not self.input_compression:
            raise ValueError("keep_linear needs input_compression > 0 (it adds the compressed input beside the linear one)")

    @property
    def first_layer_inputs(self) -> int:
        """Channels the first convolution sees: ``in_channels``, twice that with ``keep_linear``."""
        return self.in_channels * (2 if self.keep_linear else 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown architecture fields: {sorted(unknown)}")
        return cls(**d)


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, pad: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=pad),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=pad),
            nn.ReLU(inplace=True),
        )


def _interleaved(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Channels (axis 1) of ``a`` and ``b`` alternated: a0, b0, a1, b1, ... (keep_linear's order)."""
    return torch.stack([a, b], dim=2).flatten(1, 2)


def _center_crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    dy = (x.shape[-2] - h) // 2
    dx = (x.shape[-1] - w) // 2
    return x[..., dy : dy + h, dx : dx + w]


class UNet(nn.Module):
    """The U-Net. With the default :class:`UNetConfig` it has the paper's 23 convolutions
    and maps a 572x572 tile to 388x388."""

    def __init__(self, config: UNetConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = UNetConfig(**kwargs)
        elif kwargs:
            raise TypeError("give either a UNetConfig or keyword arguments, not both")
        self.config = config
        pad = 1 if config.padding == "same" else 0
        widths = [config.base_channels * 2**i for i in range(config.depth)]
        self.down = nn.ModuleList()
        cin = config.first_layer_inputs
        for w in widths:
            self.down.append(_DoubleConv(cin, w, pad))
            cin = w
        self.pool = nn.MaxPool2d(2, 2)
        self.dropout = nn.Dropout2d(config.dropout) if config.dropout > 0 else nn.Identity()
        self.upconv = nn.ModuleList()
        self.up = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.upconv.append(nn.ConvTranspose2d(cin, w, 2, stride=2))
            self.up.append(_DoubleConv(2 * w, w, pad))
            cin = w
        self.head = nn.Conv2d(cin, config.n_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation (std sqrt(2/N), N = inputs of one unit), as in the paper."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
                if isinstance(m, nn.ConvTranspose2d):
                    # each output pixel of a stride-2 2x2 up-convolution sees one input pixel
                    # of every channel: N = in_channels
                    fan_in = m.weight.shape[0]
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_in))
                nn.init.zeros_(m.bias)

    @property
    def n_conv_layers(self) -> int:
        """Number of convolution layers (up-convolutions included), 23 in the paper."""
        return sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in self.modules())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W)`` to class scores (logits) ``(N, n_classes, H', W')``."""
        k = self.config.input_compression
        if k:
            c = torch.sign(x) * torch.log1p(k * torch.abs(x)) / math.log1p(k)
            x = _interleaved(x, c) if self.config.keep_linear else c
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        x = self.dropout(x)
        for upconv, block, skip in zip(self.upconv, self.up, reversed(skips)):
            x = upconv(x)
            skip = _center_crop(skip, x.shape[-2], x.shape[-1])
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)


def narrowed(network: UNet, base_channels: int) -> UNet:
    """A narrower copy of a trained ``network`` (``base_channels`` at the first level) that
    starts from its strongest feature maps.

    Every convolution keeps the output channels whose filters have the largest L1 norm
    (Li et al., "Pruning filters for efficient ConvNets", ICLR 2017), and the layers after it
    keep the matching input channels, skip connections included. The result computes a
    different function and needs training, but starts far closer to the teacher than a new
    network: this is how a fast width-16 model is trained from a width-32 one on a CPU.
    """
    cfg = network.config
    if base_channels > cfg.base_channels:
        raise ValueError(f"cannot widen a network ({cfg.base_channels} -> {base_channels} channels)")
    new_cfg = replace(cfg, base_channels=int(base_channels))
    out = UNet(new_cfg)
    k = [new_cfg.base_channels * 2**i for i in range(cfg.depth)]

    def strongest(conv: nn.Module, n: int, transposed: bool = False) -> torch.Tensor:
        w = conv.weight.detach()
        norms = w.abs().sum(dim=(0, 2, 3)) if transposed else w.abs().sum(dim=(1, 2, 3))
        return torch.sort(torch.topk(norms, n).indices).values

    def copy(dst, src, keep_out, keep_in, transposed=False):
        w = src.weight.detach()
        w = w[keep_in][:, keep_out] if transposed else w[keep_out][:, keep_in]
        dst.weight.data.copy_(w)
        dst.bias.data.copy_(src.bias.detach()[keep_out])

    prev = torch.arange(cfg.first_layer_inputs)
    skips = []
    with torch.no_grad():
        for i, (src, dst) in enumerate(zip(network.down, out.down)):
            a = strongest(src[0], k[i])
            copy(dst[0], src[0], a, prev)
            b = strongest(src[2], k[i])
            copy(dst[2], src[2], b, a)
            skips.append(b)
            prev = b
        for j, (su, du, sb, db) in enumerate(zip(network.upconv, out.upconv, network.up, out.up)):
            level = cfg.depth - 2 - j
            c = strongest(su, k[level], transposed=True)
            copy(du, su, c, prev, transposed=True)
            # the block's input is cat([skip, up-convolution]): skip channels first
            width = cfg.base_channels * 2**level
            cat_in = torch.cat([skips[level], width + c])
            d = strongest(sb[0], k[level])
            copy(db[0], sb[0], d, cat_in)
            u = strongest(sb[2], k[level])
            copy(db[2], sb[2], u, d)
            prev = u
        copy(out.head, network.head, torch.arange(cfg.n_classes), prev)
    return out


def with_compressed_view(network: UNet, k: float) -> UNet:
    """A copy of a trained linear-input ``network`` that also sees its input compressed
    (``input_compression = k``, ``keep_linear``); the new inputs start with zero weights,
    so it computes exactly what ``network`` does until training teaches it to use them."""
    cfg = network.config
    if cfg.input_compression:
        raise ValueError("the network already compresses its input; start from one with a linear input")
    out = UNet(replace(cfg, input_compression=float(k), keep_linear=True))
    state = dict(network.state_dict())
    w = state["down.0.0.weight"]  # (out, in, 3, 3) -> (out, 2 * in, 3, 3), compressed copies zero
    state["down.0.0.weight"] = _interleaved(w, torch.zeros_like(w))
    out.load_state_dict(state)
    return out


# --------------------------------------------------------------------------- size arithmetic


def _conv_loss(config: UNetConfig) -> int:
    return 4 if config.padding == "valid" else 0


def _try_output_size(config: UNetConfig, input_size: int) -> int | None:
    loss = _conv_loss(config)
    s = int(input_size)
    for _ in range(config.depth - 1):
        s -= loss
        if s <= 0 or s % 2:
            return None
        s //= 2
    s -= loss
    if s <= 0:
        return None
    for _ in range(config.depth - 1):
        s = 2 * s - loss
        if s <= 0:
            return None
    return s


def output_size(config: UNetConfig, input_size: int) -> int:
    """Output edge for an input edge, or ``ValueError`` if the network refuses it (an odd
    feature map before a pooling, or nothing left), naming the nearest valid size."""
    out = _try_output_size(config, input_size)
    if out is None:
        raise ValueError(
            f"input size {input_size} is not valid for this network "
            f"(odd or empty feature map before a pooling); the nearest valid size is "
            f"{valid_input_size(config, input_size)}"
        )
    return out


def is_valid_input_size(config: UNetConfig, input_size: int) -> bool:
    """Whether the network accepts an input edge of ``input_size`` pixels."""
    return _try_output_size(config, input_size) is not None


def alignment(config: UNetConfig) -> int:
    """Shifts of the input by multiples of this keep the output equivariant (2**poolings)."""
    return 2 ** (config.depth - 1)


def valid_input_sizes(config: UNetConfig, lo: int = 1, hi: int = 2048) -> list[tuple[int, int]]:
    """All valid ``(input, output)`` edges with ``lo <= input <= hi``."""
    return [(n, output_size(config, n)) for n in range(max(1, lo), hi + 1) if is_valid_input_size(config, n)]


def valid_input_size(config: UNetConfig, size: int) -> int:
    """The valid input edge nearest to ``size`` (the larger one on a tie)."""
    a = alignment(config)
    # valid sizes form an arithmetic progression of step 2**poolings, starting at the smallest one
    smallest = next(n for n in range(1, 16 * a + 64) if is_valid_input_size(config, n))
    if size <= smallest:
        return smallest
    below = smallest + int((size - smallest) // a) * a
    above = below + a
    return above if (size - below) >= (above - size) else below


def context_margin(config: UNetConfig) -> int:
    """Pixels of context each side of an output tile that a valid network consumes
    (92 for the paper's network); 0 for ``same`` padding."""
    if config.padding == "same":
        return 0
    n = valid_input_size(config, 256)
    return (n - output_size(config, n)) // 2
