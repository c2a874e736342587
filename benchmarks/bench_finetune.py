"""Is fine-tuning interactive on a CPU? Strokes on a 512x512 real image, the widget's defaults.

    python benchmarks/bench_finetune.py        # needs ../shared/data

A 512x512 crop of CTC Fluo-N2DL-HeLa frame t13 (crowded nuclei the built-in `fluo-nuclei`
model never saw) gets simulated strokes: the inside of 12 nuclei (labels 2..13) and a ring of
background around each (label 1), about 2 % of the pixels. The model is fine-tuned with the
napari widget's default settings (200 iterations, learning rate 3e-4, tile 252, precision auto)
and scored (AP at IoU 0.5) after 50, 100 and 200 iterations on the whole of frame t52 (not
painted) and on the unpainted crop itself. Prints a table: iterations, seconds, AP t52, AP crop.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _helpers import DATA, simulated_strokes  # noqa: E402

from napari_unet import load_model, segment  # noqa: E402
from napari_unet.metrics import average_precision  # noqa: E402
from napari_unet.train import TrainingConfig, train  # noqa: E402


def main():
    hela = DATA / "ctc_fluo_n2dl_hela"
    img = tifffile.imread(hela / "images" / "t13.tif")[100:612, 300:812]
    truth = tifffile.imread(hela / "labels" / "t13.tif")[100:612, 300:812]
    test_img = tifffile.imread(hela / "images" / "t52.tif")
    test_truth = tifffile.imread(hela / "labels" / "t52.tif")
    strokes = simulated_strokes(truth, n_cells=12, seed=0)
    model = load_model("fluo-nuclei")

    def score(m):
        return (average_precision(segment(test_img, m).labels, test_truth),
                average_precision(segment(img, m).labels, truth))

    print(f"painted: {np.count_nonzero(strokes) / strokes.size:.1%} of a {img.shape[0]}x{img.shape[1]} crop")
    print("| iterations | fine-tune seconds | AP@0.5 t52 (not painted) | AP@0.5 painted crop |")
    print("|---:|---:|---:|---:|")
    a, b = score(model)
    print(f"| 0 (built-in) | 0 | {a:.3f} | {b:.3f} |", flush=True)
    for n in (50, 100, 200):
        t = time.perf_counter()
        res = train(model, [img], [strokes], TrainingConfig(iterations=n, learning_rate=3e-4, tile=252, seed=0,
                                                             validate_every=n))
        sec = time.perf_counter() - t
        a, b = score(res.model)
        print(f"| {n} | {sec:.0f} | {a:.3f} | {b:.3f} |", flush=True)


if __name__ == "__main__":
    main()
