"""What a caller hands the engine, checked and viewed as planes: image layouts (grey, colour,
multi-channel, stacks), the choice of a channel, NaN/inf pixels and damaged model weights.
Every refusal is an :class:`~napari_unet.errors.InputError` with a one-line reason."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .errors import InputError
from .segmentation_model import SegmentationModel

__all__ = ["NonFiniteError", "check_image", "check_finite_weights", "warn_nonfinite", "pick_channel", "as_planes"]


class NonFiniteError(ValueError):
    """NaN or infinite weights or probabilities; the message names the cause."""


def check_image(image):
    """``image`` as something with a shape and a dtype (numpy, dask, zarr, ...), or an
    :class:`InputError` saying what was given instead (None, a path, a list of images)."""
    import os

    if image is None:
        raise InputError("no image given (None)")
    if isinstance(image, (str, bytes, os.PathLike)):
        raise InputError(
            f"got a file name ({os.fspath(image)!r}), not an image: read it first, e.g. "
            "napari_unet.io.read_image(path)"
        )
    if hasattr(image, "shape") and hasattr(image, "dtype"):
        return image
    if isinstance(image, (list, tuple)):
        try:
            arr = np.asarray(image)
        except ValueError:
            arr = None
        if arr is None or arr.dtype == object:
            raise InputError("got a list of arrays of different shapes: segment them one at a time")
        return arr
    raise InputError(f"cannot segment a {type(image).__name__}: give a numpy (or dask/zarr) array")


def check_finite_weights(model: SegmentationModel) -> None:
    """Raise :class:`NonFiniteError` if any weight of ``model`` is NaN or infinite."""
    if not isinstance(model, SegmentationModel):
        hint = " (load it first with napari_unet.load_model)" if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__") else ""
        raise InputError(f"model must be a SegmentationModel, not {type(model).__name__}{hint}")
    for name, t in model.network.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise NonFiniteError(
                f"the model {model.name!r} has NaN or infinite weights (in {name}): it is damaged or its training "
                "diverged; use another model"
            )


def warn_nonfinite(planes) -> None:
    """Warn (once, with the count) when ``planes`` hold NaN or infinite pixels."""
    from .normalize import count_nonfinite

    n = count_nonfinite(planes)
    if n:
        total = int(np.prod(planes.shape))
        if n == total:
            warnings.warn(f"all {total} pixels are NaN or infinite: there is nothing to segment, the labels will be "
                          "empty; check how the image was exported", stacklevel=3)
            return
        share = 100 * n / total
        pct = f"{share:.2g}" if share < 10 else f"{share:.0f}" if share < 99.5 else ">99"  # never 1e+02
        warnings.warn(
            f"{n} of {total} pixels ({pct} %) are NaN or infinite: treated as missing data "
            "(filled with the image's dark level before normalisation)",
            stacklevel=3,
        )


def _pick_hint(axis: int, in_channels: int) -> str:
    if in_channels == 1:
        return (f"pick one channel (np.take(image, k, axis={axis}) in Python; --channel-axis {axis} --channel K on "
                "the command line), or use a model trained on this many channels")
    return f"give an image with {in_channels} channels, or use a model trained on this many channels"


def pick_channel(image, channel: int, channel_axis: int | None = None):
    """Channel ``channel`` of ``image`` along ``channel_axis`` (default: the last axis of a 3D
    image when it is small, else the first), as a grey image or stack."""
    a = check_image(image)
    nd = len(a.shape)
    if channel_axis is None or channel_axis is False:
        if nd != 3:
            raise InputError(f"say which axis of the image {tuple(a.shape)} holds the channels (--channel-axis N)")
        channel_axis = 2 if a.shape[2] <= 8 else 0
    ax = int(channel_axis)
    if not -nd <= ax < nd:
        raise InputError(f"channel axis {ax} does not exist in an image of shape {tuple(a.shape)}")
    n = a.shape[ax]
    if not -n <= channel < n:
        raise InputError(f"channel {channel} does not exist: axis {ax % nd} of the image {tuple(a.shape)} has {n}")
    index = [slice(None)] * nd
    index[ax] = channel
    return a[tuple(index)]


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
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_) or np.issubdtype(dtype, np.complexfloating):
        raise InputError(f"cannot segment an image of type {dtype}; give integer or float pixels")
    shape = tuple(a.shape)
    if channel_axis is None:
        if nd == 2:
            channel_axis = False
        elif nd == 3:
            # a last axis of a few entries next to two large ones is channels, never planes
            small_last = shape[-1] <= 8 and shape[-1] * 4 <= min(shape[0], shape[1])
            if a.shape[-1] in (3, 4) and a.shape[0] > 4:
                channel_axis = -1
            elif in_channels > 1 and a.shape[0] == in_channels:
                channel_axis = 0
            elif in_channels > 1 and a.shape[-1] == in_channels:
                channel_axis = -1
            elif small_last and shape[-1] == 1:
                channel_axis = -1
            elif small_last:
                raise InputError(
                    f"the image {shape} has {shape[-1]} channels along axis 2 (channels last), but the model takes "
                    f"{in_channels}: {_pick_hint(2, in_channels)}"
                )
            elif in_channels > 1:
                raise InputError(
                    f"the model takes {in_channels} channels, but no axis of the image {shape} has {in_channels} "
                    "entries: say which axis holds the channels (channel_axis / --channel-axis N)"
                )
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
            raise InputError(
                f"the model expects {in_channels} channel(s) but the image {shape} has {c} along axis {ax}: "
                f"{_pick_hint(ax, in_channels)}"
            )
    lead = tuple(moved.shape[:-3])
    return moved.reshape((-1, c) + tuple(moved.shape[-2:])), lead
