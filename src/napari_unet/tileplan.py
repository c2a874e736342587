"""Planning the tiles of inference: the tile shape, its margin and the batch size that fit the
memory of a device, decided once per plane shape and handed to the tiler as a :class:`TilePlan`.

The rules come from measurements (docs/benchmarks.md): ``_bytes_per_pixel`` (cautious) chooses
tiles, :func:`peak_bytes_per_pixel` (measured, with a margin) refuses a tile that cannot fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InputError
from .model import UNetConfig, alignment, context_margin, is_valid_input_size, output_size, valid_input_size
from .tiling import TileGrid

__all__ = ["SAME_HALO", "TilePlan", "plan_tiles", "choose_tile", "round_tile", "min_tile_for",
           "peak_bytes_per_pixel", "default_memory_budget"]

#: halo each side of a tile for ``same``-padded networks (their zero padding disturbs borders)
SAME_HALO = 32


def _bytes_per_pixel(config: UNetConfig, precision: str) -> float:
    # activations of one forward pass without autograd, per input pixel: about a dozen feature
    # maps of the first level's width alive at once, the deeper levels adding as much again
    itemsize = 2 if precision == "bfloat16" else 4
    return 12 * config.base_channels * itemsize * 2


def peak_bytes_per_pixel(config: UNetConfig, precision: str = "float32", *, training: bool = False) -> float:
    """Measured peak memory per input pixel of one pass, with a 25 % margin, used to refuse a
    tile that cannot fit (benchmarks/bench_activation_memory.py: 24-26 bytes per first-level
    channel in inference, about 57 with the backward pass of training, float32 on a CPU).
    ``_bytes_per_pixel``, which chooses tiles, is deliberately more cautious."""
    per_channel = 72 if training else 32
    return per_channel * config.base_channels * (0.5 if precision == "bfloat16" and not training else 1.0)


def default_memory_budget(device) -> int:
    """Bytes the tiles of one batch may use: half the free memory of a GPU; on the CPU a quarter
    of the available memory (:func:`napari_unet.memory.available_memory`, which honours
    ``NAPARI_UNET_MEMORY_LIMIT``), at most 2 GiB."""
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    from .memory import available_memory

    return int(min(2 * 2**30, available_memory() * 0.25))  # NAPARI_UNET_MEMORY_LIMIT, when set, stands for it


def tile_margin(config: UNetConfig) -> int:
    """Context each side of a tile: what valid convolutions consume, or ``SAME_HALO``."""
    return context_margin(config) if config.padding == "valid" else SAME_HALO


def min_tile_for(config: UNetConfig, extent: int, margin: int) -> int:
    """Smallest valid input edge whose output covers ``extent`` pixels."""
    n = valid_input_size(config, extent + 2 * margin)
    while (output_size(config, n) if config.padding == "valid" else n - 2 * margin) < extent:
        n += alignment(config)
    return n


def round_tile(config: UNetConfig, tile: int) -> int:
    """The input edge used for a requested ``tile``: the nearest size the network accepts, at
    least the smallest tile with some output."""
    margin = tile_margin(config)
    t = valid_input_size(config, int(tile))
    if t <= 2 * margin or (config.padding == "same" and t - 2 * margin < alignment(config)):
        t = min_tile_for(config, alignment(config), margin)
    return t


def choose_tile(
    config: UNetConfig,
    image_shape: Sequence[int],
    *,
    tile: int | None = None,
    memory_budget: int | None = None,
    precision: str = "float32",
    max_edge: int | None = None,
    device_type: str = "cpu",
) -> tuple[tuple[int, int], int]:
    """Input tile ``(th, tw)`` and margin for an ``(H, W)`` plane.

    ``tile`` (an edge in pixels) is rounded by :func:`round_tile`. Otherwise the largest
    square tile within ``memory_budget`` bytes (and ``max_edge``) is used, shrunk along any
    axis where a smaller tile already covers the whole image. ``max_edge`` defaults to the
    fastest edge measured on a CPU (benchmarks/bench_tile_size.py: about 900 pixels in float32,
    1020 in bfloat16; larger tiles fall out of the caches) and 2048 on a GPU.
    """
    if max_edge is None:
        if device_type == "cpu":
            max_edge = 1024 if precision == "bfloat16" else 896
        else:
            max_edge = 2048
    H, W = (int(s) for s in image_shape[-2:])
    margin = tile_margin(config)
    if tile is not None:
        t = round_tile(config, tile)
        # never larger than the tile that covers the whole image (a huge --tile costs memory only)
        return (min(t, min_tile_for(config, H, margin)), min(t, min_tile_for(config, W, margin))), margin
    budget = memory_budget or 2 * 2**30
    edge = int(math.sqrt(budget / _bytes_per_pixel(config, precision)))
    smallest = min_tile_for(config, alignment(config), margin)
    edge = max(smallest, min(edge, max_edge))
    # among the valid edges up to the limit, the one with the least computed area for this
    # image (tiles x tile area): a slightly smaller tile that covers the image with fewer wasted
    # pixels beats the largest one
    best = None
    a = alignment(config)
    for t in range(smallest, edge + 1, a):
        if not is_valid_input_size(config, t):
            continue
        th = min(t, min_tile_for(config, H, margin))
        tw = min(t, min_tile_for(config, W, margin))
        grid = TileGrid((H, W), (th, tw), margin, a)
        cost = (len(grid.ys) * len(grid.xs) * th * tw, -t)
        if best is None or cost < best[0]:
            best = (cost, (th, tw))
    th, tw = best[1]
    t = max(th, tw)
    # an axis that needs less than a full tile gives its budget to the other one
    if th < t and tw == t:
        tw = min(min_tile_for(config, W, margin), max(tw, valid_input_size(config, int(t * t / th))))
    elif tw < t and th == t:
        th = min(min_tile_for(config, H, margin), max(th, valid_input_size(config, int(t * t / tw))))
    return (th, tw), margin


@dataclass(frozen=True)
class TilePlan:
    """The tiles of one run: input ``tile`` ``(th, tw)``, context ``margin`` each side, the
    pooling ``align``-ment of tile origins and ``batch_size`` tiles per forward pass. Small
    and picklable: dask tasks receive the plan made once for the whole image."""

    tile: tuple[int, int]
    margin: int
    align: int
    batch_size: int = 1

    def grid(self, plane_shape: Sequence[int], region=None) -> TileGrid:
        return TileGrid(plane_shape[-2:], self.tile, self.margin, self.align, region)

    def peak_bytes(self, config: UNetConfig, precision: str) -> float:
        """Estimated peak memory of one batch of tiles (:func:`peak_bytes_per_pixel`)."""
        return self.tile[0] * self.tile[1] * peak_bytes_per_pixel(config, precision) * self.batch_size


def plan_tiles(config: UNetConfig, plane_shape: Sequence[int], device, precision: str, *, tile: int | None = None,
               batch_size: int | None = None, memory_budget: int | None = None) -> TilePlan:
    """The :class:`TilePlan` for ``(H, W)`` planes on ``device`` (a ``torch.device``) in
    ``precision`` (``float32`` or ``bfloat16``): the tile from :func:`choose_tile`, the batch
    size 1 on the CPU and what ``memory_budget`` (default :func:`default_memory_budget`) holds
    on a GPU, at most 16."""
    budget = memory_budget or default_memory_budget(device)
    t, margin = choose_tile(config, plane_shape, tile=tile, memory_budget=budget, precision=precision,
                            device_type=device.type)
    if batch_size is None:
        per_tile = t[0] * t[1] * _bytes_per_pixel(config, precision)
        batch_size = 1 if device.type == "cpu" else max(1, min(16, int(budget // per_tile)))
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise InputError(f"batch_size must be a whole number >= 1, not {batch_size!r}")
    return TilePlan(t, margin, alignment(config), int(batch_size))
