"""The central object: a U-Net with everything needed to apply it (normalisation, classes,
post-processing, provenance). Saved and loaded by :mod:`napari_unet.modelfile`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import UNet, UNetConfig
from .normalize import Normalization
from .postprocess import PostProcessing

__all__ = ["SegmentationModel"]


@dataclass
class SegmentationModel:
    """A U-Net with everything needed to apply it: normalisation, classes, post-processing.

    ``postprocessing`` (a :class:`~napari_unet.postprocess.PostProcessing`; a dict, as model
    headers hold it, is turned into one, also on assignment) says how probabilities become
    instance labels. ``provenance`` says where the weights came from.
    """

    network: UNet
    normalization: Normalization = field(default_factory=Normalization)
    class_names: list[str] = field(default_factory=lambda: ["background", "cell"])
    foreground_class: int = 1
    name: str = "unnamed"
    description: str = ""
    postprocessing: PostProcessing = field(default_factory=PostProcessing)
    provenance: dict = field(default_factory=dict)

    def __setattr__(self, name, value):
        if name == "postprocessing":
            value = PostProcessing.coerce(value)
        object.__setattr__(self, name, value)

    def __post_init__(self):
        if len(self.class_names) != self.config.n_classes:
            raise ValueError(
                f"{len(self.class_names)} class names for a network with {self.config.n_classes} classes"
            )
        if not 0 <= self.foreground_class < self.config.n_classes:
            raise ValueError("foreground_class must index one of the classes")

    @property
    def config(self) -> UNetConfig:
        return self.network.config

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @classmethod
    def new(cls, config: UNetConfig | None = None, **kwargs) -> SegmentationModel:
        """A freshly initialised model (He initialisation); refused before allocating when its
        weights (with gradients and optimiser state, four copies) cannot fit in memory."""
        import math

        from .memory import check_memory
        from .modelheader import expected_tensor_shapes

        config = config or UNetConfig()
        n = sum(math.prod(s) for s in expected_tensor_shapes(config.to_dict()).values())
        check_memory(16.0 * n, f"a U-Net of depth {config.depth} and width {config.base_channels} ({n:,} weights)",
                     "choose a smaller depth or width (--depth, --base-channels)")
        return cls(network=UNet(config), **kwargs)

    def header(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "architecture": self.config.to_dict(),
            "normalization": self.normalization.to_dict(),
            "class_names": list(self.class_names),
            "foreground_class": self.foreground_class,
            "postprocessing": self.postprocessing.to_dict(),
            "provenance": self.provenance,
        }

    def summary(self) -> str:
        c = self.config
        return (
            f"{self.name}: {self.description or 'no description'}\n"
            f"classes: {', '.join(self.class_names)}; input channels: {c.in_channels}; "
            f"U-Net depth {c.depth}, base {c.base_channels}, {c.padding} padding"
        )
