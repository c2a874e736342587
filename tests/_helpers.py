"""Shared test helpers: tiny models and the optional real data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_unet.model import UNetConfig
from napari_unet.modelfile import SegmentationModel

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data folder {DATA} is absent")


def tiny_model(seed: int = 0, **cfg) -> SegmentationModel:
    """A small, fast U-Net (base 4, 3 levels) with deterministic weights."""
    torch.manual_seed(seed)
    kw = dict(base_channels=4, depth=3, dropout=0.0)
    kw.update(cfg)
    return SegmentationModel.new(UNetConfig(**kw), name="tiny", description="test model")
