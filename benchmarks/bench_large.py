"""Block-wise segmentation of large images on a local dask.distributed cluster: seconds,
megapixels per second, peak memory of the main process and of each worker.

    python benchmarks/bench_large.py --sizes 4096 12000 20000 --workers 1 2
    python benchmarks/bench_large.py --sizes 4096 --workers 1 --in-memory   # adds segment() for comparison

The input is an OME-Zarr mosaic of the packaged real nuclei sample (520 x 696, randomly
flipped per copy), uint8, chunks of 1024, written once per size into --scratch. Every row
runs in a fresh process (so that its peak RSS is its own): the local cluster is started first
(its start-up is not counted), then ``segment_to_zarr`` runs with the built-in ``fluo-nuclei``
model. Peak memory is each process's high-water mark (``ru_maxrss``); for a worker it
includes torch and the model (about 0.25 GiB before any block). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_mosaic(path: Path, size: int) -> Path:
    import numpy as np
    import zarr

    from napari_unet.omezarr import _multiscales_attrs
    from napari_unet.samples import sample_image

    if (path / ".done").exists():
        return path
    tile = sample_image("nuclei")
    if tile.ndim == 3:
        tile = tile[..., 0]
    th, tw = tile.shape
    rng = np.random.default_rng(0)
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    a = g.create_array("0", shape=(size, size), chunks=(1024, 1024), dtype=tile.dtype)
    g.attrs.update(_multiscales_attrs("mosaic", [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                                      1, (1.0, 1.0)))
    band = 1024
    for y in range(0, size, band):
        h = min(band, size - y)
        rows = np.empty((h, size), tile.dtype)
        for yy in range(y - y % th, y + h, th):
            strip = np.concatenate([tile[::rng.choice([1, -1]), ::rng.choice([1, -1])]
                                    for _ in range(-(-size // tw))], axis=1)[:, :size]
            a0, a1 = max(yy, y), min(yy + th, y + h)
            rows[a0 - y:a1 - y] = strip[a0 - yy:a1 - yy]
        a[y:y + h] = rows
    (path / ".done").touch()
    return path


def run_one(src: str, workers: int, out: str, in_memory: bool) -> dict:

    from napari_unet.modelfile import load_model

    model = load_model("fluo-nuclei")
    load0 = os.getloadavg()[0]
    if in_memory:
        import zarr

        from napari_unet.predict import segment

        image = zarr.open_group(src, mode="r")["0"][:]
        t0 = time.perf_counter()
        seg = segment(image, model, device="cpu")
        seconds = time.perf_counter() - t0
        n = int(seg.labels.max())
        worker_peaks = []
    else:
        from napari_unet.distributed import _close, connect, segment_to_zarr

        client = connect(workers=workers)
        threads = max(1, (os.cpu_count() or 1) // workers)
        t0 = time.perf_counter()
        res = segment_to_zarr(src, model, out, client=client, block=2048, device="cpu", threads=threads)
        seconds = time.perf_counter() - t0
        n = res.n_objects
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        worker_peaks = sorted(v / 1024 for v in peaks.values())
        _close(client)
    main_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "objects": n, "main_mib": main_peak, "worker_mib": worker_peaks,
            "load": [round(load0, 1), round(os.getloadavg()[0], 1)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 12000, 20000])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--in-memory", action="store_true", help="also time segment() on the whole image in memory")
    ap.add_argument("--scratch", default=None, help="folder for inputs and outputs (default: a temporary one)")
    ap.add_argument("--_one", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._one:
        src, w, out, mem = args._one
        print(json.dumps(run_one(src, int(w), out, mem == "1")))
        return
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="bench_large_"))
    scratch.mkdir(parents=True, exist_ok=True)
    print("| image | workers | seconds | Mpx/s | objects | main peak (MiB) | worker peaks (MiB) | load avg (start, end) |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for size in args.sizes:
        src = make_mosaic(scratch / f"mosaic_{size}.zarr", size)
        configs = [(w, False) for w in args.workers] + ([(0, True)] if args.in_memory else [])
        for w, mem in configs:
            out = scratch / f"out_{size}_{w}"
            shutil.rmtree(out, ignore_errors=True)
            r = subprocess.run([sys.executable, __file__, "--_one", str(src), str(w), str(out), "1" if mem else "0"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(f"| {size}x{size} | {w or 'in memory'} | failed: {r.stderr.strip().splitlines()[-1]} |||||")
                continue
            m = json.loads(r.stdout.strip().splitlines()[-1])
            mpx = size * size / 1e6
            wp = ", ".join(f"{v:.0f}" for v in m["worker_mib"]) or "-"
            print(f"| {size}x{size} | {w if not mem else 'in memory, segment()'} | {m['seconds']:.1f} | "
                  f"{mpx / m['seconds']:.2f} | {m['objects']} | {m['main_mib']:.0f} | {wp} | {m['load']} |", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    if not args.scratch:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
