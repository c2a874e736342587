"""Segment a 2048x2048 real image with the built-in fluo-nuclei model: probabilities, then labels.

    python benchmarks/bench_segment_2048.py      # needs ../shared/data

The image is CTC Fluo-N2DL-HeLa frame t13 tiled to 2048x2048. Prints seconds for the
probabilities, for the labels (post-processing), in total, and the number of objects.
"""
import time, numpy as np, tifffile, sys
sys.path.insert(0, 'tests')
from _helpers import DATA
from napari_unet import load_model
from napari_unet.predict import predict_probabilities, labels_from_model_output
a = tifffile.imread(DATA / 'ctc_fluo_n2dl_hela/images/t13.tif')
img = np.tile(a, (3, 2))[:2048, :2048]
m = load_model('fluo-nuclei')
print('| precision | probabilities s | labels s | total s | objects |')
print('|---|---:|---:|---:|---:|')
predict_probabilities(img[:512, :512], m)
for prec in ('auto', 'float32'):
    t = time.perf_counter(); p = predict_probabilities(img, m, precision=prec); t1 = time.perf_counter() - t
    t = time.perf_counter(); lab = labels_from_model_output(p, m); t2 = time.perf_counter() - t
    print(f'| {prec} | {t1:.2f} | {t2:.2f} | {t1 + t2:.2f} | {int(lab.max())} |')
