"""Probe: bagging. Three fine-tunes from the same strokes with different seeds (each holds out its
own 40 % of the painted objects and draws its own tiles); the runs the judge takes are averaged in
weight space (a model soup, Wortsman et al. 2022), the start model if none is taken. The first run
is today's single run.

Usage: ``python benchmarks/probe_bagging.py SEED SET...`` (sets as in bench_strokes.py)."""

import copy
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

OFFSETS = (0, 1000, 2000)


def soup_of(model, results):
    """The weight-space average of the taken runs (the start model if none was taken)."""
    from napari_unet.training.mixing import average_weights

    won = [r for r in results if not r.kept_start]
    if not won:
        return model
    m = copy.deepcopy(won[0].model)
    m.network.load_state_dict(average_weights([r.model.network.state_dict() for r in won]))
    m.network.eval()
    return m


def main():
    from bench_strokes import painted_cases, probe_parser, score

    args = probe_parser("Fine-tunes with different seeds, the taken ones averaged.").parse_args()
    import torch

    from napari_unet.train import TrainingConfig, train

    torch.set_num_threads(1)
    print("set style seed | single: taken dIoU dAP | 2 runs | 3 runs | seconds per run", flush=True)
    for name, style, model, img, strokes, tests, before in painted_cases(args.sets, args.styles, args.seed):
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
