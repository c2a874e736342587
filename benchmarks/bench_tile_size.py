"""Which tile edge is fastest on this machine? (sets the CPU default in tileplan.choose_tile)

    python benchmarks/bench_tile_size.py [--base 16] [--tiles 380 572 700 892 1020]

Times one forward pass of a valid U-Net per tile size and precision and prints output
megapixels per second (higher is better). A larger tile wastes less on the 92-pixel context
margin, but works on larger feature maps.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_unet.model import UNet, UNetConfig, output_size
from napari_unet.modelfile import SegmentationModel
from napari_unet.predict import _network_fn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--tiles", type=int, nargs="+", default=[380, 572, 700, 892, 1020, 1276])
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = SegmentationModel(network=UNet(UNetConfig(base_channels=a.base, dropout=0)))
    print(f"threads: {torch.get_num_threads()}, base {a.base}")
    print("| tile in | tile out | precision | s / tile | output Mpx/s |")
    print("|---:|---:|---|---:|---:|")
    for t in a.tiles:
        out = output_size(model.config, t)
        for prec in ("float32", "bfloat16"):
            fn = _network_fn(model, torch.device("cpu"), prec, 0)
            x = np.random.default_rng(0).random((1, 1, t, t)).astype(np.float32)
            fn(x)
            best = min(_timed(fn, x) for _ in range(a.repeats))
            print(f"| {t} | {out} | {prec} | {best:.2f} | {out * out / 1e6 / best:.3f} |", flush=True)


def _timed(fn, x):
    t = time.perf_counter()
    fn(x)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
