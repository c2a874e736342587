"""CPU inference benchmark: overlap-tile engine vs MONAI sliding windows vs one whole-image pass.

Run (on a quiet machine; the 8192 rows take many minutes each, progress goes to stderr)::

    .venv/bin/python benchmarks/bench_inference.py --sizes 512 2048 8192 --repeats 1 --json bench.json

``--quick`` runs 512 and 2048 only; ``--methods monai,bf16`` keeps the methods whose name contains
any of the given substrings; ``--tile N`` is passed to the engine (default: its own choice).

Every (method, size) row runs in a fresh Python process, so memory is not shared between rows.
Networks: U-Net depth 5, base 16 channels, He-initialised with seed 0, no trained weights. The
engine and "whole image" use valid padding; MONAI gets the same network with "same" padding
(same convolutions and widths, same weights) as a callable returning softmax probabilities.
The input is smoothed noise (float32, seed 0). All rows use torch's default thread count.

Columns:
  method             what ran (see ``METHODS``)
  image              H x W of the input; the output is 2 x H x W float32 probabilities
  seconds            best of ``--repeats`` timed runs, after one warm-up run on a 256x256 image;
                     includes the percentile normalisation and the numpy <-> torch conversions
  Mpx/s              output megapixels per second, H * W / 1e6 / seconds
  peak RSS (MiB)     ru_maxrss of the row's process at its end (high-water mark of resident memory)
  over baseline      peak RSS minus the RSS after imports + model creation + input allocation;
                     it includes the 2*H*W*4-byte output array, which every method must return
  notes              tile / window settings, or why a row was skipped ("whole image" is skipped when
                     its estimated activations, 12*16*4*2 bytes per padded pixel, exceed 60% of free RAM)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

METHODS = [
    "napari-unet valid fp32",
    "napari-unet valid bf16",
    "monai roi512 gaussian",
    "monai roi512 constant",
    "monai roi256 gaussian",
    "monai roi256 constant",
    "monai roi512 gaussian channels_last",
    "monai roi256 gaussian channels_last",
    "whole image (valid)",
]
BASE, DEPTH, OVERLAP, WARMUP = 16, 5, 0.25, 256


WHOLE_BYTES_PER_PX = 12 * BASE * 4 * 2  # the engine's activation rule (tileplan._bytes_per_pixel, fp32)


def make_image(size: int, seed: int = 0):
    """Smooth blobs plus fine noise, float32, built in place (no full-size temporaries)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    low = torch.from_numpy(rng.standard_normal((1, 1, size // 16 + 2, size // 16 + 2)).astype(np.float32))
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)[0, 0].numpy()
    np.maximum(img, 0, out=img)
    img *= 1000.0
    img += 100.0
    for r in range(0, size, 1024):  # shot-like noise, one band of rows at a time
        img[r : r + 1024] += 20.0 * rng.standard_normal((min(1024, size - r), size), dtype=np.float32)
    return img


def _ticker(label: str):
    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 15 or done == total and total > 50:
            print(f"    {label}: {done}/{total}", file=sys.stderr, flush=True)
            last[0] = now

    return progress


def build(method: str, tile: int | None):
    """Return ``(run(image) -> probabilities (2, H, W), notes(H) -> str)`` for one method."""
    import numpy as np
    import torch

    from napari_unet.model import UNet, UNetConfig, alignment, context_margin
    from napari_unet.modelfile import SegmentationModel
    from napari_unet.normalize import Normalization
    from napari_unet.predict import predict_probabilities
    from napari_unet.tileplan import choose_tile, default_memory_budget
    from napari_unet.tileplan import min_tile_for as _min_tile_for
    from napari_unet.tiling import TileGrid

    torch.manual_seed(0)
    norm = Normalization()  # percentile 1 / 99.8, the engine's default
    if method.startswith("napari-unet"):
        model = SegmentationModel.new(UNetConfig(base_channels=BASE, depth=DEPTH, padding="valid", dropout=0.0))
        prec = "bfloat16" if "bf16" in method else "float32"

        def run(img):
            return predict_probabilities(img, model, device="cpu", precision=prec, tile=tile,
                                         progress=_ticker(method) if img.shape[0] > WARMUP else None)

        def notes(size):
            budget = default_memory_budget(torch.device("cpu"))
            (th, tw), m = choose_tile(model.config, (size, size), tile=tile, memory_budget=budget, precision=prec,
                                      device_type="cpu")
            n = len(TileGrid((size, size), (th, tw), m, alignment(model.config)))
            return f"tile {th}x{tw} -> {th - 2 * m}x{tw - 2 * m}, {n} tiles, budget {budget / 2**30:.1f} GiB"

        return run, notes

    if method.startswith("monai"):
        from monai.data.utils import dense_patch_slices
        from monai.inferers import sliding_window_inference

        roi = int(method.split()[1][3:])
        mode = method.split()[2]
        net = UNet(UNetConfig(base_channels=BASE, depth=DEPTH, padding="same", dropout=0.0)).eval()
        cl = method.endswith("channels_last")  # give MONAI the engine's memory-format speed-up too
        if cl:
            net = net.to(memory_format=torch.channels_last)

        def n_windows(size):
            s = max(size, roi)
            return len(dense_patch_slices((s, s), (roi, roi), (int(roi * (1 - OVERLAP)),) * 2))

        def run(img):
            total, done, tick = n_windows(img.shape[0]), [0], _ticker(method)

            def predictor(x):
                done[0] += x.shape[0]
                if img.shape[0] > WARMUP:
                    tick(done[0], total)
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                return torch.softmax(net(x), dim=1).contiguous()

            x = torch.from_numpy(norm(img[None]))[None]  # whole-image percentile normalisation
            with torch.inference_mode():
                y = sliding_window_inference(x, roi, 1, predictor, overlap=OVERLAP, mode=mode)
            return np.asarray(y[0])

        return run, lambda size: (f"roi {roi}, overlap {OVERLAP}, {mode}, sw_batch 1, {n_windows(size)} windows"
                                  + (", channels_last" if cl else ""))

    if method.startswith("whole"):
        config = UNetConfig(base_channels=BASE, depth=DEPTH, padding="valid", dropout=0.0)
        net = UNet(config).eval()
        m = context_margin(config)

        def run(img):
            H, W = img.shape
            nh, nw = _min_tile_for(config, H, m), _min_tile_for(config, W, m)
            x = norm(img[None])  # statistics of the image itself, not of its mirrored border
            x = np.pad(x, ((0, 0), (m, nh - H - m), (m, nw - W - m)), mode="reflect")
            with torch.inference_mode():
                y = torch.softmax(net(torch.from_numpy(x)[None]), dim=1)[0, :, :H, :W]
            return y.numpy()  # a view of the padded-size output

        def notes(size):
            n = _min_tile_for(config, size, m)
            return f"one pass on {n}x{n} (mirror-padded), est. {n * n * WHOLE_BYTES_PER_PX / 2**30:.1f} GiB"

        return run, notes
    raise SystemExit(f"unknown method {method!r}")


def measure_one(method: str, size: int, repeats: int, tile: int | None) -> dict:
    """Body of the child process: one (method, size) row, returned as a dict."""
    import psutil
    import torch

    run, notes = build(method, tile)
    img = make_image(size)
    baseline = psutil.Process().memory_info().rss / 2**20
    run(make_image(WARMUP, seed=1))  # warm-up (oneDNN primitives, thread pool)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run(img)
        best = min(best, time.perf_counter() - t0)
        assert out.shape == (2, size, size), out.shape
        p_mean = float(out[1].mean())
        del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"method": method, "size": size, "seconds": best, "mpx_s": size * size / 1e6 / best,
            "peak_rss_mib": peak, "baseline_rss_mib": baseline, "over_baseline_mib": peak - baseline,
            "notes": notes(size), "threads": torch.get_num_threads(), "fg_prob_mean": p_mean}


def skip_reason(method: str, size: int) -> str | None:
    if not method.startswith("whole"):
        return None
    import psutil

    from napari_unet.model import UNetConfig, context_margin
    from napari_unet.tileplan import min_tile_for as _min_tile_for

    config = UNetConfig(base_channels=BASE, depth=DEPTH, padding="valid", dropout=0.0)
    n = _min_tile_for(config, size, context_margin(config))
    need = n * n * WHOLE_BYTES_PER_PX
    avail = psutil.virtual_memory().available
    if need > 0.6 * avail:
        return f"skipped: needs ~{need / 2**30:.0f} GiB (60% of available RAM is {0.6 * avail / 2**30:.0f} GiB)"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--quick", action="store_true", help="sizes 512 and 2048 only")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--methods", default="", help="comma-separated substrings of method names")
    ap.add_argument("--tile", type=int, default=None, help="engine input tile edge (default: its choice)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per row before it is killed")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one:
        row = measure_one(args.one[0], int(args.one[1]), args.repeats, args.tile)
        print("RESULT " + json.dumps(row), flush=True)
        return

    import torch

    sizes = [512, 2048] if args.quick else args.sizes
    wanted = [w.strip() for w in args.methods.split(",") if w.strip()]
    methods = [m for m in METHODS if not wanted or any(w in m for w in wanted)]
    jobs = [(m, s) for s in sizes for m in methods]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu count {os.cpu_count()}, "
          f"repeats {args.repeats}, tile {args.tile or 'engine choice'}", file=sys.stderr)
    rows = []
    for i, (method, size) in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {method} @ {size}x{size} ...", file=sys.stderr, flush=True)
        reason = skip_reason(method, size)
        if reason:
            rows.append({"method": method, "size": size, "notes": reason})
            print(f"    {reason}", file=sys.stderr)
            continue
        cmd = [sys.executable, os.path.abspath(__file__), "--one", method, str(size), "--repeats", str(args.repeats)]
        if args.tile:
            cmd += ["--tile", str(args.tile)]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=args.timeout)
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            row = json.loads(lines[-1][7:]) if p.returncode == 0 and lines else \
                {"method": method, "size": size, "notes": f"failed (exit code {p.returncode}, see stderr)"}
        except subprocess.TimeoutExpired:
            row = {"method": method, "size": size, "notes": f"killed after {args.timeout:.0f} s (--timeout)"}
        rows.append(row)
        print(f"    {time.perf_counter() - t0:.1f} s wall; best {row.get('seconds', float('nan')):.2f} s, "
              f"peak RSS {row.get('peak_rss_mib', float('nan')):.0f} MiB", file=sys.stderr, flush=True)

    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}\n")
    print("| method | image | seconds | Mpx/s | peak RSS (MiB) | over baseline (MiB) | notes |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        if "seconds" in r:
            nums = f"{r['seconds']:.2f} | {r['mpx_s']:.3f} | {r['peak_rss_mib']:.0f} | {r['over_baseline_mib']:.0f}"
        else:
            nums = "- | - | - | -"
        print(f"| {r['method']} | {r['size']}x{r['size']} | {nums} | {r['notes']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
