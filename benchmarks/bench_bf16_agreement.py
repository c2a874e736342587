"""Does bfloat16 inference agree with float32 on real images? (decides precision="auto")

    python benchmarks/bench_bf16_agreement.py            # needs ../shared/data

For each built-in model and its held-out images (the splits of scripts/builtin_models.py),
segment in float32 and in bfloat16 (autocast, channels-last) and print: the largest and mean
absolute difference of the foreground probability, the fraction of pixels whose class differs,
the agreement of the two label images (average precision at IoU 0.5 of bf16 labels against
fp32 labels), and each precision's score against the ground truth.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from builtin_models import data  # noqa: E402

from napari_unet import labels as L  # noqa: E402
from napari_unet import metrics as M  # noqa: E402
from napari_unet.modelfile import load_model  # noqa: E402
from napari_unet.predict import labels_from_model_output, predict_probabilities  # noqa: E402


def main():
    print("| model | images | max abs diff | mean abs diff | pixels with other class | labels agreement (AP50 bf16 vs fp32) | score fp32 | score bf16 | s fp32 | s bf16 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, key in (("em-membranes", "rand_error"), ("fluo-nuclei", "ap50")):
        model = load_model(name)
        _, _, tests = data(name)
        for label, pairs in tests.items():
            mx, mean, flip, agree, s32, s16, t32, t16 = [], [], [], [], [], [], 0.0, 0.0
            for img, lab in pairs:
                t = time.perf_counter()
                p32 = predict_probabilities(img, model, precision="float32")
                t32 += time.perf_counter() - t
                t = time.perf_counter()
                p16 = predict_probabilities(img, model, precision="bfloat16")
                t16 += time.perf_counter() - t
                fg32, fg16 = p32[model.foreground_class], p16[model.foreground_class]
                d = np.abs(fg32 - fg16)
                mx.append(d.max())
                mean.append(d.mean())
                flip.append(np.mean((fg32 > 0.5) != (fg16 > 0.5)))
                l32 = labels_from_model_output(p32, model)
                l16 = labels_from_model_output(p16, model)
                agree.append(M.average_precision(l16, l32))
                truth = L.to_instances(lab)
                s32.append(M.evaluate(l32, truth)[key])
                s16.append(M.evaluate(l16, truth)[key])
            print(f"| {name} | {label} | {max(mx):.4f} | {np.mean(mean):.5f} | {np.mean(flip):.5f} | {np.mean(agree):.4f} | "
                  f"{key} {np.mean(s32):.4f} | {key} {np.mean(s16):.4f} | {t32:.1f} | {t16:.1f} |", flush=True)


if __name__ == "__main__":
    main()
