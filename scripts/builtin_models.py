"""Train, tune and score the built-in models on ../shared/data (see docs/models.md).

    python scripts/builtin_models.py train em-membranes   # writes runs/em-membranes.safetensors
    python scripts/builtin_models.py tune em-membranes    # post-processing chosen on validation images
    python scripts/builtin_models.py score em-membranes   # scores on held-out images -> docs table
    python scripts/builtin_models.py install em-membranes # float16 copy into src/napari_unet/models/

Splits are fixed here (seeded), so that every score in docs/models.md is on images the model
neither trained nor was tuned on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from skimage.io import imread

from napari_unet import labels as L
from napari_unet.model import UNetConfig
from napari_unet.modelfile import SegmentationModel, load_model, save_model
from napari_unet.train import TrainingConfig, train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RUNS = ROOT / "runs"


def isbi_split():
    ids = list(range(25))
    return ids[:20], ids[20:22], ids[22:]  # train, validation (tuning), test


def isbi(i):
    img = imread(DATA / "isbi2012" / "images" / f"slice{i:02d}.png")
    lab = L.from_membranes(imread(DATA / "isbi2012" / "labels" / f"slice{i:02d}.png"))
    return img, lab


def dsb_split():
    names = sorted(p.stem for p in (DATA / "dsb2018" / "images").glob("*.png"))
    rng = np.random.default_rng(2018)
    order = rng.permutation(len(names))
    names = [names[i] for i in order]
    return names[:90], names[90:100], names[100:]


def dsb(name):
    img = imread(DATA / "dsb2018" / "images" / f"{name}.png")
    if img.ndim == 3:
        img = img[..., :3].mean(-1)
    lab = L.from_instances(tifffile.imread(DATA / "dsb2018" / "labels" / f"{name}.tif"))
    return img, lab


def ctc(folder, name):
    img = tifffile.imread(DATA / folder / "images" / f"{name}.tif")
    lab = L.from_instances(tifffile.imread(DATA / folder / "labels" / f"{name}.tif"))
    return img, lab


SPECS = {
    "em-membranes": dict(
        description="Neuron membranes in serial-section electron microscopy (ISBI 2012); labels are the cell interiors",
        class_names=["membrane", "cell interior"],
        iterations=2000,
    ),
    "fluo-nuclei": dict(
        description="Nuclei in fluorescence microscopy (DSB2018, CTC GOWT1); one label per nucleus, touching ones split",
        class_names=["background", "nucleus"],
        iterations=2000,
    ),
}


def data(name):
    if name == "em-membranes":
        tr, va, te = isbi_split()
        return [isbi(i) for i in tr], [isbi(i) for i in va], {"isbi2012 slices 22-24": [isbi(i) for i in te]}
    tr, va, te = dsb_split()
    train_pairs = [dsb(n) for n in tr] + [ctc("ctc_fluo_n2dh_gowt1", n) for n in ("t01", "t21", "t31")]
    return (
        train_pairs,
        [dsb(n) for n in va],
        {
            "dsb2018 (20 held-out images)": [dsb(n) for n in te],
            "ctc Fluo-N2DL-HeLa t13, t52": [ctc("ctc_fluo_n2dl_hela", n) for n in ("t13", "t52")],
        },
    )


def cmd_train(name, iterations=None, threads=None, precision="bfloat16", base_channels=16, start=None, lr=1e-3):
    if threads:
        torch.set_num_threads(threads)
    spec = SPECS[name]
    tr, va, _ = data(name)
    if start:  # continue from an earlier run (a file), e.g. with a lower learning rate
        model = load_model(start)
    else:
        model = SegmentationModel.new(
            UNetConfig(base_channels=base_channels, depth=5, padding="valid", dropout=0.5),
            class_names=spec["class_names"], name=name, description=spec["description"],
        )
    cfg = TrainingConfig(iterations=iterations or spec["iterations"], precision=precision, validate_every=250, seed=0,
                         learning_rate=lr)
    RUNS.mkdir(exist_ok=True)
    out = RUNS / f"{name}.safetensors"
    t0 = time.time()

    def cb(p):
        if p.iteration % 50 == 0 or p.validation_score is not None:
            print(f"{name} it {p.iteration} loss {p.loss:.4f} val {p.validation_score} best {p.best_score} "
                  f"{time.time() - t0:.0f}s", flush=True)

    res = train(model, [p[0] for p in tr], [p[1] for p in tr], cfg, validation=va, callback=cb, checkpoint=out)
    res.model.provenance.update({"training_data": name_data(name), "training_seconds": round(res.seconds),
                                 "command": f"python scripts/builtin_models.py train {name} --iterations {cfg.iterations}"
                                            + (f" --start {start} --lr {lr}" if start else f" --base-channels {base_channels}"),
                                 "threads": torch.get_num_threads()})
    save_model(res.model, out)
    print(f"{name}: {res.seconds:.0f} s, best iteration {res.best_iteration}, score {res.best_score}")


def name_data(name):
    if name == "em-membranes":
        return "ISBI 2012 training volume slices 0-19 (validation 20-21; test 22-24)"
    return "DSB2018 stage1 train (fixed release), 90 grey fluorescence images, + CTC Fluo-N2DH-GOWT1 t01,t21,t31"


def _grid(name):
    if name == "em-membranes":
        return [dict(threshold=t, seed_threshold=0, min_size=m, smooth=sm, fill_holes=False)
                for t in (0.5, 0.6, 0.7, 0.8, 0.9) for m in (0, 20, 50) for sm in (0, 1)]
    return [dict(threshold=t, seed_threshold=s, min_size=m, smooth=sm, fill_holes=True) for t in (0.4, 0.5, 0.6)
            for s in (0, 0.8, 0.9) for m in (0, 15, 40) for sm in (0, 1, 2)]


def _score(name, model, pairs, post, precision="float32", probs_cache=None):
    from napari_unet import metrics as M
    from napari_unet.predict import labels_from_model_output, predict_probabilities

    rows = []
    for k, (img, lab) in enumerate(pairs):
        if probs_cache is not None and k in probs_cache:
            probs = probs_cache[k]
        else:
            probs = predict_probabilities(img, model, precision=precision)
            if probs_cache is not None:
                probs_cache[k] = probs
        pred = labels_from_model_output(probs, model, **post)
        truth = L.to_instances(lab)
        r = M.evaluate(pred, truth)
        # the pixel error of the network's own decision (argmax, threshold 0.5), as in the
        # ISBI protocol; the labels' pixel error depends on the post-processing threshold
        r["pixel_error_argmax"] = M.pixel_error(probs[model.foreground_class] > 0.5, truth > 0)
        rows.append(r)
    keys = rows[0].keys()
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def cmd_tune(name):
    model = load_model(RUNS / f"{name}.safetensors")
    _, va, _ = data(name)
    cache = {}
    key = "rand_error" if name == "em-membranes" else "ap50"
    best = None
    for post in _grid(name):
        s = _score(name, model, va, post, probs_cache=cache)
        val = -s[key] if key == "rand_error" else s[key]
        if best is None or val > best[0]:
            best = (val, post, s)
    print("best post-processing on validation:", best[1], best[2])
    model.postprocessing = best[1]
    save_model(model, RUNS / f"{name}.safetensors")


def cmd_score(name, precision="float32"):
    model = load_model(RUNS / f"{name}.safetensors")
    _, _, tests = data(name)
    res = {}
    for label, pairs in tests.items():
        t = time.time()
        res[label] = _score(name, model, pairs, {}, precision=precision)
        res[label]["seconds"] = round(time.time() - t, 1)
    print(json.dumps({"model": name, "precision": precision, "scores": res}, indent=1))
    model.provenance["scores"] = {k: {m: round(v, 4) for m, v in d.items()} for k, d in res.items()}
    if precision == "float32":
        save_model(model, RUNS / f"{name}.safetensors")


def cmd_install(name):
    model = load_model(RUNS / f"{name}.safetensors")
    dst = ROOT / "src" / "napari_unet" / "models" / f"{name}.safetensors"
    save_model(model, dst, dtype=torch.float16)
    print("wrote", dst, dst.stat().st_size // 1024, "KiB")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["train", "tune", "score", "install"])
    ap.add_argument("name", choices=sorted(SPECS))
    ap.add_argument("--iterations", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--precision", default=None)
    ap.add_argument("--base-channels", type=int, default=16)
    ap.add_argument("--start", help="continue training this model file")
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args(argv)
    if a.step == "train":
        cmd_train(a.name, a.iterations, a.threads, a.precision or "bfloat16", a.base_channels, a.start, a.lr)
    elif a.step == "tune":
        cmd_tune(a.name)
    elif a.step == "score":
        cmd_score(a.name, a.precision or "float32")
    else:
        cmd_install(a.name)


if __name__ == "__main__":
    sys.exit(main())
