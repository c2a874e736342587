"""Segmenting images with a :class:`~napari_unet.modelfile.SegmentationModel`.

``predict_probabilities`` runs overlap-tile inference (see :mod:`napari_unet.tiling`) plane by
plane; ``segment`` adds the instance labels. Both take numpy-like arrays of any size, grey or
multi-channel, 2D or stacks, and never modify their input.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .device import resolve_device
from .model import UNetConfig, alignment, context_margin, is_valid_input_size, output_size, valid_input_size
from .modelfile import SegmentationModel
from .postprocess import labels_from_probabilities
from .tiling import TileGrid, predict_tiled

__all__ = [
    "InputError",
    "Segmentation",
    "as_planes",
    "choose_tile",
    "predict_probabilities",
    "segment",
    "labels_from_probabilities",
]

#: halo each side of a tile for ``same``-padded networks (their zero padding disturbs borders)
SAME_HALO = 32


class InputError(ValueError):
    """An image that cannot be segmented as given; the message says what to do."""


# --------------------------------------------------------------------------- image layout


def as_planes(image, in_channels: int, channel_axis: int | None = None):
    """View ``image`` as ``(P, C, H, W)`` planes for a model with ``in_channels`` channels.

    Rules when ``channel_axis`` is None: 2D -> one grey plane; 3D whose last axis has 3 or 4
    entries (RGB/RGBA) -> one colour image (turned grey for a one-channel model); 3D whose
    first axis equals ``in_channels`` (> 1) -> one multi-channel image; other 3D -> a stack of
    grey planes (z or t). 4D and more need ``channel_axis`` (use ``channel_axis=False`` for a
    grey stack of any dimension).

    Returns ``(planes, lead_shape)`` where ``lead_shape`` is the shape of the non-channel
    leading axes (``()`` for a single image).
    """
    a = image
    nd = len(a.shape)
    if nd < 2:
        raise InputError(f"an image needs at least 2 dimensions (Y, X), got shape {tuple(a.shape)}")
    if any(s == 0 for s in a.shape):
        raise InputError(f"the image is empty (shape {tuple(a.shape)})")
    dtype = np.dtype(a.dtype)
    if not (np.issubdtype(dtype, np.number) or dtype == bool) or np.issubdtype(dtype, np.complexfloating):
        raise InputError(f"cannot segment an image of type {dtype}; give integer or float pixels")
    if channel_axis is None:
        if nd == 2:
            channel_axis = False
        elif nd == 3:
            if a.shape[-1] in (3, 4) and a.shape[0] > 4:
                channel_axis = -1
            elif in_channels > 1 and a.shape[0] == in_channels:
                channel_axis = 0
            elif in_channels > 1 and a.shape[-1] == in_channels:
                channel_axis = -1
            else:
                channel_axis = False
        else:
            raise InputError(
                f"the image has {nd} dimensions {tuple(a.shape)}: say which axis holds the channels "
                f"(channel_axis / --channel-axis N, or 'none' for a stack of grey planes)"
            )
    if channel_axis is False:
        if in_channels != 1:
            raise InputError(f"the model expects {in_channels} channels but the image has 1 (shape {tuple(a.shape)})")
        lead = tuple(a.shape[:-2])
        planes = a.reshape((-1, 1) + tuple(a.shape[-2:]))
        return planes, lead
    ax = int(channel_axis)
    if not -nd <= ax < nd:
        raise InputError(f"channel axis {ax} does not exist in an image of shape {tuple(a.shape)}")
    ax %= nd
    if nd < 3:
        raise InputError(f"a channel axis needs an image with at least 3 dimensions, got shape {tuple(a.shape)}")
    moved = np.moveaxis(a, ax, -3)
    c = moved.shape[-3]
    if c != in_channels:
        if in_channels == 1 and c in (3, 4):
            warnings.warn("colour image given to a one-channel model: using the mean of R, G and B", stacklevel=3)
            moved = np.asarray(moved[..., :3, :, :], dtype=np.float32).mean(axis=-3, keepdims=True)
            c = 1
        else:
            raise InputError(f"the model expects {in_channels} channel(s) but the image has {c} along axis {ax}")
    lead = tuple(moved.shape[:-3])
    return moved.reshape((-1, c) + tuple(moved.shape[-2:])), lead


# --------------------------------------------------------------------------- tile choice


def _bytes_per_pixel(config: UNetConfig, precision: str) -> float:
    # activations of one forward pass without autograd, per input pixel: about a dozen feature
    # maps of the first level's width alive at once, the deeper levels adding as much again
    itemsize = 2 if precision == "bfloat16" else 4
    return 12 * config.base_channels * itemsize * 2


def default_memory_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    try:
        import psutil

        avail = psutil.virtual_memory().available
    except Exception:  # pragma: no cover - psutil missing
        avail = 8 * 2**30
    return int(min(2 * 2**30, avail * 0.25))


def _min_tile_for(config: UNetConfig, extent: int, margin: int) -> int:
    """Smallest valid input edge whose output covers ``extent`` pixels."""
    n = valid_input_size(config, extent + 2 * margin)
    while (output_size(config, n) if config.padding == "valid" else n - 2 * margin) < extent:
        n += alignment(config)
    return n


def choose_tile(
    config: UNetConfig,
    image_shape: Sequence[int],
    *,
    tile: int | None = None,
    memory_budget: int | None = None,
    precision: str = "float32",
    max_edge: int = 1024,
) -> tuple[tuple[int, int], int]:
    """Input tile ``(th, tw)`` and margin for an ``(H, W)`` plane.

    ``tile`` (an edge in pixels) is rounded to the nearest size the network accepts. Otherwise
    the largest square tile within ``memory_budget`` bytes (and ``max_edge``) is used, shrunk
    along any axis where a smaller tile already covers the whole image.
    """
    H, W = (int(s) for s in image_shape[-2:])
    margin = context_margin(config) if config.padding == "valid" else SAME_HALO
    if tile is not None:
        t = valid_input_size(config, int(tile))
        if t <= 2 * margin or (config.padding == "same" and t - 2 * margin < alignment(config)):
            t = _min_tile_for(config, alignment(config), margin)
        return (t, t), margin
    budget = memory_budget or 2 * 2**30
    edge = int(math.sqrt(budget / _bytes_per_pixel(config, precision)))
    edge = max(_min_tile_for(config, alignment(config), margin), min(edge, max_edge))
    t = valid_input_size(config, edge)
    if t > edge and t > _min_tile_for(config, alignment(config), margin):
        t -= alignment(config)
    th = min(t, _min_tile_for(config, H, margin))
    tw = min(t, _min_tile_for(config, W, margin))
    # an axis that needs less than a full tile gives its budget to the other one
    if th < t and tw == t:
        tw = min(_min_tile_for(config, W, margin), valid_input_size(config, int(t * t / th)))
    elif tw < t and th == t:
        th = min(_min_tile_for(config, H, margin), valid_input_size(config, int(t * t / tw)))
    return (th, tw), margin


# --------------------------------------------------------------------------- inference


def _network_fn(model: SegmentationModel, device: torch.device, precision: str, margin: int):
    net = model.network.to(device).eval()
    use_bf16 = precision == "bfloat16"
    if use_bf16:
        net = net.to(memory_format=torch.channels_last)
    same = model.config.padding == "same"

    def fn(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(device)
        if use_bf16:
            x = x.contiguous(memory_format=torch.channels_last)
            ctx = torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        else:
            ctx = contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            y = net(x)
        y = torch.softmax(y.float(), dim=1)
        if same and margin:
            y = y[..., margin:-margin, margin:-margin]
        return y.cpu().numpy()

    return fn


def _resolve_precision(precision: str, device: torch.device) -> str:
    p = (precision or "float32").lower()
    if p in ("bf16", "bfloat16"):
        p = "bfloat16"
    elif p in ("fp32", "float32"):
        p = "float32"
    elif p == "auto":
        p = "float32"
    else:
        raise InputError(f"unknown precision {precision!r}: use float32, bfloat16 or auto")
    if p == "bfloat16" and device.type == "mps":
        raise InputError("bfloat16 is not supported on Apple MPS; use float32")
    return p


def predict_probabilities(
    image,
    model: SegmentationModel,
    *,
    channel_axis: int | None | bool = None,
    device: str | torch.device = "auto",
    tile: int | None = None,
    batch_size: int | None = None,
    precision: str = "float32",
    memory_budget: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
) -> np.ndarray:
    """Class probabilities for every pixel of ``image``.

    Parameters
    ----------
    image : array-like
        2D ``(Y, X)``, colour ``(Y, X, 3)``, multi-channel, or a stack ``(Z, Y, X)``; uint8,
        uint16 or float. See :func:`as_planes` for the layout rules.
    model : SegmentationModel
        Its normalisation is applied to every plane.
    device : str
        ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    tile : int, optional
        Input tile edge, rounded to the nearest size the network accepts; default from
        ``memory_budget`` (bytes).
    precision : {"float32", "bfloat16", "auto"}
        ``bfloat16`` runs under autocast with channels-last tensors (about 3x faster on CPUs with
        AMX, see docs/benchmarks.md); ``auto`` is float32.
    progress : callable, optional
        ``progress(done, total)`` after every batch of tiles, counted over all planes.
    cancel : threading.Event or callable, optional
        Stops within one batch of tiles by raising :class:`~napari_unet.tiling.Cancelled`.

    Returns
    -------
    probabilities : ndarray, float32, shape ``(n_classes, *stack_shape, Y, X)``
    """
    dev = resolve_device(device)
    prec = _resolve_precision(precision, dev)
    planes, lead = as_planes(image, model.in_channels, channel_axis)
    P, C, H, W = planes.shape
    config = model.config
    budget = memory_budget or default_memory_budget(dev)
    (th, tw), margin = choose_tile(config, (H, W), tile=tile, memory_budget=budget, precision=prec)
    if batch_size is None:
        per_tile = th * tw * _bytes_per_pixel(config, prec)
        batch_size = 1 if dev.type == "cpu" else max(1, min(16, int(budget // per_tile)))
    align = alignment(config)
    per_plane = len(TileGrid((H, W), (th, tw), margin, align))
    total = per_plane * P
    K = config.n_classes
    out = np.empty((P, K, H, W), dtype=np.float32)
    fn = _network_fn(model, dev, prec, margin if config.padding == "same" else 0)
    done = 0

    def tick(n):
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    for p in range(P):
        plane = planes[p]
        stats = model.normalization.stats(plane)
        norm_fn = model.normalization.apply

        def plane_fn(batch, _stats=stats):
            return fn(np.stack([norm_fn(t, _stats) for t in batch]))

        predict_tiled(
            plane, plane_fn, tile=(th, tw), margin=margin, out_channels=K, align=align,
            batch_size=batch_size, out=out[p], progress=tick, cancel=cancel,
        )
    out = np.moveaxis(out, 1, 0)  # (K, P, H, W)
    return out.reshape((K,) + lead + (H, W))


@dataclass
class Segmentation:
    """Result of :func:`segment`: class probabilities ``(n_classes, *stack, Y, X)`` float32 and
    instance labels ``(*stack, Y, X)`` (0 = background, ids unique over the whole stack)."""

    probabilities: np.ndarray
    labels: np.ndarray


def labels_from_model_output(probabilities: np.ndarray, model: SegmentationModel, **overrides) -> np.ndarray:
    """Instance labels for every plane of ``probabilities`` with the model's post-processing
    defaults (``threshold``, ``seed_threshold``, ``min_size``), overridable by keyword."""
    params = {"threshold": 0.5, "seed_threshold": None, "min_size": 0}
    params.update({k: v for k, v in model.postprocessing.items() if k in params})
    params.update({k: v for k, v in overrides.items() if v is not None or k == "seed_threshold"})
    fg = probabilities[model.foreground_class]
    shape = fg.shape
    flat = fg.reshape((-1,) + shape[-2:])
    labs = []
    offset = 0
    for plane in flat:
        lab = labels_from_probabilities(plane, **params).astype(np.uint32)
        lab[lab > 0] += offset
        offset = int(lab.max()) if lab.max() > 0 else offset
        labs.append(lab)
    labels = np.stack(labs).reshape(shape)
    return labels.astype(np.uint16) if offset < 2**16 else labels


def segment(image, model: SegmentationModel, **kwargs) -> Segmentation:
    """Probabilities and instance labels for ``image``; keyword arguments as for
    :func:`predict_probabilities`, plus ``threshold``, ``seed_threshold`` and ``min_size`` for
    the labels (defaults stored with the model)."""
    post = {k: kwargs.pop(k) for k in ("threshold", "seed_threshold", "min_size") if k in kwargs}
    probs = predict_probabilities(image, model, **kwargs)
    return Segmentation(probs, labels_from_model_output(probs, model, **post))
