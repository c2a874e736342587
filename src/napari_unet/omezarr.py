"""Large images in and out: OME-Zarr (and plain zarr) reading and writing, lazy tif reading.

Inputs are opened lazily, by path, in whichever process reads them (a dask worker opens its
own handle): an OME-Zarr image's highest-resolution level (NGFF 0.4 or 0.5 metadata), a plain
2D zarr array, or a tif (memory-mapped when it is stored uncompressed and contiguous, else read
tile by tile through tifffile's zarr store). Only 2D images, grey or with a channel axis, are
segmented block-wise; stacks must be split into planes first.

Outputs are OME-Zarr 0.4 images (zarr format 2, readable by napari, napari-ome-zarr, Fiji/MoBIE
and ome-zarr-py): labels as an ``image-label`` with a 2x nearest-neighbour pyramid, and class
probabilities as a ``(c, y, x)`` float32 image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import first_line

__all__ = ["ZarrInputError", "ImageSource", "open_source", "create_labels_zarr", "create_probabilities_zarr",
           "open_labels_pyramid", "pyramid_shapes", "NGFF_VERSION"]

NGFF_VERSION = "0.4"
TIF_SUFFIXES = (".tif", ".tiff")


class ZarrInputError(ValueError):
    """A large-image input that cannot be segmented as given; the message says what to do."""


def _is_zarr(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or (path.is_dir() and any(
        (path / m).exists() for m in (".zgroup", ".zarray", "zarr.json")))


def _multiscales(attrs: dict):
    if "ome" in attrs and isinstance(attrs["ome"], dict):  # NGFF 0.5 (zarr v3)
        attrs = attrs["ome"]
    ms = attrs.get("multiscales")
    return ms[0] if isinstance(ms, list) and ms else None


def _axis_names(axes) -> list[str]:
    return [(a["name"] if isinstance(a, dict) else str(a)).lower() for a in axes]


@dataclass(frozen=True)
class ImageSource:
    """Where a large 2D image lives and how its axes map to ``(C, Y, X)``; picklable, so that
    every worker opens its own handle with :meth:`open`.

    ``array`` is set instead of ``path`` for an in-memory or dask array (in-process use only).
    """

    path: str | None
    kind: str  # "zarr", "tif-memmap", "tif-zarr" or "array"
    dataset: str = ""  # path of the array inside a zarr group
    channel_axis: int | None = None  # axis of the stored array that holds channels
    shape: tuple = ()  # stored shape
    dtype: str = "float32"
    scale: tuple = (1.0, 1.0)  # pixel size (y, x) from the OME-Zarr metadata, else 1
    name: str = ""
    array: object = field(default=None, compare=False, repr=False)

    @property
    def plane_shape(self) -> tuple[int, int]:
        ax = [i for i in range(len(self.shape)) if i != self._caxis]
        return int(self.shape[ax[0]]), int(self.shape[ax[1]])

    @property
    def _caxis(self):
        return None if self.channel_axis is None else self.channel_axis % len(self.shape)

    @property
    def channels(self) -> int:
        return 1 if self._caxis is None else int(self.shape[self._caxis])

    def open(self):
        """The stored array (zarr array, memmap or the given array), opened read-only."""
        if self.array is not None:
            return self.array
        return _open_cached(self.path, self.kind, self.dataset)

    def read(self, y0: int, y1: int, x0: int, x1: int, ystep: int = 1, xstep: int = 1) -> np.ndarray:
        """Rows ``y0:y1:ystep`` and columns ``x0:x1:xstep`` as a ``(C, h, w)`` numpy array."""
        a = self.open()
        ca = self._caxis
        key = [slice(None)] * len(self.shape)
        yx = [i for i in range(len(self.shape)) if i != ca]
        key[yx[0]] = slice(y0, y1, ystep)
        key[yx[1]] = slice(x0, x1, xstep)
        block = np.asarray(a[tuple(key)])
        if ca is None:
            return block[None]
        return np.moveaxis(block, ca, 0)


_OPEN: dict = {}


def _open_cached(path, kind, dataset):
    key = (path, kind, dataset, os.getpid())
    if key not in _OPEN:
        if kind == "zarr":
            import zarr

            root = zarr.open(path, mode="r")
            _OPEN[key] = root[dataset] if dataset else root
        elif kind == "tif-memmap":
            import tifffile

            _OPEN[key] = tifffile.memmap(path, mode="r")
        elif kind == "tif-zarr":
            import tifffile
            import zarr

            _OPEN[key] = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
        else:  # pragma: no cover - constructed only by open_source
            raise ValueError(f"unknown source kind {kind!r}")
    return _OPEN[key]


def _channel_axis_for(shape: Sequence[int], in_channels: int, what: str) -> int | None:
    """The channel axis of a 2D or 3D array without axis names (rules of ``as_planes``)."""
    if len(shape) == 2:
        return None
    if len(shape) == 3:
        if shape[-1] in (3, 4) and shape[0] > 4:
            return 2
        if in_channels > 1 and shape[0] == in_channels:
            return 0
        if in_channels > 1 and shape[-1] == in_channels:
            return 2
    raise ZarrInputError(
        f"{what} has shape {tuple(shape)}: block-wise segmentation takes one 2D image (Y, X), "
        f"optionally with a channel axis; split stacks into planes first"
    )


def open_source(path, in_channels: int = 1) -> ImageSource:
    """Open a ``.zarr`` / OME-Zarr or tif image lazily as an :class:`ImageSource`.

    An OME-Zarr image gives its first (highest-resolution) level; its axes must be ``y`` and
    ``x``, optionally ``c``, and any ``t``/``z`` axis must have one entry. A zarr without
    OME-Zarr metadata must hold one 2D array (or a 2D array named ``0``).
    """
    p = Path(path)
    if not p.exists():
        raise ZarrInputError(f"no such file or folder: {p}")
    name = p.name[: -len(p.suffix)] if p.suffix.lower() in (".zarr",) + TIF_SUFFIXES else p.name
    if _is_zarr(p):
        return _open_zarr(p, name, in_channels)
    if p.suffix.lower() in TIF_SUFFIXES:
        return _open_tif(p, name, in_channels)
    raise ZarrInputError(f"{p.name}: block-wise segmentation reads .zarr folders and tif files; segment other "
                         f"formats without --workers/--scheduler")


def _open_zarr(p: Path, name: str, in_channels: int) -> ImageSource:
    import zarr

    try:
        root = zarr.open(str(p), mode="r")
    except Exception as e:
        raise ZarrInputError(f"cannot open {p.name} as zarr: {first_line(e)}") from None
    if isinstance(root, zarr.Array):
        ca = _channel_axis_for(root.shape, in_channels, f"the zarr array {p.name} (no OME-Zarr axes)")
        return ImageSource(str(p), "zarr", "", ca, tuple(root.shape), str(root.dtype), name=name)
    ms = _multiscales(dict(root.attrs))
    if ms is None:
        arrays = sorted(root.array_keys())
        if "0" in arrays:
            arr, ds = root["0"], "0"
        elif len(arrays) == 1:
            arr, ds = root[arrays[0]], arrays[0]
        else:
            raise ZarrInputError(
                f"{p.name} is a zarr group without OME-Zarr 'multiscales' metadata and with "
                f"{len(arrays)} arrays: give the path of the array to segment (e.g. {p.name}/0)"
            )
        ca = _channel_axis_for(arr.shape, in_channels, f"{p.name}/{ds} (no OME-Zarr axes)")
        return ImageSource(str(p), "zarr", ds, ca, tuple(arr.shape), str(arr.dtype), name=name)
    try:
        ds = ms["datasets"][0]
        arr = root[ds["path"]]
    except (KeyError, IndexError, TypeError):
        raise ZarrInputError(f"{p.name}: OME-Zarr metadata names no readable first dataset") from None
    axes = _axis_names(ms.get("axes", []))
    if not axes:
        axes = ["t", "c", "z", "y", "x"][-arr.ndim:]  # NGFF 0.1/0.2 implied axes
    if len(axes) != arr.ndim:
        raise ZarrInputError(f"{p.name}: {len(axes)} axes in the metadata but the array has {arr.ndim} dimensions")
    if "y" not in axes or "x" not in axes:
        raise ZarrInputError(f"{p.name} has axes {''.join(axes)}: an image needs y and x axes")
    extra = [a for a in axes if a not in ("y", "x", "c")]
    for a in extra:
        if arr.shape[axes.index(a)] != 1:
            raise ZarrInputError(
                f"{p.name} has axes {''.join(axes)} with {arr.shape[axes.index(a)]} entries along {a}: "
                f"block-wise segmentation takes one 2D plane; write each plane to its own zarr"
            )
    if extra:  # drop singleton t/z axes: read through a view
        return _squeezed_source(p, name, arr, ds["path"], axes, in_channels, ds)
    ca = axes.index("c") if "c" in axes else None
    if axes.index("y") > axes.index("x"):
        raise ZarrInputError(f"{p.name} has axes {''.join(axes)}: x before y is not supported")
    return ImageSource(str(p), "zarr", ds["path"], ca, tuple(arr.shape), str(arr.dtype), _scale(ds, axes), name)


def _scale(ds: dict, axes: list[str]) -> tuple[float, float]:
    for t in ds.get("coordinateTransformations", []) or []:
        if t.get("type") == "scale" and len(t.get("scale", [])) == len(axes):
            return float(t["scale"][axes.index("y")]), float(t["scale"][axes.index("x")])
    return 1.0, 1.0


def _squeezed_source(p, name, arr, dspath, axes, in_channels, ds):
    # singleton t/z axes: store the path to the array and read it through an index
    keep = [i for i, a in enumerate(axes) if a in ("y", "x", "c")]
    shape = tuple(arr.shape[i] for i in keep)
    kept_axes = [axes[i] for i in keep]
    ca = kept_axes.index("c") if "c" in kept_axes else None
    return _SqueezedSource(str(p), "zarr", dspath, ca, shape, str(arr.dtype), _scale(ds, axes), name,
                           full_ndim=arr.ndim, keep=tuple(keep))


@dataclass(frozen=True)
class _SqueezedSource(ImageSource):
    full_ndim: int = 0
    keep: tuple = ()

    def read(self, y0, y1, x0, x1, ystep=1, xstep=1):
        a = self.open()
        key = [0] * self.full_ndim
        for i in self.keep:
            key[i] = slice(None)
        sub = _Indexed(a, tuple(key))
        return ImageSource.read(_replace_array(self, sub), y0, y1, x0, x1, ystep, xstep)


class _Indexed:
    def __init__(self, a, key):
        self.a, self.key = a, key

    def __getitem__(self, k):
        full = list(self.key)
        it = iter(k)
        for i, s in enumerate(full):
            if isinstance(s, slice):
                full[i] = next(it)
        return self.a[tuple(full)]


def _replace_array(src: ImageSource, arr) -> ImageSource:
    return ImageSource(None, "array", "", src.channel_axis, src.shape, src.dtype, src.scale, src.name, array=arr)


def _open_tif(p: Path, name: str, in_channels: int) -> ImageSource:
    import tifffile

    try:
        with tifffile.TiffFile(p) as tf:
            series = tf.series[0]
            shape, dtype = tuple(series.shape), str(series.dtype)
            contiguous = series.dataoffset is not None
    except Exception as e:
        raise ZarrInputError(f"cannot read {p.name} as a tif: {first_line(e)}") from None
    ca = _channel_axis_for(shape, in_channels, p.name)
    kind = "tif-memmap" if contiguous else "tif-zarr"
    return ImageSource(str(p), kind, "", ca, shape, dtype, name=name)


def array_source(array, channel_axis: int | None = None, name: str = "image") -> ImageSource:
    """An :class:`ImageSource` for an array already open in this process (numpy, dask, zarr)."""
    return ImageSource(None, "array", "", channel_axis, tuple(array.shape), str(np.dtype(array.dtype)), name=name,
                       array=array)


# --------------------------------------------------------------------------- writing


def pyramid_shapes(shape: Sequence[int], min_edge: int = 256) -> list[tuple[int, int]]:
    """Level shapes of a 2x pyramid, from full size down to the first level whose longer
    edge is at most ``min_edge``."""
    h, w = int(shape[0]), int(shape[1])
    out = [(h, w)]
    while max(h, w) > min_edge:
        h, w = (h + 1) // 2, (w + 1) // 2
        out.append((h, w))
    return out


def _multiscales_attrs(name, axes, n_levels, scale, extra_dims=0):
    datasets = []
    for k in range(n_levels):
        f = 2.0 ** k
        datasets.append({
            "path": str(k),
            "coordinateTransformations": [{"type": "scale", "scale": [1.0] * extra_dims + [scale[0] * f, scale[1] * f]}],
        })
    ms = {"version": NGFF_VERSION, "name": name, "axes": axes, "datasets": datasets}
    if n_levels > 1:
        ms.update(type="nearest", metadata={"method": "every second pixel (numpy stride 2)"})
    return {"multiscales": [ms]}


_YX = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]


def create_labels_zarr(path, shape, *, chunk: int = 1024, dtype="uint32", scale=(1.0, 1.0), name="labels",
                       source_image: str | None = None):
    """Create (or open, when it exists with the same layout) an OME-Zarr labels image with a
    2x pyramid; returns the zarr group. Levels are filled by :mod:`napari_unet.distributed`."""
    import zarr

    path = Path(path)
    levels = pyramid_shapes(shape)
    if path.exists():
        g = zarr.open_group(str(path), mode="r+")
        if "0" in g and tuple(g["0"].shape) == tuple(shape) and str(g["0"].dtype) == str(np.dtype(dtype)):
            return g
        raise ZarrInputError(f"{path} exists with another layout; remove it and run again")
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    for k, s in enumerate(levels):
        g.create_array(str(k), shape=s, chunks=(min(chunk, s[0]), min(chunk, s[1])), dtype=dtype, fill_value=0)
    attrs = _multiscales_attrs(name, _YX, len(levels), scale)
    attrs["image-label"] = {"version": NGFF_VERSION, **({"source": {"image": source_image}} if source_image else {})}
    g.attrs.update(attrs)
    return g


def create_probabilities_zarr(path, n_classes: int, shape, chunks, *, class_names=None, scale=(1.0, 1.0), name="probabilities"):
    """Create (or open, when it exists with the same layout) an OME-Zarr ``(c, y, x)`` float32
    image for class probabilities, chunked ``(1, *chunks)``."""
    import zarr

    path = Path(path)
    full = (int(n_classes),) + tuple(int(s) for s in shape)
    if path.exists():
        g = zarr.open_group(str(path), mode="r+")
        if "0" in g and tuple(g["0"].shape) == full and tuple(g["0"].chunks) == (1,) + tuple(chunks):
            return g
        raise ZarrInputError(f"{path} exists with another layout; remove it and run again")
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    g.create_array("0", shape=full, chunks=(1,) + tuple(int(c) for c in chunks), dtype="float32", fill_value=0)
    axes = [{"name": "c", "type": "channel"}] + _YX
    attrs = _multiscales_attrs(name, axes, 1, scale, extra_dims=1)
    attrs["omero"] = {"channels": [{"label": str(c), "active": True} for c in (class_names or range(n_classes))]}
    g.attrs.update(attrs)
    return g


def open_labels_pyramid(path) -> list:
    """The levels of a labels OME-Zarr written here as lazy dask arrays (full size first), for
    ``viewer.add_labels(levels, multiscale=True)``."""
    import dask.array as da
    import zarr

    g = zarr.open_group(str(path), mode="r")
    ms = _multiscales(dict(g.attrs))
    paths = [d["path"] for d in ms["datasets"]] if ms else sorted(g.array_keys(), key=int)
    return [da.from_zarr(g[p]) for p in paths]
