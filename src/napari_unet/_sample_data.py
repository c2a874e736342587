"""Sample images for File > Open Sample > napari U-Net (sources and licences in
``napari_unet/samples/README.md``)."""

from __future__ import annotations


def _sample(name: str):
    from napari_unet.samples import SAMPLES, sample_image

    info = SAMPLES[name]
    meta = {"source": info["source"], "suggested_model": info.get("model", "")}
    return [(sample_image(name), {"name": name, "metadata": {"napari_unet_sample": meta}}, "image")]


def nuclei():
    """Fluorescence nuclei (Data Science Bowl 2018, CC0); try the ``fluo-nuclei`` model."""
    return _sample("nuclei")


def em():
    """Serial-section EM of neuron membranes (ISBI 2012); try the ``em-membranes`` model."""
    return _sample("em")
