"""Reading images and writing results: tif with tifffile, other formats with scikit-image.

Every write goes to a temporary file beside the target, then replaces it in one step, so a
crash never leaves a half-written file and never damages an existing one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["ImageReadError", "atomic_write", "read_image", "write_tif", "write_labels", "write_probabilities", "labels_dtype"]

TIF_SUFFIXES = (".tif", ".tiff")


class ImageReadError(ValueError):
    """An image file that cannot be read; the message names the file and the reason."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a tif (tifffile) or png/jpg/bmp (scikit-image) as a numpy array."""
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"no such file: {p}")
    if p.is_dir():
        raise ImageReadError(f"{p} is a folder, not an image")
    try:
        if p.suffix.lower() in TIF_SUFFIXES:
            import tifffile

            return tifffile.imread(p)
        from skimage.io import imread

        return np.asarray(imread(p))
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageReadError(f"cannot read {p.name} as an image: {first}") from None


def _default_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, flush it to disk, then
    rename it over ``path`` in one step. On any error the temporary file is removed and an
    existing ``path`` is left untouched. The file gets the usual permissions (not mkstemp's 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode(path))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_tif(path: str | os.PathLike, data: np.ndarray, **kwargs) -> Path:
    """Write ``data`` to a zlib-compressed tif at ``path``, atomically."""
    import tifffile

    kwargs.setdefault("compression", "zlib")
    # a stack of planes, never an RGB image, whatever the shape
    kwargs.setdefault("photometric", "minisblack")
    return atomic_write(Path(path), lambda tmp: tifffile.imwrite(tmp, data, **kwargs))


def labels_dtype(max_label: int) -> np.dtype:
    """uint16 when the labels fit, else uint32 (uint64 beyond that)."""
    if max_label < 2**16:
        return np.dtype(np.uint16)
    if max_label < 2**32:
        return np.dtype(np.uint32)
    return np.dtype(np.uint64)


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write instance labels (non-negative integers) as a uint16/uint32 tif, atomically."""
    lab = np.asarray(labels)
    if not np.issubdtype(lab.dtype, np.integer) and lab.dtype != bool:
        if not np.all(np.mod(lab, 1) == 0):
            raise ValueError("labels must be whole numbers")
    mx = int(lab.max()) if lab.size else 0
    if lab.size and int(lab.min()) < 0:
        raise ValueError("labels must not be negative")
    return write_tif(path, lab.astype(labels_dtype(mx), copy=False))


def write_probabilities(path: str | os.PathLike, probabilities: np.ndarray) -> Path:
    """Write probabilities as a float32 tif (classes first), atomically."""
    return write_tif(path, np.asarray(probabilities, dtype=np.float32))
