"""Train, tune and score the built-in models on ../shared/data (see docs/models.md).

    python scripts/builtin_models.py train em-membranes   # writes runs/em-membranes.safetensors
    python scripts/builtin_models.py tune em-membranes    # post-processing chosen on validation images
    python scripts/builtin_models.py score em-membranes   # scores on held-out images -> docs table
    python scripts/builtin_models.py install em-membranes # float16 copy into src/napari_unet/models/
    python scripts/builtin_models.py soup fluo-nuclei --of=-a --of=-b --tag=-ab   # weights of two runs averaged
    python scripts/builtin_models.py all fluo-nuclei --classes 3 --base-channels 32 --device cuda \
        --workers 3 --batch-size 8 --minutes 6 --tag w32   # train, tune and score in one go (GPU)

``--runs DIR`` (or $NAPARI_UNET_RUNS) puts the run files elsewhere; ``--data DIR`` reads the
data from elsewhere than ../shared/data. The same script runs unchanged on a CUDA GPU
(bfloat16 autocast) and on the CPU.

Splits are fixed here (seeded), so that every score in docs/models.md is on images the model
neither trained nor was tuned on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile
import torch
from skimage.io import imread

from napari_unet import labels as L
from napari_unet.model import UNet, UNetConfig, narrowed, with_compressed_view
from napari_unet.modelfile import SegmentationModel, load_model, save_model
from napari_unet.train import TrainingConfig, train
from napari_unet.training.mixing import average_weights

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RUNS = Path(os.environ.get("NAPARI_UNET_RUNS", ROOT / "runs"))


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
        description="Nuclei in fluorescence microscopy (DSB2018, CTC GOWT1 and HeLa); one label per nucleus, "
                    "touching ones split",
        class_names=["background", "nucleus"],
        iterations=2000,
    ),
}
#: three-class networks: background, cell interior, cell boundary
CLASS_NAMES_3 = {"fluo-nuclei": ["background", "nucleus", "nucleus boundary"],
                 "em-membranes": ["membrane", "cell interior", "cell boundary"]}


def data(name):
    if name == "em-membranes":
        tr, va, te = isbi_split()
        return [isbi(i) for i in tr], [isbi(i) for i in va], {"isbi2012 slices 22-24": [isbi(i) for i in te]}
    tr, va, te = dsb_split()
    train_pairs = ([dsb(n) for n in tr] + [ctc("ctc_fluo_n2dh_gowt1", n) for n in ("t01", "t21", "t31")]
                   + [ctc("ctc_fluo_n2dl_hela", "t13")])
    val = [dsb(n) for n in va]
    # validation also on the same images made hard (dim nuclei, debris), with seeds of their own,
    # so that the model and its post-processing are not chosen for clean images alone
    val += [_corrupt(p, 2000 + k) for k, p in enumerate(val)]
    test = [dsb(n) for n in te]  # read once: three of the test sets are these images
    return (
        train_pairs,
        val,
        {
            "dsb2018 (20 held-out images)": test,
            "ctc Fluo-N2DL-HeLa t52": [ctc("ctc_fluo_n2dl_hela", "t52")],
            "dsb2018 held-out, simulated debris + dim nuclei": [_corrupt(p, k) for k, p in enumerate(test)],
            "dsb2018 held-out, a microscope outside the augmentation": [_unseen(p, k) for k, p in enumerate(test)],
        },
    )


def _corrupt(pair, k):
    """A held-out image made to look like the widefield set the models never saw: dimmed
    nuclei, uneven background and bright out-of-focus debris (augment.degraded, its own seed).
    A proxy: that set is not in ../shared/data."""
    from napari_unet.augment import degraded

    img, lab = pair
    return degraded(img, lab == 1, 1000 + k), lab


def _unseen(pair, k):
    """A held-out image as a microscope unlike the training augmentation would record it
    (augment.unseen_microscope: debris the size of a nucleus, defocus, shot noise; one
    microscope for all, its own field of view per image): a second proxy for the unseen
    widefield set, one that training cannot have been fitted to."""
    from napari_unet.augment import unseen_microscope

    img, lab = pair
    return unseen_microscope(img, lab == 1, 3000 + k), lab


def cmd_train(name, iterations=None, threads=None, precision="bfloat16", base_channels=None, start=None, lr=1e-3,
              classes=2, device="auto", workers=0, batch_size=1, minutes=None, tag="", max_zoom=None,
              microscope=None, validate_every=250, input_compression=None, class_balance_power=1.0, weight_average=0.0, seed=0, boundary_width=None,
              keep_linear=False):
    if threads:
        torch.set_num_threads(threads)
    spec = SPECS[name]
    tr, va, _ = data(name)
    narrow_from = None
    if start:  # continue from an earlier run (a file), e.g. with a lower learning rate
        model = load_model(start)
        provenance = {}
        net = model.network
        if base_channels and base_channels < model.config.base_channels:
            # a narrower (faster) network, started from the strongest channels of this one
            narrow_from = f"{start} (width {model.config.base_channels})"
            net = narrowed(net, base_channels)
            provenance["narrowed_from"] = narrow_from
        if keep_linear and not net.config.keep_linear:
            # the compressed input beside the linear one, its weights zero: the same model to start with
            if not input_compression:
                raise SystemExit("--keep-linear needs --input-compression K (K > 0)")
            provenance["compressed_view_from"] = f"{start} (linear input; compressed copy added, k {input_compression:g})"
            net = with_compressed_view(net, input_compression)
        elif input_compression is not None and input_compression != net.config.input_compression:
            # the same weights behind another input transform: training adapts them to it
            provenance["input_compression_from"] = f"{start} (input_compression {net.config.input_compression})"
            state = net.state_dict()
            net = UNet(replace(net.config, input_compression=float(input_compression)))
            net.load_state_dict(state)
        if provenance:
            model = replace(model, network=net, name=name, description=spec["description"], provenance=provenance)
    else:
        names = spec["class_names"] if classes == 2 else CLASS_NAMES_3[name]
        model = SegmentationModel.new(
            UNetConfig(base_channels=base_channels or 16, depth=5, padding="valid", dropout=0.5, n_classes=classes,
                       input_compression=input_compression or 0.0, keep_linear=keep_linear),
            class_names=names, name=name, description=spec["description"],
        )
    nuclei = name == "fluo-nuclei"
    if minutes and not iterations:
        iterations = _iterations_for(minutes, model, tr, workers, batch_size, nuclei)
    cfg = TrainingConfig(
        iterations=iterations or spec["iterations"], precision=precision, validate_every=validate_every, seed=seed,
        tile=572,
        learning_rate=lr, device=device, workers=workers, batch_size=batch_size,
        fine_tune=False,  # a later stage continues training on the full data set, not on strokes
        max_zoom=max_zoom if max_zoom is not None else (2.0 if nuclei else 1.25),
        microscope=microscope if microscope is not None else (0.5 if nuclei else 0.0),
        class_balance_power=class_balance_power, weight_average=weight_average, boundary_width=boundary_width,
    )
    RUNS.mkdir(parents=True, exist_ok=True)
    out = RUNS / f"{name}{tag}.safetensors"
    t0 = time.time()
    cancel = None
    if minutes:  # a time budget: stop (keeping the best model) when it is spent
        def cancel():
            return time.time() - t0 > minutes * 60

    def cb(p):
        if p.iteration % 50 == 0 or p.validation_score is not None:
            print(f"{name}{tag} it {p.iteration} loss {p.loss:.4f} val {p.validation_score} best {p.best_score} "
                  f"{time.time() - t0:.0f}s", flush=True)

    res = train(model, [p[0] for p in tr], [p[1] for p in tr], cfg, validation=va, callback=cb, checkpoint=out,
                cancel=cancel, overwrite=True)
    cmd = f"python scripts/builtin_models.py train {name} --iterations {cfg.iterations}"
    cmd += f" --start {start} --lr {lr}" if start else f" --base-channels {base_channels} --classes {classes}"
    if narrow_from:
        cmd += f" --base-channels {base_channels}"
    if input_compression is not None:
        cmd += f" --input-compression {input_compression:g}"
    if keep_linear:
        cmd += " --keep-linear"
    if class_balance_power != 1:
        cmd += f" --class-balance-power {class_balance_power:g}"
    if weight_average:
        cmd += f" --weight-average {weight_average:g}"
    if seed:
        cmd += f" --seed {seed}"
    if boundary_width is not None:
        cmd += f" --boundary-width {boundary_width}"
    if device != "auto":
        cmd += f" --device {device} --workers {workers} --batch-size {batch_size}"
    res.model.provenance.update({"training_data": name_data(name), "training_seconds": round(res.seconds),
                                 "iterations_done": len(res.history), "command": cmd,
                                 "device": torch.cuda.get_device_name() if torch.cuda.is_available() and device != "cpu"
                                 else "cpu", "threads": torch.get_num_threads()})
    save_model(res.model, out, overwrite=True)
    print(f"{name}{tag}: {res.seconds:.0f} s, {len(res.history)} iterations, best iteration {res.best_iteration}, "
          f"score {res.best_score}", flush=True)
    return out


def _iterations_for(minutes, model, pairs, workers, batch_size, nuclei):
    """Iterations that fit in ``minutes`` when preparing tiles is the bottleneck (a GPU): the
    time of one tile measured here, ``workers`` processes preparing them."""
    from napari_unet.train import TrainingConfig, _Example, _input_tile, _sample

    cfg = TrainingConfig(tile=572, max_zoom=2.0 if nuclei else 1.25, microscope=0.5 if nuclei else 0.0)
    rng = np.random.default_rng(0)
    t_in, t_out = _input_tile(model, cfg.tile)
    exs = [_Example(*pairs[i], model, cfg) for i in range(0, len(pairs), max(1, len(pairs) // 4))]
    t = time.time()
    for k in range(12):
        _sample(exs[k % len(exs)], t_in, t_out, rng, cfg)
    per_tile = (time.time() - t) / 12
    n = int(0.8 * minutes * 60 * max(1, workers) / (per_tile * batch_size))
    print(f"{per_tile:.3f} s per tile -> {n} iterations in {minutes} min", flush=True)
    return max(50, n)


def name_data(name):
    if name == "em-membranes":
        return "ISBI 2012 training volume slices 0-19 (validation 20-21; test 22-24)"
    return ("DSB2018 stage1 train (fixed release), 90 grey fluorescence images, + CTC Fluo-N2DH-GOWT1 t01,t21,t31 "
            "+ CTC Fluo-N2DL-HeLa t13")


def _grid(name, classes=2):
    if classes == 3:
        return [dict(threshold=t, seed_threshold=s, min_size=m, smooth=sm, fill_holes=True)
                for t in (0.5, 0.6, 0.7, 0.8, 0.85, 0.9) for s in (0.4, 0.5, 0.6, 0.7, 0.8) for sm in (0, 1, 2)
                for m in (15, 30)]
    if name == "em-membranes":
        return [dict(threshold=t, seed_threshold=0, min_size=m, smooth=sm, fill_holes=False)
                for t in (0.5, 0.6, 0.7, 0.8, 0.9) for m in (0, 20, 50) for sm in (0, 1)]
    return [dict(threshold=t, seed_threshold=s, min_size=m, smooth=sm, fill_holes=True) for t in (0.4, 0.5, 0.6)
            for s in (0, 0.8, 0.9) for m in (0, 15, 40) for sm in (0, 1, 2)]


def _score(name, model, pairs, post, precision="float32", probs_cache=None, tta=False, device="auto"):
    from napari_unet import metrics as M
    from napari_unet.predict import foreground_probability, labels_from_model_output, predict_probabilities

    rows = []
    for k, (img, lab) in enumerate(pairs):
        if probs_cache is not None and k in probs_cache:
            probs = probs_cache[k]
        else:
            probs = predict_probabilities(img, model, precision=precision, tta=tta, device=device)
            if probs_cache is not None:
                probs_cache[k] = probs
        pred = labels_from_model_output(probs, model, **post)
        truth = L.to_instances(lab)
        r = M.evaluate(pred, truth)
        # the pixel error of the network's own decision (argmax, threshold 0.5), as in the
        # ISBI protocol; the labels' pixel error depends on the post-processing threshold
        r["pixel_error_argmax"] = M.pixel_error(foreground_probability(probs, model) > 0.5, truth > 0)
        rows.append(r)
    keys = rows[0].keys()
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def cmd_tune(name, tag="", device="auto"):
    model = load_model(RUNS / f"{name}{tag}.safetensors")
    _, va, _ = data(name)
    cache = {}
    key = "rand_error" if name == "em-membranes" else "ap50"
    best = None
    for post in _grid(name, model.config.n_classes):
        s = _score(name, model, va, post, probs_cache=cache, device=device)
        val = -s[key] if key == "rand_error" else s[key]
        if best is None or val > best[0]:
            best = (val, post, s)
    print("best post-processing on validation:", best[1], best[2], flush=True)
    model.postprocessing = best[1]
    save_model(model, RUNS / f"{name}{tag}.safetensors", overwrite=True)


def cmd_score(name, precision="float32", tag="", device="auto", tta=False):
    model = load_model(RUNS / f"{name}{tag}.safetensors")
    _, _, tests = data(name)
    res = {}
    for label, pairs in tests.items():
        for use_tta in ((False, True) if tta else (False,)):
            t = time.time()
            key = label + (" (8x test-time augmentation)" if use_tta else "")
            res[key] = _score(name, model, pairs, {}, precision=precision, device=device, tta=use_tta)
            res[key]["seconds"] = round(time.time() - t, 1)
    print(json.dumps({"model": name + tag, "precision": precision, "scores": res}, indent=1), flush=True)
    model.provenance["scores"] = {k: {m: round(v, 4) for m, v in d.items()} for k, d in res.items()}
    if precision == "float32":
        save_model(model, RUNS / f"{name}{tag}.safetensors", overwrite=True)
    return res


def cmd_soup(name, tags, tag):
    """The average of the weights of runs trained on from one start model (a "model soup",
    Wortsman et al., ICML 2022): no slower to run than one of them, often better than each."""
    if not tags:
        raise SystemExit("soup: name the runs to average with --of=TAG --of=TAG ...")
    models = [load_model(RUNS / f"{name}{t}.safetensors") for t in tags]
    try:
        averaged = average_weights([m.network.state_dict() for m in models])
    except ValueError:
        raise SystemExit("soup: the runs' networks differ in shape; only runs of one architecture can be averaged") from None
    soup = models[0]
    soup.network.load_state_dict(averaged)
    # the first run's card (its training data and settings: a trained model, fine-tuned as one), plus the soup's
    soup.provenance = dict(models[0].provenance, soup_of={t: m.provenance for t, m in zip(tags, models)},
                           command=f"python scripts/builtin_models.py soup {name} "
                                   f"{' '.join('--of=' + t for t in tags)} --tag={tag}")
    out = RUNS / f"{name}{tag}.safetensors"
    save_model(soup, out, overwrite=True)
    print("wrote", out, flush=True)


def cmd_install(name, tag="", install_as=None):
    """A float16 copy of the run file into the package, as built-in model ``install_as`` (default
    ``name``); a run file that is already a built-in model can be renamed this way too."""
    src = RUNS / f"{name}{tag}.safetensors"
    model = load_model(src if src.exists() or install_as is None else name)
    if install_as:
        model.name = install_as
    dst = ROOT / "src" / "napari_unet" / "models" / f"{install_as or name}.safetensors"
    save_model(model, dst, dtype=torch.float16, overwrite=True)
    print("wrote", dst, dst.stat().st_size // 1024, "KiB")


def main(argv=None):
    global RUNS, DATA
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["train", "tune", "score", "install", "all", "soup"])
    ap.add_argument("name", choices=sorted(SPECS))
    ap.add_argument("--iterations", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--precision", default=None)
    ap.add_argument("--base-channels", type=int, default=None,
                    help="width of a new network (default 16); with --start, a smaller width trains a narrower "
                         "copy started from the start model's strongest channels (model.narrowed)")
    ap.add_argument("--classes", type=int, default=2, choices=[2, 3], help="3: background / interior / boundary")
    ap.add_argument("--start", help="continue training this model file")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=0, help="processes preparing training tiles")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--minutes", type=float, help="stop training after this many minutes (keeps the best model)")
    ap.add_argument("--max-zoom", type=float)
    ap.add_argument("--microscope", type=float)
    ap.add_argument("--validate-every", type=int, default=250)
    ap.add_argument("--input-compression", type=float, default=None, metavar="K",
                    help="log compression of the normalised input (model.UNetConfig.input_compression); with "
                         "--start, the start model's weights continue behind the new transform")
    ap.add_argument("--keep-linear", action="store_true",
                    help="with --input-compression: the network sees the linear input and its compressed copy "
                         "(with --start from a linear model, the copy's weights start at zero: the same model)")
    ap.add_argument("--class-balance-power", type=float, default=1.0,
                    help="1: the paper's class balance; 0.5: square-root weights (the thin boundary class weighs less)")
    ap.add_argument("--weight-average", type=float, default=0.0, metavar="DECAY",
                    help="check and keep a moving average of the weights with this decay (e.g. 0.999; 0: off)")
    ap.add_argument("--boundary-width", type=int, default=None,
                    help="three classes: width of the boundary class in pixels (wider keeps touching cells apart; "
                         "default: the start model's, 1 for a new network)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the tiles drawn and their augmentation")
    ap.add_argument("--tag", default="", help="suffix of the run file name (runs/NAME<tag>.safetensors)")
    ap.add_argument("--of", action="append", default=[], metavar="TAG",
                    help="soup: the tag of a run whose weights go into the average runs/NAME<tag>, once per run "
                         "(--of=-a --of=-b: tags begin with '-', so with '=')")
    ap.add_argument("--tta", action="store_true", help="score also with 8x test-time augmentation")
    ap.add_argument("--runs", help="folder for run files (default runs/)")
    ap.add_argument("--as", dest="install_as", help="install: the built-in model's name (default NAME)")
    ap.add_argument("--data", help="data folder (default ../shared/data)")
    a = ap.parse_args(argv)
    if a.runs:
        RUNS = Path(a.runs)
    if a.data:
        DATA = Path(a.data)
    if a.step in ("train", "all"):
        cmd_train(a.name, a.iterations, a.threads, a.precision or "bfloat16", a.base_channels, a.start, a.lr,
                  a.classes, a.device, a.workers, a.batch_size, a.minutes, a.tag, a.max_zoom, a.microscope,
                  a.validate_every, a.input_compression, a.class_balance_power, a.weight_average, a.seed, a.boundary_width,
                  a.keep_linear)
    if a.step == "soup":
        cmd_soup(a.name, a.of, a.tag)
    if a.step in ("tune", "all"):
        cmd_tune(a.name, a.tag, a.device)
    if a.step in ("score", "all"):
        cmd_score(a.name, a.precision if a.step == "score" and a.precision else "float32", a.tag, a.device, a.tta)
    if a.step == "install":
        cmd_install(a.name, a.tag, a.install_as)


if __name__ == "__main__":
    sys.exit(main())
