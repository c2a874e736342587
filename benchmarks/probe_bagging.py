"""Probe: bagging. Three fine-tunes from the same strokes with different seeds (each holds out its
own 40 % of the painted objects and draws its own tiles); the runs the judge takes are averaged in
weight space (a model soup, Wortsman et al. 2022), the start model if none is taken. The first run
is today's single run.

Usage: ``python benchmarks/probe_bagging.py SEED SET...`` (sets as in bench_strokes.py)."""

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

OFFSETS = (0, 1000, 2000)


def soup_of(model, results):
    """The weight-space average of the taken runs (the start model if none was taken)."""
    won = [r for r in results if not r.kept_start]
    if not won:
        return model
    m = copy.deepcopy(won[0].model)
    states = [{n: v.detach().float().cpu() for n, v in r.model.network.state_dict().items()} for r in won]
    m.network.load_state_dict({n: sum(s[n] for s in states) / len(states) if states[0][n].is_floating_point()
                               else states[0][n] for n in states[0]})
    m.network.eval()
    return m


def main():
    ap = argparse.ArgumentParser(description="Fine-tunes with different seeds, the taken ones averaged.")
    ap.add_argument("seed", type=int, help="seed of the simulated strokes and the first run")
    ap.add_argument("sets", nargs="+", help="data sets, as in bench_strokes.py")
    ap.add_argument("--styles", default="abc")
    args = ap.parse_args()
    import torch
    from bench_strokes import load_set, score, simulate

    from napari_unet import load_model, segment
    from napari_unet.train import TrainingConfig, train

    torch.set_num_threads(1)
    print("set style seed | single: taken dIoU dAP | 2 runs | 3 runs | seconds per run", flush=True)
    for name in args.sets:
        model_name, pairs, k = load_set(name)
        model = load_model(model_name)
        img, truth = pairs[k]
        tests = [p for j, p in enumerate(pairs) if j != k][:3]
        before = score(model, tests)
        pred = segment(img, model).labels > 0
        for style in args.styles:
            strokes = simulate(truth, pred, style, seed=args.seed)
            runs = []
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for off in OFFSETS:
                    runs.append(train(model, [img], [strokes], TrainingConfig.for_strokes(seed=args.seed + off)))
            sec = (time.perf_counter() - t) / len(OFFSETS)
            cols = []
            for n in range(1, len(OFFSETS) + 1):
                s = score(soup_of(model, runs[:n]), tests)
                taken = sum(not r.kept_start for r in runs[:n])
                cols.append(f"{taken} {s[0] - before[0]:+.3f} {s[1] - before[1]:+.3f}")
            print(f"{name} {style} {args.seed} | " + " | ".join(cols) + f" | {sec:.0f}", flush=True)


if __name__ == "__main__":
    main()
