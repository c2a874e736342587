"""Does fine-tuning from a few painted strokes lift the whole data set, and never break the model?

    nice -n 10 python benchmarks/bench_strokes.py              # needs ../shared/data, a few minutes
    python benchmarks/bench_strokes.py --sets hela --styles a   # one row
    python benchmarks/bench_strokes.py --iterations 100 --learning-rate 1e-3 ...   # other settings

Per data set, strokes are simulated on ONE image (as a user would paint where the built-in model
is wrong: half of the painted cells are those the start model segments worst, half of the
background strokes lie on its false positives) and the model is fine-tuned with
``TrainingConfig.for_strokes()`` (the defaults of the command line and the widget). The other
images of the same set are segmented before and after, and scored against their ground truth:
foreground IoU and AP@0.5 (mean over the images). Stroke styles:

* ``a``: 8 whole cells + 12 background dabs (radius 8 px);
* ``b``: the same 8 whole cells, no background;
* ``c``: a scribble (3 px wide) along the long axis of each of those cells + 6 background
  scribbles (5 px wide, about 80 px long);
* ``f`` (not run by default): the whole image labelled from its ground truth, the most one
  image can teach: a ceiling for what strokes on it can do to the other images.

Data sets: ``dsb`` (DSB2018, the 17 images of 360x360 px, one look), ``hela`` (CTC
Fluo-N2DL-HeLa), ``gowt1`` (CTC Fluo-N2DH-GOWT1), all with ``fluo-nuclei``; ``em`` (ISBI 2012
slices 20-24, not used to train the model) with ``em-membranes``. ``hela-hard`` and
``dsb-hard``: the same images as poorer widefield microscopes would record them
(``augment.degraded``: dimmed nuclei, uneven background, bright debris; one seed per image),
where the built-in model starts low, as on a microscope it never saw. ``hela-scope6`` (any
set, any number N): all images from ONE such microscope (``degraded(instrument_seed=N)``: the
same contrast, uneven background and noise; their own dim nuclei and debris), as the
images of one user's data set are. ``hela-unseen`` and ``dsb-unseen``: one microscope
outside the training augmentation altogether (``augment.unseen_microscope``: nucleus-sized
bright debris, defocus, vignetting, shot noise), where the start model is far lower.

``--trace`` also scores the other images at every check of the judge (what the judge cannot
see), one line per check: whether a better model was there to be taken.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

STYLES = {"a": "whole cells + background dabs", "b": "cells only", "c": "scribbles in cells + background scribbles",
          "f": "the whole image labelled"}


def _imread(p):
    from PIL import Image

    return np.asarray(Image.open(p))


def load_set(name):
    """(model name, [(image, instances)], index of the image to paint on)."""
    unseen = re.fullmatch(r"(\w+)-unseen(\d*)", name)
    if unseen:
        from napari_unet.augment import unseen_microscope

        model_name, pairs, k = load_set(unseen.group(1))
        inst = int(unseen.group(2)) if unseen.group(2) else 7
        return model_name, [(unseen_microscope(img, truth == 0, 100 + j, inst), truth)
                            for j, (img, truth) in enumerate(pairs)], k
    hard = re.fullmatch(r"(\w+)-(hard|scope(\d+))", name)
    if hard:
        from napari_unet.augment import degraded

        model_name, pairs, k = load_set(hard.group(1))
        inst = int(hard.group(3)) if hard.group(3) else None  # one microscope for all images, or one each
        return model_name, [(degraded(img, truth == 0, 100 + j, contrast=(0.1, 0.1), debris=6, instrument_seed=inst),
                             truth) for j, (img, truth) in enumerate(pairs)], k
    if name == "dsb":
        imgs = []
        for p in sorted((DATA / "dsb2018" / "images").glob("*.png")):
            im = _imread(p)
            if im.ndim == 3:
                im = im[..., :3].mean(-1)
            if im.shape == (360, 360):
                imgs.append((im.astype(np.float32), tifffile.imread(DATA / "dsb2018" / "labels" / f"{p.stem}.tif")))
        return "fluo-nuclei", imgs, 0
    if name in ("hela", "gowt1"):
        folder = DATA / ("ctc_fluo_n2dl_hela" if name == "hela" else "ctc_fluo_n2dh_gowt1")
        pairs = [(tifffile.imread(p), tifffile.imread(folder / "labels" / p.name))
                 for p in sorted((folder / "images").glob("*.tif"))]
        return "fluo-nuclei", pairs, 0
    if name == "em":
        from napari_unet import labels as L

        pairs = []
        for i in range(20, 25):
            img = _imread(DATA / "isbi2012" / "images" / f"slice{i:02d}.png")
            lab = L.to_instances(L.from_membranes(_imread(DATA / "isbi2012" / "labels" / f"slice{i:02d}.png")))
            pairs.append((img, lab))
        return "em-membranes", pairs, 2
    raise ValueError(f"unknown data set {name!r}: dsb, hela, gowt1 or em, optionally with -hard, -scopeN or -unseen")


def _disk(shape, cy, cx, r):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _line(shape, y0, x0, y1, x1, width):
    n = int(max(abs(y1 - y0), abs(x1 - x0))) + 1
    m = np.zeros(shape, bool)
    ys = np.clip(np.round(np.linspace(y0, y1, n)).astype(int), 0, shape[0] - 1)
    xs = np.clip(np.round(np.linspace(x0, x1, n)).astype(int), 0, shape[1] - 1)
    m[ys, xs] = True
    return ndi.binary_dilation(m, iterations=max(0, width // 2))


def simulate(truth, pred_fg, style, seed=0, n_cells=8, n_dabs=12, n_scribbles=6):
    """Strokes in the label convention from ground-truth instances ``truth`` and the start
    model's foreground ``pred_fg`` (painting where it is wrong)."""
    if style == "f":  # every pixel: what one fully annotated image can teach (a ceiling for strokes)
        return np.where(truth > 0, truth.astype(np.int64) + 1, 1).astype(np.uint16)
    rng = np.random.default_rng(seed)
    ids = np.unique(truth)
    ids = ids[ids > 0]
    # cells the start model gets worst first (half), the rest at random
    objs = ndi.find_objects(truth)
    iou = {}
    for i in ids:
        sl = objs[i - 1]
        t = truth[sl] == i
        p = pred_fg[sl]
        iou[i] = np.count_nonzero(t & p) / max(1, np.count_nonzero(t | p))
    size = {i: np.count_nonzero(truth[objs[i - 1]] == i) for i in ids}
    ok = [i for i in ids if size[i] >= 30]
    worst = sorted(ok, key=lambda i: iou[i])[: n_cells // 2]
    rest = [i for i in ok if i not in worst]
    chosen = list(worst) + list(rng.choice(rest, size=min(n_cells - len(worst), len(rest)), replace=False))
    lab = np.zeros(truth.shape, np.uint16)
    bg_truth = truth == 0
    for k, i in enumerate(chosen):
        obj = truth == i
        if style in ("a", "b"):
            lab[obj] = k + 2
        else:  # a 3-px scribble along the cell's long axis, inside it
            ys, xs = np.nonzero(obj)
            cy, cx = ys.mean(), xs.mean()
            cov = np.cov(np.stack([ys - cy, xs - cx])) if ys.size > 2 else np.eye(2)
            evals, evecs = np.linalg.eigh(cov)
            v = evecs[:, -1] * 2 * np.sqrt(max(evals[-1], 1.0))
            line = _line(truth.shape, cy - v[0], cx - v[1], cy + v[0], cx + v[1], 3)
            lab[line & ndi.binary_erosion(obj, iterations=2)] = k + 2
    if style == "b":
        return lab
    safe_bg = bg_truth & ~ndi.binary_dilation(~bg_truth, iterations=2)
    false_pos = np.flatnonzero((pred_fg & safe_bg).ravel())
    anywhere = np.flatnonzero(safe_bg.ravel())
    n = n_dabs if style == "a" else n_scribbles
    picks = list(rng.choice(false_pos, size=min(n // 2, false_pos.size), replace=False)) if false_pos.size else []
    picks += list(rng.choice(anywhere, size=n - len(picks), replace=False))
    for j in picks:
        cy, cx = divmod(int(j), truth.shape[1])
        if style == "a":
            m = _disk(truth.shape, cy, cx, 8)
        else:
            a = rng.uniform(0, np.pi)
            m = _line(truth.shape, cy - 40 * np.sin(a), cx - 40 * np.cos(a), cy + 40 * np.sin(a), cx + 40 * np.cos(a), 5)
        lab[m & safe_bg & (lab == 0)] = 1
    return lab


def probe_parser(description: str) -> argparse.ArgumentParser:
    """The command line the probes share: ``SEED SET... [--styles abc]``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("seed", type=int, help="seed of the simulated strokes and the training")
    ap.add_argument("sets", nargs="+", help="data sets, as in bench_strokes.py")
    ap.add_argument("--styles", default="abc", help="stroke styles, e.g. ab")
    return ap


def painted_cases(sets, styles, seed: int, max_test: int = 3):
    """Per data set and style, as the benchmark paints and scores them: yields ``(name, style,
    model, image, strokes, tests, before)`` with ``before`` the start model's (IoU, AP@0.5) on
    the other images ``tests``."""
    from napari_unet import load_model, segment

    for name in sets:
        model_name, pairs, k = load_set(name)
        model = load_model(model_name)
        img, truth = pairs[k]
        tests = [p for j, p in enumerate(pairs) if j != k][:max_test]
        before = score(model, tests)
        pred = segment(img, model).labels > 0
        for style in styles:
            yield name, style, model, img, simulate(truth, pred, style, seed=seed), tests, before


def score(model, pairs):
    from napari_unet import segment
    from napari_unet.metrics import average_precision

    ious, aps = [], []
    for img, truth in pairs:
        lab = segment(img, model).labels
        fg, t = lab > 0, truth > 0
        ious.append(np.count_nonzero(fg & t) / max(1, np.count_nonzero(fg | t)))
        aps.append(average_precision(lab, truth))
    return float(np.mean(ious)), float(np.mean(aps))


@contextlib.contextmanager
def _traced(model, tests, trace, on):
    """With ``on``: every network the fine-tuning judge scores (the start model first, then each
    check) is also scored on ``tests``; ``(judge's score, IoU, AP@0.5, its held-out score, the start
    model's score on the painted cells, the outline drift)`` appended to ``trace``.
    Seconds then include this scoring."""
    if not on:
        yield
        return
    from napari_unet.training.holdout import HeldOutJudge

    judge_score = HeldOutJudge.score

    def score_and_trace(self, net, device, bf16):
        judged = judge_score(self, net, device, bf16)
        m = copy.deepcopy(model)
        m.network.load_state_dict({k: v.detach().float().cpu() for k, v in net.state_dict().items()})
        m.network.eval()
        trace.append((judged, *score(m, tests), self.last_held, self.start_held, self.last_drift))
        return judged

    HeldOutJudge.score = score_and_trace
    try:
        yield
    finally:
        HeldOutJudge.score = judge_score


def _score(v):
    return "-" if v is None else f"{v:.3f}"


def _number_or_text(v: str):
    """A --set value for a setting whose default is None: a whole number, a number, or the text."""
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return None if v == "None" else v


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["dsb", "hela", "gowt1", "em"])
    ap.add_argument("--styles", nargs="+", default=["a", "b", "c"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-test", type=int, default=4, help="score at most this many other images per set")
    ap.add_argument("--model", help="start from this model (name or file) instead of the set's built-in model")
    ap.add_argument("--trace", action="store_true", help="score the other images at every check of the judge")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a TrainingConfig field, e.g. --set learning_rate=1e-3 --set distillation=0")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        sys.exit(f"the real data folder {DATA} is absent")
    import torch

    from napari_unet import load_model, segment
    from napari_unet.train import TrainingConfig, train

    torch.set_num_threads(args.threads)
    over = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        default = getattr(TrainingConfig(), k)
        over[k] = (v.lower() in ("1", "true", "yes")) if isinstance(default, bool) else type(default)(v) \
            if default is not None else _number_or_text(v)
    cfg = TrainingConfig.for_strokes(seed=args.seed, **over)
    changed = {k: v for k, v in vars(cfg).items() if getattr(TrainingConfig.for_strokes(), k) != v and k != "seed"}
    print(f"settings: TrainingConfig.for_strokes({', '.join(f'{k}={v!r}' for k, v in changed.items())}), "
          f"seed {args.seed}, {torch.get_num_threads()} threads")
    print("| data set | style | painted px (objects) | IoU before | IoU after | AP@0.5 before | AP@0.5 after | kept start | held-out score start -> best | seconds |")
    print("|---|---|---:|---:|---:|---:|---:|---|---|---:|")
    for name in args.sets:
        model_name, pairs, k = load_set(name)
        model = load_model(args.model or model_name)
        img, truth = pairs[k]
        tests = [p for j, p in enumerate(pairs) if j != k][: args.max_test]
        before = score(model, tests)
        pred_fg = segment(img, model).labels > 0
        for style in args.styles:
            strokes = simulate(truth, pred_fg, style, seed=args.seed)
            n_cells = len(np.unique(strokes[strokes >= 2]))
            t = time.perf_counter()
            trace = []
            with warnings.catch_warnings(), _traced(model, tests, trace, args.trace):
                warnings.simplefilter("ignore")
                res = train(model, [img], [strokes], cfg)
            sec = time.perf_counter() - t
            after = score(res.model, tests)
            print(f"| {name} ({len(tests)} images) | {style}: {STYLES[style]} | {np.count_nonzero(strokes)} "
                  f"({n_cells} cells) | {before[0]:.3f} | {after[0]:.3f} | {before[1]:.3f} | {after[1]:.3f} | "
                  f"{'yes' if res.kept_start else f'no (it {res.best_iteration})'} | {_score(res.start_score)} -> "
                  f"{_score(res.best_score)} | {sec:.0f} |", flush=True)
            for j, (judged, iou, ap_, held, start_held, drift) in enumerate(trace):
                print(f"|   check {j * cfg.validate_every} | | | | {iou:.3f} | | {ap_:.3f} | | {judged:.3f} "
                      f"(held out {_score(held)}, start on painted {_score(start_held)}, outline drift "
                      f"{_score(drift)}) | |", flush=True)


if __name__ == "__main__":
    main()
