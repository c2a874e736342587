"""Probe: the start weights moved a share (0.25-1) of the way to the fine-tuned ones (150 iterations,
judge bypassed; WiSE-FT, Wortsman et al. 2022); change of the other images' IoU and AP@0.5 per share.

Usage: ``python benchmarks/probe_weight_mix.py SEED SET...`` (sets as in bench_strokes.py)."""

import copy
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHARES = (0.25, 0.5, 0.75, 1.0)


def main():
    from bench_strokes import painted_cases, probe_parser, score

    args = probe_parser("Weight-space interpolation of the start and the fine-tuned model.").parse_args()
    import torch

    from napari_unet.train import TrainingConfig, train
    from napari_unet.training.holdout import HeldOutJudge
    from napari_unet.training.mixing import mix_weights

    torch.set_num_threads(1)
    calls = [0]

    def latest_wins(self, net, device, bf16):  # the judge bypassed: the last check is kept
        calls[0] += 1
        return float(calls[0])

    HeldOutJudge.score = latest_wins
    print("set style seed | " + " ".join(f"a={a}" for a in SHARES) + "  (IoU change; AP change)", flush=True)
    for name, style, model, img, strokes, tests, before in painted_cases(args.sets, args.styles, args.seed):
        w0 = {n: v.detach().clone() for n, v in model.network.state_dict().items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the fine-tuned weights themselves (mixing is on by default since 2026-12-07)
            cfg = TrainingConfig.for_strokes(seed=args.seed, validate_every=150, mix_with_start=1.0)
            res = train(model, [img], [strokes], cfg)
        w1 = {n: v.detach().float().cpu() for n, v in res.model.network.state_dict().items()}
        out = []
        for a in SHARES:
            m = copy.deepcopy(model)
            m.network.load_state_dict(mix_weights(w0, w1, a))
            m.network.eval()
            s = score(m, tests)
            out.append((s[0] - before[0], s[1] - before[1]))
        print(f"{name} {style} {args.seed} | " + " ".join(f"{d:+.3f}" for d, _ in out) + " ; "
              + " ".join(f"{d:+.3f}" for _, d in out), flush=True)

if __name__ == "__main__":
    main()
