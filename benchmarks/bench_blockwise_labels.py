"""Labelling one large plane: the in-memory post-processing vs block-wise labelling with the
id merge (napari_unet.blockwise.label_blockwise), peak memory and seconds.

    python benchmarks/bench_blockwise_labels.py --size 8192

The probabilities are those of the built-in ``fluo-nuclei`` model on the packaged nuclei
sample, tiled (flipped copies) to ``size x size`` and stored as a float32 memory map, so that
neither method starts with them in memory; its post-processing (smoothing, seeded watershed,
hole filling, min_size) is applied. Each method runs in a fresh process; "over baseline" is the
growth of the peak RSS over the process after imports and the model. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_probabilities(path: Path, size: int) -> None:
    import numpy as np

    from napari_unet.modelfile import load_model
    from napari_unet.predict import predict_probabilities
    from napari_unet.samples import sample_image

    tile = predict_probabilities(sample_image("nuclei"), load_model("fluo-nuclei"), device="cpu")
    K, th, tw = tile.shape
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(K, size, size))
    for y in range(0, size, th):
        for x in range(0, size, tw):
            t = tile[:, ::(-1) ** (y // th), ::(-1) ** (x // tw)]
            h, w = min(th, size - y), min(tw, size - x)
            out[:, y:y + h, x:x + w] = t[:, :h, :w]
    out.flush()


def run_one(path: str, method: str, block: int) -> dict:
    import numpy as np

    from napari_unet.modelfile import load_model

    model = load_model("fluo-nuclei")
    probs = np.load(path, mmap_mode="r")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if method == "in-memory":
        from napari_unet.predict import labels_from_model_output

        labels = labels_from_model_output(np.asarray(probs), model)
    else:
        from napari_unet.blockwise import label_blockwise

        labels = label_blockwise(probs, model, block=block)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "objects": int(labels.max()), "peak": peak / 1024, "over": (peak - base) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--block", type=int, default=2048)
    ap.add_argument("--_one", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._one:
        print(json.dumps(run_one(args._one[0], args._one[1], int(args._one[2]))))
        return
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "probs.npy"
        make_probabilities(path, args.size)
        print(f"| method ({args.size}x{args.size}) | seconds | objects | peak RSS (MiB) | over baseline (MiB) |")
        print("|---|---:|---:|---:|---:|")
        for method in ("in-memory", "block-wise"):
            r = subprocess.run([sys.executable, __file__, "--_one", str(path), method, str(args.block)],
                               capture_output=True, text=True, check=True)
            m = json.loads(r.stdout.strip().splitlines()[-1])
            name = "labels_from_model_output (whole plane)" if method == "in-memory" else f"label_blockwise, block {args.block}"
            print(f"| {name} | {m['seconds']:.1f} | {m['objects']} | {m['peak']:.0f} | {m['over']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
