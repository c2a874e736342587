"""File > Save for labels (uint16/uint32 tif) and images (float32 tif, e.g. probabilities).

napari's save dialog has already asked before replacing an existing file (and ``layer.save``
names its path explicitly), so these writers replace the file they were given."""

from __future__ import annotations


def write_labels(path: str, data, meta: dict) -> list[str]:
    from napari_unet.io import full_resolution
    from napari_unet.io import write_labels as write

    return [str(write(path, full_resolution(data), overwrite=True))]


def write_probabilities(path: str, data, meta: dict) -> list[str]:
    from napari_unet.io import full_resolution
    from napari_unet.io import write_probabilities as write

    return [str(write(path, full_resolution(data), overwrite=True))]
