"""Probe: cross-fitting. The painted objects are split in two halves; one fine-tune trains on each
half and is judged on the other (so every stroke trains one model and judges the other), and the
two judged results are averaged in weight space (a model soup, Wortsman et al. 2022): both when
both beat the start model, the one that does, else the start. Against today's single run (40 %
held out), on the other images of the set.

Usage: ``python benchmarks/probe_crossfit.py SEED SET...`` (sets as in bench_strokes.py)."""

import copy
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main():
    from bench_strokes import painted_cases, probe_parser, score

    args = probe_parser("Two fine-tunes on complementary halves of the strokes, averaged.").parse_args()
    import torch

    from napari_unet.train import TrainingConfig, train
    from napari_unet.training import loop
    from napari_unet.training.holdout import holdout_split
    from napari_unet.training.mixing import mix_weights

    torch.set_num_threads(1)
    split = loop.holdout_split
    print("set style seed | base: taken dIoU dAP | A | B | soup: dIoU dAP | seconds base, cross", flush=True)
    for name, style, model, img, strokes, tests, before in painted_cases(args.sets, args.styles, args.seed):
        cfg = TrainingConfig.for_strokes(seed=args.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            base = train(model, [img], [strokes], cfg)
            t_base = time.perf_counter() - t
            halves = holdout_split([strokes], 0.5, seed=args.seed)
            runs = []
            t = time.perf_counter()
            for part in (halves, halves[::-1]):  # train on one half, judge on the other, then swap
                loop.holdout_split = lambda *a, part=part, **kw: (list(part[0]), list(part[1]))
                try:
                    runs.append(train(model, [img], [strokes], cfg))
                finally:
                    loop.holdout_split = split
            t_cross = time.perf_counter() - t
        won = [r for r in runs if not r.kept_start]
        soup = won[0].model if won else model
        if len(won) == 2:
            soup = copy.deepcopy(won[0].model)
            soup.network.load_state_dict(mix_weights(*(r.model.network.state_dict() for r in won), 0.5))
            soup.network.eval()
        cols = []
        for r in (base, *runs):
            s = score(r.model, tests)
            cols.append(f"{'n' if r.kept_start else 'y'} {s[0] - before[0]:+.3f} {s[1] - before[1]:+.3f}")
        s = score(soup, tests)
        cols.append(f"{len(won)} {s[0] - before[0]:+.3f} {s[1] - before[1]:+.3f}")
        print(f"{name} {style} {args.seed} | " + " | ".join(cols) + f" | {t_base:.0f} {t_cross:.0f}", flush=True)

if __name__ == "__main__":
    main()
