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
from .postprocess import foreground_of, labels_from_classes, labels_from_probabilities
from .tiling import TileGrid, predict_tiled

__all__ = [
    "InputError",
    "NonFiniteError",
    "check_image",
    "check_finite_weights",
    "Predictor",
    "resolve_precision",
    "bf16_is_fast",
    "Segmentation",
    "as_planes",
    "pick_channel",
    "choose_tile",
    "peak_bytes_per_pixel",
    "predict_probabilities",
    "segment",
    "labels_from_probabilities",
    "labels_from_model_output",
    "foreground_probability",
]

#: halo each side of a tile for ``same``-padded networks (their zero padding disturbs borders)
SAME_HALO = 32


class InputError(ValueError):
    """An image that cannot be segmented as given; the message says what to do."""


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


def _warn_nonfinite(planes) -> None:
    from .normalize import count_nonfinite

    n = count_nonfinite(planes)
    if n:
        total = int(np.prod(planes.shape))
        warnings.warn(
            f"{n} of {total} pixels ({100 * n / total:.2g} %) are NaN or infinite: treated as missing data "
            "(filled with the image's dark level before normalisation)",
            stacklevel=3,
        )


# --------------------------------------------------------------------------- image layout


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
    if not (np.issubdtype(dtype, np.number) or dtype == bool) or np.issubdtype(dtype, np.complexfloating):
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


# --------------------------------------------------------------------------- tile choice


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
    max_edge: int | None = None,
    device_type: str = "cpu",
) -> tuple[tuple[int, int], int]:
    """Input tile ``(th, tw)`` and margin for an ``(H, W)`` plane.

    ``tile`` (an edge in pixels) is rounded to the nearest size the network accepts. Otherwise
    the largest square tile within ``memory_budget`` bytes (and ``max_edge``) is used, shrunk
    along any axis where a smaller tile already covers the whole image. ``max_edge`` defaults
    to the fastest edge measured on a CPU (benchmarks/bench_tile_size.py: about 900 pixels in
    float32, 1020 in bfloat16; larger tiles fall out of the caches) and 2048 on a GPU.
    """
    if max_edge is None:
        if device_type == "cpu":
            max_edge = 1024 if precision == "bfloat16" else 896
        else:
            max_edge = 2048
    H, W = (int(s) for s in image_shape[-2:])
    margin = context_margin(config) if config.padding == "valid" else SAME_HALO
    if tile is not None:
        t = valid_input_size(config, int(tile))
        if t <= 2 * margin or (config.padding == "same" and t - 2 * margin < alignment(config)):
            t = _min_tile_for(config, alignment(config), margin)
        # never larger than the tile that covers the whole image (a huge --tile costs memory only)
        return (min(t, _min_tile_for(config, H, margin)), min(t, _min_tile_for(config, W, margin))), margin
    budget = memory_budget or 2 * 2**30
    edge = int(math.sqrt(budget / _bytes_per_pixel(config, precision)))
    smallest = _min_tile_for(config, alignment(config), margin)
    edge = max(smallest, min(edge, max_edge))
    # among the valid edges up to the limit, the one with the least computed area for this
    # image (tiles x tile area): a slightly smaller tile that covers the image with fewer wasted
    # pixels beats the largest one
    best = None
    a = alignment(config)
    for t in range(smallest, edge + 1, a):
        if not is_valid_input_size(config, t):
            continue
        th = min(t, _min_tile_for(config, H, margin))
        tw = min(t, _min_tile_for(config, W, margin))
        grid = TileGrid((H, W), (th, tw), margin, a)
        cost = (len(grid.ys) * len(grid.xs) * th * tw, -t)
        if best is None or cost < best[0]:
            best = (cost, (th, tw))
    th, tw = best[1]
    t = max(th, tw)
    # an axis that needs less than a full tile gives its budget to the other one
    if th < t and tw == t:
        tw = min(_min_tile_for(config, W, margin), max(tw, valid_input_size(config, int(t * t / th))))
    elif tw < t and th == t:
        th = min(_min_tile_for(config, H, margin), max(th, valid_input_size(config, int(t * t / tw))))
    return (th, tw), margin


# --------------------------------------------------------------------------- inference


def _network_fn(model: SegmentationModel, device: torch.device, precision: str, margin: int):
    """The batch callable for the tiler: float32 numpy in, softmax probabilities out.

    Tensors are channels-last on CPU and CUDA: oneDNN/cuDNN convolutions run about 1.4x faster
    that way here (docs/benchmarks.md); bfloat16 runs under autocast."""
    net = model.network.to(device).eval()
    channels_last = device.type in ("cpu", "cuda")
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    use_bf16 = precision == "bfloat16"
    same = model.config.padding == "same"

    def fn(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            y = net(x)
        y = torch.softmax(y.float(), dim=1)
        if not bool(torch.isfinite(y).all()):
            raise NonFiniteError(
                "the network gave NaN or infinite probabilities although its weights and input are finite: "
                "its activations overflowed" + (" in bfloat16; try precision float32" if use_bf16 else
                                                "; check the model and the image's value range")
            )
        if same and margin:
            y = y[..., margin:-margin, margin:-margin]
        return y.contiguous().cpu().numpy()

    return fn


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 runs natively (fast) on ``device``: a CUDA GPU with bf16 support, or a
    CPU with AMX or AVX-512 BF16 instructions (elsewhere it would be emulated, and slow)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
            f = getattr(cpu, probe, None)
            try:
                if f is not None and f():
                    return True
            except Exception:  # pragma: no cover - private API changed
                pass
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` is bfloat16 where the hardware runs it natively (its labels agreed with
    float32 on >= 99.4 % of objects on real held-out images, docs/benchmarks.md), else float32."""
    p = (precision or "auto").lower()
    if p in ("bf16", "bfloat16"):
        p = "bfloat16"
    elif p in ("fp32", "float32"):
        p = "float32"
    elif p == "auto":
        p = "bfloat16" if bf16_is_fast(device) else "float32"
    else:
        raise InputError(f"unknown precision {precision!r}: use float32, bfloat16 or auto")
    if p == "bfloat16" and device.type == "mps":
        raise InputError("bfloat16 is not supported on Apple MPS; use float32")
    return p


#: the 8 rotations/flips of the square's symmetry group: (quarter turns, then flip left-right)
DIHEDRAL = [(k, f) for f in (False, True) for k in range(4)]


def _dihedral(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    a = np.rot90(a, k, axes=(-2, -1))
    return a[..., ::-1] if flip else a


def _dihedral_inverse(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    if flip:
        a = a[..., ::-1]
    return np.rot90(a, -k, axes=(-2, -1))


class Predictor:
    """Everything fixed for one model, device, precision and plane shape: the tile, its
    margin, the pooling alignment, the batch size and the network callable. Used by
    :func:`predict_probabilities` and, block by block, by :mod:`napari_unet.dask_predict`."""

    def __init__(self, model: SegmentationModel, plane_shape: Sequence[int], *, device="auto", tile=None,
                 batch_size=None, precision="auto", memory_budget=None, tile_shape=None):
        self.model = model
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        config = model.config
        budget = memory_budget or default_memory_budget(self.device)
        self.tile, self.margin = choose_tile(config, plane_shape, tile=tile, memory_budget=budget,
                                             precision=self.precision, device_type=self.device.type)
        if tile_shape is not None:  # fixed by a caller that plans blocks (dask_predict)
            self.tile = (int(tile_shape[0]), int(tile_shape[1]))
        per_tile = self.tile[0] * self.tile[1] * _bytes_per_pixel(config, self.precision)
        if batch_size is None:
            batch_size = 1 if self.device.type == "cpu" else max(1, min(16, int(budget // per_tile)))
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise InputError(f"batch_size must be a whole number >= 1, not {batch_size!r}")
        self.batch_size = int(batch_size)
        need = self.tile[0] * self.tile[1] * peak_bytes_per_pixel(config, self.precision) * self.batch_size
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if need > free:
                raise InputError(
                    f"tiles of {self.tile[0]}x{self.tile[1]} pixels in batches of {self.batch_size} need about "
                    f"{need / 2**30:.1f} GiB of GPU memory, {free / 2**30:.1f} GiB are free: use a smaller tile or batch"
                )
        elif self.device.type == "cpu":
            from .memory import check_memory

            check_memory(need, f"tiles of {self.tile[0]}x{self.tile[1]} pixels in batches of {self.batch_size}",
                         "use a smaller tile (--tile) or batch (--batch-size)")
        self.align = alignment(config)
        self.n_classes = config.n_classes
        self._fn = None

    def grid(self, plane_shape, region=None) -> TileGrid:
        return TileGrid(plane_shape[-2:], self.tile, self.margin, self.align, region)

    def fn(self):
        if self._fn is None:
            check_finite_weights(self.model)
            same = self.model.config.padding == "same"
            self._fn = _network_fn(self.model, self.device, self.precision, self.margin if same else 0)
        return self._fn

    def plane(self, plane, stats=None, *, region=None, out=None, progress=None, cancel=None) -> np.ndarray:
        """Probabilities ``(n_classes, H, W)`` (or of ``region``) for one ``(C, H, W)`` plane;
        ``stats`` are the whole plane's normalisation statistics (computed here if None)."""
        norm = self.model.normalization
        if stats is None:
            stats = norm.stats(plane)
        net = self.fn()

        def plane_fn(batch):
            return net(np.stack([norm.apply(t, stats) for t in batch]))

        return predict_tiled(
            plane, plane_fn, tile=self.tile, margin=self.margin, out_channels=self.n_classes, align=self.align,
            batch_size=self.batch_size, out=out, progress=progress, cancel=cancel, region=region,
        )


def predict_probabilities(
    image,
    model: SegmentationModel,
    *,
    channel_axis: int | None | bool = None,
    device: str | torch.device = "auto",
    tile: int | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
    memory_budget: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
    tta: bool = False,
) -> np.ndarray:
    """Class probabilities for every pixel of ``image``.

    Parameters
    ----------
    image : array-like
        2D ``(Y, X)``, colour ``(Y, X, 3)``, multi-channel, or a stack ``(Z, Y, X)``; uint8,
        uint16 or float. See :func:`as_planes` for the layout rules.
    model : SegmentationModel
        Its normalisation is applied to every plane (statistics of the whole plane).
    device : str
        ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    tile : int, optional
        Input tile edge, rounded to the nearest size the network accepts; default from
        ``memory_budget`` (bytes).
    batch_size : int, optional
        Tiles per forward pass (default 1 on the CPU, from the memory budget on a GPU).
    precision : {"auto", "float32", "bfloat16"}
        ``bfloat16`` runs under autocast (2-3x faster on CPUs with AMX and on recent GPUs);
        ``auto`` takes it where the hardware runs it natively, float32 elsewhere. Its labels
        agreed with float32 on real held-out images (docs/benchmarks.md).
    progress : callable, optional
        ``progress(done, total)`` after every batch of tiles, counted over all planes.
    cancel : threading.Event or callable, optional
        Stops within one batch of tiles by raising :class:`~napari_unet.tiling.Cancelled`.
    tta : bool
        Test-time augmentation: average the probabilities of the 8 rotated/flipped versions
        of each plane (the paper averaged 7 for ISBI 2012); 8x the time.

    Returns
    -------
    probabilities : ndarray, float32, shape ``(n_classes, *stack_shape, Y, X)``
    """
    check_finite_weights(model)
    planes, lead = as_planes(check_image(image), model.in_channels, channel_axis)
    _warn_nonfinite(planes)
    P, C, H, W = planes.shape
    pred = Predictor(model, (H, W), device=device, tile=tile, batch_size=batch_size, precision=precision,
                     memory_budget=memory_budget)
    views = DIHEDRAL if tta else DIHEDRAL[:1]
    # quarter turns swap the axes, which may change the number of tiles
    total = P * sum(len(pred.grid((W, H) if k % 2 else (H, W))) for k, _ in views)
    K = model.config.n_classes
    from .memory import check_memory

    # the probabilities, plus the labels made from them (uint32) and the plane being normalised
    check_memory(4.0 * P * K * H * W + 4.0 * P * H * W + 4.0 * C * H * W,
                 f"segmenting an image of {P} x {H} x {W} pixels in memory",
                 "segment it block by block with dask (napari_unet.dask_predict.predict_dask), or plane by plane")
    out = np.empty((P, K, H, W), dtype=np.float32)
    done = 0

    def tick(n):
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    for p in range(P):
        if not tta:
            pred.plane(planes[p], out=out[p], progress=tick, cancel=cancel)
            continue
        stats = model.normalization.stats(planes[p])
        out[p] = 0
        for k, flip in views:
            view = _dihedral(planes[p], k, flip)
            probs = pred.plane(view, stats, progress=tick, cancel=cancel)
            out[p] += _dihedral_inverse(probs, k, flip)
        out[p] /= len(views)
    out = np.moveaxis(out, 1, 0)  # (K, P, H, W)
    return out.reshape((K,) + lead + (H, W))


@dataclass
class Segmentation:
    """Result of :func:`segment`: class probabilities ``(n_classes, *stack, Y, X)`` float32 and
    instance labels ``(*stack, Y, X)`` (0 = background, ids unique over the whole stack)."""

    probabilities: np.ndarray
    labels: np.ndarray


#: planes with more pixels than this are labelled block by block (blocks of LABEL_BLOCK pixels)
LARGE_PLANE = 4096 * 4096
LABEL_BLOCK = 2048


def labels_from_model_output(probabilities: np.ndarray, model: SegmentationModel, **overrides) -> np.ndarray:
    """Instance labels for every plane of ``probabilities`` with the model's post-processing
    defaults (``threshold``, ``seed_threshold``, ``min_size``, ``smooth``, ``fill_holes``; see
    :func:`~napari_unet.postprocess.labels_from_probabilities`), overridable by keyword
    (None keeps the model's value). Planes larger than ``LARGE_PLANE`` pixels are labelled
    block by block (:func:`napari_unet.blockwise.label_blockwise`), so that labelling needs no
    whole-plane temporaries."""
    params = {"threshold": 0.5, "seed_threshold": None, "min_size": 0, "smooth": 0.0, "fill_holes": False}
    params.update({k: v for k, v in model.postprocessing.items() if k in params})
    params.update({k: v for k, v in overrides.items() if v is not None})
    K = probabilities.shape[0]
    shape = probabilities.shape[1:]
    flat = probabilities.reshape((K, -1) + shape[-2:])
    labs = []
    offset = 0
    for i in range(flat.shape[1]):
        plane = flat[:, i]
        if plane.shape[-2] * plane.shape[-1] > LARGE_PLANE:
            # block by block, ids merged across block faces: no whole-plane temporaries
            # (8192x8192: 344 MiB instead of 1923 MiB, the same objects; docs/large_images.md)
            from .blockwise import label_blockwise

            lab = label_blockwise(plane, model, block=LABEL_BLOCK, **params).astype(np.uint32, copy=False)
        else:
            lab = labels_from_classes(plane, model.foreground_class, **params).astype(np.uint32)
        lab[lab > 0] += offset
        offset = int(lab.max()) if lab.max() > 0 else offset
        labs.append(lab)
    labels = np.stack(labs).reshape(shape)
    return labels.astype(np.uint16) if offset < 2**16 else labels


def foreground_probability(probabilities: np.ndarray, model: SegmentationModel) -> np.ndarray:
    """The probability of "cell" per pixel, ``(*stack, Y, X)``: the foreground class of a
    two-class model, interior + boundary of a three-class one."""
    return foreground_of(probabilities, model.foreground_class)


def segment(image, model: SegmentationModel, **kwargs) -> Segmentation:
    """Probabilities and instance labels for ``image``; keyword arguments as for
    :func:`predict_probabilities`, plus ``threshold``, ``seed_threshold`` and ``min_size`` for
    the labels (defaults stored with the model)."""
    post = {k: kwargs.pop(k) for k in ("threshold", "seed_threshold", "min_size", "smooth", "fill_holes") if k in kwargs}
    from .postprocess import check_postprocessing

    check_postprocessing(post)  # before the work, not after it
    probs = predict_probabilities(image, model, **kwargs)
    return Segmentation(probs, labels_from_model_output(probs, model, **post))
