"""Adam (the default) against the paper's SGD with momentum 0.99, same budget of iterations.

    python benchmarks/bench_optimizer.py [--iterations 300]     # needs ../shared/data

Trains a new width-16 U-Net on 30 DSB2018 training images (the split of
scripts/builtin_models.py) with each optimiser and prints the training loss (mean of the last
50 iterations), the validation AP@0.5 on the 10 validation images, and the seconds taken.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from builtin_models import dsb, dsb_split  # noqa: E402

from napari_unet.model import UNetConfig  # noqa: E402
from napari_unet.modelfile import SegmentationModel  # noqa: E402
from napari_unet.train import TrainingConfig, train, validation_scores  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=300)
    a = ap.parse_args()
    tr, va, _ = dsb_split()
    pairs = [dsb(n) for n in tr[:30]]
    val = [dsb(n) for n in va]
    runs = [
        ("adam, lr 1e-3, cosine (default)", dict(optimizer="adam", learning_rate=1e-3)),
        ("sgd, momentum 0.99, lr 1e-2 (paper)", dict(optimizer="sgd", momentum=0.99, learning_rate=1e-2)),
        ("sgd, momentum 0.99, lr 1e-3 (paper)", dict(optimizer="sgd", momentum=0.99, learning_rate=1e-3)),
    ]
    print("| optimiser | iterations | loss (last 50) | validation AP@0.5 | seconds |")
    print("|---|---:|---:|---:|---:|")
    for label, kw in runs:
        model = SegmentationModel.new(UNetConfig(base_channels=16), class_names=["background", "nucleus"])
        t = time.perf_counter()
        res = train(model, [p[0] for p in pairs], [p[1] for p in pairs],
                    TrainingConfig(iterations=a.iterations, seed=0, validate_every=a.iterations * 10, **kw))
        sec = time.perf_counter() - t
        loss = np.mean([h.loss for h in res.history[-50:]])
        ap50 = validation_scores(res.model, val)["score"]
        print(f"| {label} | {a.iterations} | {loss:.4f} | {ap50:.3f} | {sec:.0f} |", flush=True)


if __name__ == "__main__":
    main()
