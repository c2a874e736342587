"""Reading images and writing results: tif with tifffile, other formats with scikit-image.

Every write goes to a temporary file beside the target, then replaces it in one step, so a
crash never leaves a half-written file and never damages an existing one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import first_line

__all__ = [
    "ImageReadError",
    "OutputExistsError",
    "atomic_write",
    "full_resolution",
    "check_folder",
    "check_output",
    "decoded_size",
    "output_stem",
    "read_image",
    "write_tif",
    "write_labels",
    "write_probabilities",
]

TIF_SUFFIXES = (".tif", ".tiff")


class ImageReadError(ValueError):
    """An image file that cannot be read; the message names the file and the reason."""


class OutputExistsError(FileExistsError):
    """An output path that already holds a file the caller did not ask to replace."""

    def __init__(self, path):
        self.path = Path(path)
        super().__init__(f"{self.path} already exists: choose another name, or pass overwrite=True to replace it")


def output_stem(path: str | os.PathLike) -> str:
    """The file name without its image suffix, every other dot kept:
    ``2024.01.15_wellA.tif`` -> ``2024.01.15_wellA``, ``cells.ome.tif`` -> ``cells``."""
    name = Path(path).name
    low = name.lower()
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem if Path(name).suffix else name


def check_output(path: str | os.PathLike, *, overwrite: bool = False, protect=()) -> Path:
    """Check, before any work, that a result can be written to ``path``; return it as a Path.

    Refuses (one-line errors) a path that is one of the ``protect`` files (the inputs: never
    replaced, whatever ``overwrite`` says), an existing file unless ``overwrite``
    (:class:`OutputExistsError`), a folder, a folder under a file and a folder one cannot
    write to. Every writer of this module, :func:`napari_unet.modelfile.save_model`, the
    command line and the widgets' save buttons go through it.
    """
    p = Path(path).expanduser()
    if not p.name or str(p) in (".", ".."):
        raise ValueError(f"{str(path)!r} is not a file name")
    if p.is_dir():
        raise IsADirectoryError(f"{p} is a folder: give a file name")
    if p.exists() or p.is_symlink():
        rp = p.resolve()
        for q in protect:
            try:
                if rp == Path(q).expanduser().resolve() or os.path.samefile(p, q):
                    raise ValueError(f"{p} is an input file: it is never replaced; choose another output")
            except OSError:
                continue
        if not overwrite:
            raise OutputExistsError(p)
    check_folder(p.parent, f"cannot write {p}")
    return p


def check_folder(folder: str | os.PathLike, what: str) -> Path:
    """That ``folder`` exists, or can be made, and can be written to: its first existing
    ancestor must be a writable folder. Raises NotADirectoryError or PermissionError that start
    with ``what``; returns that ancestor."""
    parent = Path(folder)
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"{what}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{what}: the folder {parent} is not writable")
    return parent


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a tif (tifffile) or png/jpg/bmp (scikit-image) as a numpy array."""
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"no such file: {p}")
    if p.is_dir():
        raise ImageReadError(f"{p} is a folder, not an image")
    if not p.is_file():  # a FIFO, socket or device would block or never end
        raise ImageReadError(f"{p} is not a regular file (a pipe or device?): give an image file")
    nbytes = decoded_size(p)
    if nbytes is not None:
        from .memory import check_memory

        check_memory(nbytes, f"reading {p.name} (its decompressed size)",
                     "convert it to OME-Zarr or a tiled tif and segment it block-wise with dask "
                     "(napari_unet.dask_predict), or free memory")
    try:
        if p.suffix.lower() in TIF_SUFFIXES:
            import tifffile

            return tifffile.imread(p)
        from skimage.io import imread

        return np.asarray(imread(p))
    except MemoryError:
        raise
    except Exception as e:
        raise ImageReadError(f"cannot read {p.name} as an image: {first_line(e)}") from None


def decoded_size(path: str | os.PathLike) -> int | None:
    """Bytes that reading ``path`` will allocate, from its header only (a small compressed
    file can expand to gigabytes); None when the header cannot tell."""
    p = Path(path)
    try:
        if p.suffix.lower() in TIF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(p) as tf:
                s = tf.series[0]
                return int(np.prod(s.shape, dtype=np.float64)) * np.dtype(s.dtype).itemsize
        from PIL import Image

        with Image.open(p) as im:
            w, h = im.size
            bands = len(im.getbands())
            depth = 2 if im.mode.startswith("I;16") else (4 if im.mode in ("I", "F") else 1)
            return w * h * bands * depth * getattr(im, "n_frames", 1)
    except Exception:
        return None  # not readable as an image: read_image says why


def _default_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _publish(tmp: str, path: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``path``: a plain rename when replacing is allowed, else a
    hard link that fails if ``path`` appeared meanwhile (another process writing the same
    name), so that even a race never replaces a file."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExistsError(path) from None
    except OSError:  # a filesystem without hard links: check, then rename
        if path.exists():
            raise OutputExistsError(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write(path: str | os.PathLike, write, *, overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, flush it to disk, then
    move it to ``path`` in one step. An existing ``path`` is replaced only with ``overwrite``
    (else :class:`OutputExistsError`, checked before the work and again, atomically, at the
    end). On any error, Ctrl-C or SIGTERM (see :mod:`napari_unet.cli`) the temporary file is
    removed and an existing ``path`` is left untouched. The file gets the usual permissions
    (not mkstemp's 0600)."""
    path = check_output(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode(path))
        _publish(tmp, path, overwrite)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_tif(path: str | os.PathLike, data: np.ndarray, *, overwrite: bool = False, **kwargs) -> Path:
    """Write ``data`` to a zlib-compressed tif at ``path``, atomically; an existing file is
    replaced only with ``overwrite``."""
    import tifffile

    kwargs.setdefault("compression", "zlib")
    # a stack of planes, never an RGB image, whatever the shape
    kwargs.setdefault("photometric", "minisblack")
    return atomic_write(Path(path), lambda tmp: tifffile.imwrite(tmp, data, **kwargs), overwrite=overwrite)


def full_resolution(data, multiscale: bool = False):
    """The full-resolution (first) level of a multiscale pyramid (``multiscale``, or levels
    given as a list or tuple), else ``data`` itself."""
    return data[0] if multiscale or isinstance(data, (list, tuple)) else data


def write_labels(path: str | os.PathLike, labels: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write instance labels (non-negative integers) as a uint16/uint32 tif, atomically; an
    existing file is replaced only with ``overwrite``."""
    from .labels import integer_labels, labels_dtype

    lab = integer_labels(labels)
    mx = int(lab.max()) if lab.size else 0
    return write_tif(path, lab.astype(labels_dtype(mx), copy=False), overwrite=overwrite)


def write_probabilities(path: str | os.PathLike, probabilities: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write probabilities as a float32 tif (classes first), atomically; an existing file is
    replaced only with ``overwrite``."""
    return write_tif(path, np.asarray(probabilities, dtype=np.float32), overwrite=overwrite)
