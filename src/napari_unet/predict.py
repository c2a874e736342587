"""Segmenting images with a :class:`~napari_unet.modelfile.SegmentationModel`.

``predict_probabilities`` runs overlap-tile inference (see :mod:`napari_unet.tiling`) plane by
plane; ``segment`` adds the instance labels. Both take numpy-like arrays of any size, grey or
multi-channel, 2D or stacks, and never modify their input.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .device import autocast, bf16_is_fast, resolve_device, resolve_precision
from .errors import InputError
from .inputs import NonFiniteError, as_planes, check_finite_weights, check_image, pick_channel, warn_nonfinite
from .postprocess import PostProcessing, foreground_of, labels_from_model_output, labels_from_probabilities
from .segmentation_model import SegmentationModel
from .tileplan import TilePlan, choose_tile, peak_bytes_per_pixel, plan_tiles
from .tiling import TileGrid, predict_tiled

# InputError, the input checks and layouts (inputs), bf16_is_fast, resolve_precision,
# choose_tile, peak_bytes_per_pixel and labels_from_model_output live in errors, inputs, device,
# tileplan and postprocess; importable here too
__all__ = [
    "InputError",
    "NonFiniteError",
    "check_image",
    "check_scales",
    "AUTO_SCALES",
    "mean_entropy",
    "check_finite_weights",
    "Predictor",
    "TilePlan",
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

# --------------------------------------------------------------------------- inference


def _network_fn(model: SegmentationModel, device: torch.device, precision: str, margin: int):
    """The batch callable for the tiler: float32 numpy in, softmax probabilities out.

    It runs a copy of the network on ``device`` (the caller's network stays where it is, in its
    mode and memory format). Tensors are channels-last on CPU and CUDA: oneDNN/cuDNN
    convolutions run about 1.4x faster that way here (docs/benchmarks.md); bfloat16 runs under
    autocast."""
    net = copy.deepcopy(model.network).to(device).eval()
    channels_last = device.type in ("cpu", "cuda")
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    use_bf16 = precision == "bfloat16"
    same = model.config.padding == "same"

    def fn(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(device, use_bf16):
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
    """One model run with a ready :class:`~napari_unet.tileplan.TilePlan` on one device and
    precision: the network callable and the tiling of planes. Used by
    :func:`predict_probabilities` and, block by block, by :mod:`napari_unet.dask_predict` and
    :mod:`napari_unet.distributed` (their tasks receive the plan made once for the image).
    Refuses a plan whose batch of tiles cannot fit in the device's memory."""

    def __init__(self, model: SegmentationModel, plan: TilePlan, *, device="auto", precision="auto"):
        if not isinstance(plan, TilePlan):
            raise TypeError(f"plan must be a TilePlan (see Predictor.for_plane), not {type(plan).__name__}")
        self.model, self.plan = model, plan
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.n_classes = model.config.n_classes
        self._check_memory()
        self._fn = None

    @classmethod
    def for_plane(cls, model: SegmentationModel, plane_shape: Sequence[int], *, device="auto", tile=None,
                  batch_size=None, precision="auto", memory_budget=None) -> Predictor:
        """A predictor with the plan for ``(H, W)`` planes (:func:`~napari_unet.tileplan.plan_tiles`)."""
        dev = resolve_device(device)
        prec = resolve_precision(precision, dev)
        plan = plan_tiles(model.config, plane_shape, dev, prec, tile=tile, batch_size=batch_size,
                          memory_budget=memory_budget)
        return cls(model, plan, device=dev, precision=prec)

    @property
    def tile(self) -> tuple[int, int]:
        return self.plan.tile

    @property
    def margin(self) -> int:
        return self.plan.margin

    @property
    def align(self) -> int:
        return self.plan.align

    @property
    def batch_size(self) -> int:
        return self.plan.batch_size

    def _check_memory(self) -> None:
        need = self.plan.peak_bytes(self.model.config, self.precision)
        what = f"tiles of {self.tile[0]}x{self.tile[1]} pixels in batches of {self.batch_size}"
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if need > free:
                raise InputError(f"{what} need about {need / 2**30:.1f} GiB of GPU memory, {free / 2**30:.1f} GiB "
                                 "are free: use a smaller tile or batch")
        elif self.device.type == "cpu":
            from .memory import check_memory

            check_memory(need, what, "use a smaller tile (--tile) or batch (--batch-size)")

    def grid(self, plane_shape, region=None) -> TileGrid:
        return self.plan.grid(plane_shape, region)

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
    scales: Sequence[float] | str = "auto",
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
    scales : "auto" or sequence of float
        Average the probabilities of the plane shown at these magnifications (each resized
        back to the plane's size; 1 = as it is). ``"auto"`` (the default) also looks at the
        plane at 0.7x and keeps the average only where it makes the network surer (a lower
        mean entropy of the probabilities), else the plane as it is: on held-out DSB2018
        images +0.03 AP@0.5, on images with debris and dim nuclei about the same, 1.4x the
        time (docs/models.md). ``(1,)`` is the plane as it is (fastest); ``(1, 0.7)`` always
        averages.

    Returns
    -------
    probabilities : ndarray, float32, shape ``(n_classes, *stack_shape, Y, X)``
        Softmax over the classes (they sum to 1 at every pixel).

    Examples
    --------
    >>> import numpy as np
    >>> from napari_unet import load_model
    >>> image = np.zeros((128, 128), np.uint16)
    >>> image[25:55, 25:55] = 200
    >>> p = predict_probabilities(image, load_model("fluo-nuclei"))
    >>> p.shape, p.dtype
    ((3, 128, 128), dtype('float32'))
    >>> bool(np.allclose(p.sum(axis=0), 1, atol=1e-3))
    True
    """
    check_finite_weights(model)
    planes, lead = as_planes(check_image(image), model.in_channels, channel_axis)
    warn_nonfinite(planes)
    P, C, H, W = planes.shape
    views = DIHEDRAL if tta else DIHEDRAL[:1]
    auto = isinstance(scales, str) and scales == "auto"
    sizes = [_scaled_size((H, W), s) for s in check_scales(scales)]
    # a tile plan for each size (a plan made for the full plane can need as many tiles for a smaller one)
    preds = {size: Predictor.for_plane(model, size, device=device, tile=tile, batch_size=batch_size,
                                       precision=precision, memory_budget=memory_budget) for size in dict.fromkeys(sizes)}
    # quarter turns swap the axes, which may change the number of tiles
    total = P * sum(len(preds[(h, w)].grid((w, h) if k % 2 else (h, w))) for k, _ in views for h, w in sizes)
    K = model.config.n_classes
    from .memory import check_memory

    # the probabilities, plus the labels made from them (uint32) and the plane being normalised
    # (with other magnifications or views, also the sum at one size and the view being added)
    extra = 0.0 if not tta and sizes == [(H, W)] else 8.0 * K * H * W
    check_memory(4.0 * P * K * H * W + 4.0 * P * H * W + 4.0 * C * H * W + extra,
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
        if not tta and sizes == [(H, W)]:
            preds[(H, W)].plane(planes[p], out=out[p], progress=tick, cancel=cancel)
            continue
        stats = model.normalization.stats(planes[p])  # of the plane as it is, for every view
        for i, size in enumerate(sizes):
            plane = planes[p] if size == (H, W) else _resized(planes[p], size)
            acc = None  # the sum of the views at this size, back at the plane's size
            for k, flip in views:
                view = _dihedral(plane, k, flip)
                probs = _dihedral_inverse(preds[size].plane(view, stats, progress=tick, cancel=cancel), k, flip)
                probs = probs if size == (H, W) else _resized(probs, (H, W))
                acc = probs if acc is None else np.add(acc, probs, out=acc)
            if len(views) > 1:
                acc /= len(views)
            if i == 0:
                out[p] = acc
            elif not auto:
                out[p] += acc
            else:  # the average replaces the plane as it is only where it makes the network surer
                acc += out[p]
                acc /= 2
                if mean_entropy(acc) < mean_entropy(out[p]):
                    out[p] = acc
            del acc, probs
        if not auto and len(sizes) > 1:
            out[p] /= len(sizes)
    out = np.moveaxis(out, 1, 0)  # (K, P, H, W)
    return out.reshape((K,) + lead + (H, W))


#: the magnifications that ``scales="auto"`` tries
AUTO_SCALES = (1.0, 0.7)


def check_scales(scales) -> list[float]:
    """``scales`` as a list of magnifications, each between 0.25 and 4 (ValueError otherwise);
    ``"auto"`` gives :data:`AUTO_SCALES`."""
    if isinstance(scales, str) and scales == "auto":
        return list(AUTO_SCALES)
    try:
        out = [float(s) for s in scales]
    except (TypeError, ValueError):
        raise ValueError(f"scales must be a list of magnifications such as (1, 0.7), not {scales!r}") from None
    if not out or not all(np.isfinite(s) and 0.25 <= s <= 4 for s in out):
        raise ValueError(f"scales must be magnifications between 0.25 and 4, such as (1, 0.7), not {scales!r}")
    return out


def _scaled_size(shape, s: float) -> tuple[int, int]:
    return tuple(max(1, round(d * s)) for d in shape)


def _resized(a: np.ndarray, size) -> np.ndarray:
    """``a`` (C, H, W) resized to ``size``: bilinear, anti-aliased when it shrinks (torch's
    resampling, 20-50x faster than scikit-image's on a 2048x2048 plane)."""
    size = tuple(int(d) for d in size)
    shrink = size[0] < a.shape[-2] or size[1] < a.shape[-1]
    t = _as_tensor(a)[None]
    with torch.no_grad():
        r = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return r[0].numpy()


def mean_entropy(probabilities: np.ndarray, step: int = 2) -> float:
    """The mean entropy (nats) of the class probabilities ``(K, H, W)`` over every ``step``-th
    pixel along each axis (2: a quarter of them, the same mean to well within what the rule
    that uses it can see, in a quarter of the time): how unsure the network is, on average."""
    p = _as_tensor(np.asarray(probabilities, dtype=np.float32)[:, ::step, ::step])
    return float(torch.special.entr(p.clamp(0, 1)).sum(0).mean())


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    """A float32 tensor sharing ``a``'s memory where torch can (not with negative strides,
    which flipped views have even along axes of length 1)."""
    a = np.asarray(a, dtype=np.float32)
    return torch.from_numpy(a if all(st >= 0 for st in a.strides) else a.copy())


@dataclass
class Segmentation:
    """Result of :func:`segment`: class probabilities ``(n_classes, *stack, Y, X)`` float32 and
    instance labels ``(*stack, Y, X)`` (0 = background, ids unique over the whole stack)."""

    probabilities: np.ndarray
    labels: np.ndarray


def foreground_probability(probabilities: np.ndarray, model: SegmentationModel) -> np.ndarray:
    """The probability of "cell" per pixel, ``(*stack, Y, X)``: the foreground class of a
    two-class model, interior + boundary of a three-class one."""
    return foreground_of(probabilities, model.foreground_class)


def segment(image, model: SegmentationModel, **kwargs) -> Segmentation:
    """Probabilities and instance labels for ``image``: what Segment does.

    Parameters
    ----------
    image : array-like
        As for :func:`predict_probabilities`.
    model : SegmentationModel
        From :func:`~napari_unet.modelfile.load_model` or training.
    **kwargs
        Keyword arguments of :func:`predict_probabilities` (``device``, ``tile``, ``tta``,
        ...), plus the :class:`~napari_unet.postprocess.PostProcessing` settings
        (``threshold``, ``seed_threshold``, ``min_size``, ``smooth``, ``fill_holes``) that
        override the model's own for the labels.

    Returns
    -------
    Segmentation
        ``probabilities`` (as :func:`predict_probabilities`) and ``labels``: one integer id
        per object, 0 elsewhere, shape ``(*stack_shape, Y, X)``.

    Examples
    --------
    Two bright nuclei on a dark background:

    >>> import numpy as np
    >>> from napari_unet import load_model
    >>> yy, xx = np.mgrid[:128, :128]
    >>> nuclei = ((yy - 40) ** 2 + (xx - 40) ** 2 < 15 ** 2) | ((yy - 85) ** 2 + (xx - 90) ** 2 < 12 ** 2)
    >>> image = (10 + 200 * nuclei).astype(np.uint16)
    >>> result = segment(image, load_model("fluo-nuclei"))
    >>> int(result.labels.max()), result.labels.shape
    (2, (128, 128))
    """
    post = {k: kwargs.pop(k) for k in PostProcessing.fields() if k in kwargs}
    PostProcessing().replace(**post)  # validated before the work, not after it
    probs = predict_probabilities(image, model, **kwargs)
    return Segmentation(probs, labels_from_model_output(probs, model, **post))
