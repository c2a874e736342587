"""Segment a 2048x2048 real image with a built-in model: probabilities, then labels.

    python benchmarks/bench_segment_2048.py                       # the default model
    python benchmarks/bench_segment_2048.py --model runs/fluo-nuclei-w32.safetensors --repeat 3
    python benchmarks/bench_segment_2048.py --precision auto --scales 1 0.7   # two magnifications averaged
    python benchmarks/bench_segment_2048.py --precision auto --scales auto    # ... kept where the network is surer

Needs ../shared/data. The image is CTC Fluo-N2DL-HeLa frame t13 tiled to 2048x2048. Prints the
best of ``--repeat`` runs: seconds for the probabilities, for the labels (post-processing), in
total, and the number of objects.
"""
import argparse
import sys
import time

import numpy as np
import tifffile

sys.path.insert(0, "tests")
from _helpers import DATA

from napari_unet import load_model
from napari_unet.builtin import DEFAULT_MODEL
from napari_unet.predict import labels_from_model_output, predict_probabilities

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--model", default=DEFAULT_MODEL)
ap.add_argument("--repeat", type=int, default=2)
ap.add_argument("--precision", nargs="+", default=["auto", "float32"])
ap.add_argument("--scales", nargs="+", default=["auto"],
                help="magnifications averaged (predict_probabilities), or auto (the default, as Segment)")
args = ap.parse_args()
args.scales = "auto" if args.scales == ["auto"] else [float(s) for s in args.scales]

a = tifffile.imread(DATA / "ctc_fluo_n2dl_hela/images/t13.tif")
img = np.tile(a, (3, 2))[:2048, :2048]
m = load_model(args.model)
print(f"model {args.model}: width {m.config.base_channels}, {m.config.n_classes} classes, scales {args.scales}")
print("| precision | probabilities s | labels s | total s | objects |")
print("|---|---:|---:|---:|---:|")
predict_probabilities(img[:512, :512], m)  # warm-up
for prec in args.precision:
    best = None
    for _ in range(args.repeat):
        t = time.perf_counter()
        p = predict_probabilities(img, m, precision=prec, scales=args.scales)
        t1 = time.perf_counter() - t
        t = time.perf_counter()
        lab = labels_from_model_output(p, m)
        t2 = time.perf_counter() - t
        if best is None or t1 + t2 < best[0] + best[1]:
            best = (t1, t2, int(lab.max()))
    t1, t2, n = best
    print(f"| {prec} | {t1:.2f} | {t2:.2f} | {t1 + t2:.2f} | {n} |")
