"""Rerun, through the real command line (one subprocess each), the careless and hostile cases
of issue 7 and print a table: the exit status, the last line on stderr, and whether every file
that existed before the run still has its checksum.

    python scripts/hostile_inputs.py [--keep DIR]

Needs nothing but napari-unet (a small model is made on the fly); about a minute on a CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

PY = [sys.executable, "-m", "napari_unet.cli"]


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict:
    return {p: sha(p) for p in root.rglob("*") if p.is_file() and not p.is_fifo()}


def run(root: Path, args, *, signal_after=None, sig=signal.SIGINT, env=None, timeout=300):
    before = snapshot(root)
    proc = subprocess.Popen(PY + [str(a) for a in args], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})
    if signal_after is not None:
        time.sleep(signal_after)
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return 124, "TIMED OUT (hangs)", False, []
    after = snapshot(root)
    kept = all(after.get(p) == h for p, h in before.items())
    parts = [p.name for p in root.rglob("*.part")]
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return proc.returncode, (lines[-1] if lines else out.strip().splitlines()[-1] if out.strip() else ""), kept, parts


def make_data(root: Path):
    import torch
    from skimage.draw import disk

    from napari_unet.model import UNetConfig
    from napari_unet.modelfile import SegmentationModel, save_model
    from napari_unet.train import TrainingConfig, train

    rng = np.random.default_rng(0)
    img = rng.normal(20, 3, (360, 360)).astype(np.float32)
    inst = np.zeros(img.shape, np.uint16)
    for k in range(12):
        cy, cx = rng.integers(30, 330, 2)
        rr, cc = disk((cy, cx), 14, shape=img.shape)
        img[rr, cc] += 100
        inst[rr, cc] = k + 1
    tifffile.imwrite(root / "cells.tif", img)
    tifffile.imwrite(root / "cells_truth.tif", inst)
    torch.manual_seed(0)
    model = SegmentationModel.new(UNetConfig(base_channels=8, depth=3, dropout=0.0), name="small")
    lab = np.where(inst > 0, inst + 1, 1).astype(np.uint16)
    res = train(model, [img], [lab], TrainingConfig(iterations=60, tile=124, precision="float32"))
    save_model(res.model, root / "small.safetensors")
    return img, inst


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keep", help="work in this folder and keep it")
    a = ap.parse_args()
    root = Path(a.keep or tempfile.mkdtemp(prefix="napari-unet-hostile-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    img, inst = make_data(root)
    M = ["--model", "fluo-nuclei"]  # a real model for the results; small.safetensors for the file cases
    seg = ["segment"]
    rows = []

    def case(name, args, expect, **kw):
        rc, line, kept, parts = run(root, args, **kw)
        ok = (rc in expect) and kept and not parts
        rows.append((name, rc, line, "yes" if kept else "NO", "none" if not parts else ", ".join(parts), ok))

    # 1. never replace a file unasked
    (root / "out").mkdir()
    tifffile.imwrite(root / "out" / "cells_labels.tif", inst)
    os.chmod(root / "out" / "cells_labels.tif", 0o444)
    case("segment over an existing (read-only) result", seg + ["cells.tif", *M, "--output", "out"], {2})
    for d in ("2024.01.15_wellA", "2024.01.16_wellB"):
        tifffile.imwrite(root / f"{d}.tif", img)
    case("dotted names 2024.01.15_wellA.tif, 2024.01.16_wellB.tif",
         seg + ["2024.01.15_wellA.tif", "2024.01.16_wellB.tif", *M, "--output", "dots", "-q"], {0})
    rows[-1] = rows[-1][:2] + (", ".join(sorted(p.name for p in (root / "dots").iterdir())),) + rows[-1][3:]
    for plate in ("plateA", "plateB"):
        (root / plate).mkdir()
        tifffile.imwrite(root / plate / "well1.tif", img)
    case("plateA/well1.tif then plateB/well1.tif, one folder", seg + ["plateA/well1.tif", *M, "--output", "wells", "-q"], {0})
    case("  ... second process", seg + ["plateB/well1.tif", *M, "--output", "wells"], {2})
    tifffile.imwrite(root / "val.tif", img)
    train = ["train", "--images", "cells.tif", "--labels", "cells_truth.tif", "--label-format", "instances",
             "--iterations", "3", "--tile", "124", "--precision", "float32", "-q"]
    case("train --output = a --validation-images file", train + ["--validation-images", "val.tif", "--validation-labels",
                                                                  "cells_truth.tif", "--output", "val.tif", "--overwrite"], {2})
    case("train --output = the --model start file", train + ["--model", "small.safetensors", "--output",
                                                              "small.safetensors"], {2})

    # 2. NaN and inf
    bad = img.copy()
    bad[100, 100] = np.nan
    tifffile.imwrite(root / "nan.tif", bad)
    bad[200, 200] = np.inf
    tifffile.imwrite(root / "naninf.tif", bad)
    case("one NaN pixel", seg + ["nan.tif", *M, "--output", "nan"], {0})
    case("one NaN and one inf pixel", seg + ["naninf.tif", *M, "--output", "nan"], {0})
    clean = int(tifffile.imread(run_clean(root, M)).max())
    got = int(tifffile.imread(root / "nan" / "naninf_labels.tif").max())
    rows.append((f"  objects found: clean image vs NaN+inf image ({int(inst.max())} drawn)", 0, f"{clean} vs {got}", "yes",
                 "none", abs(clean - got) <= 1))
    lab = np.where(inst > 0, inst + 1, 1).astype(np.uint16)
    tifffile.imwrite(root / "conv.tif", lab)
    case("training on an image with a NaN pixel", ["train", "--images", "nan.tif", "--labels", "conv.tif",
                                                   "--model", "small.safetensors",
                                                   "--iterations", "3", "--tile", "124", "--output", "nanft.safetensors",
                                                   "--precision", "float32", "-q"], {0})
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    t = load_file(str(root / "small.safetensors"))
    with safe_open(str(root / "small.safetensors"), framework="pt") as f:
        meta = dict(f.metadata())
    t["head.weight"][0, 0, 0, 0] = float("nan")
    save_file(t, str(root / "nanweights.safetensors"), metadata=meta)
    case("model file with a NaN weight", seg + ["cells.tif", "--model", "nanweights.safetensors", "--output", "nw"], {2})

    # 3. channels, annotations
    tifffile.imwrite(root / "two.tif", np.stack([img, img], -1), photometric="minisblack", planarconfig="contig")
    case("(360, 360, 2) image, one-channel model", seg + ["two.tif", *M, "--output", "two"], {2})
    case("  ... --channel 0", seg + ["two.tif", *M, "--output", "two", "--channel", "0", "-q"], {0})
    tifffile.imwrite(root / "empty.tif", np.zeros(img.shape, np.uint16))
    tifffile.imwrite(root / "one.tif", np.full(img.shape, 3, np.uint16))
    for fmt in ("instances", "binary"):
        case(f"train on an all-zero mask ({fmt})", ["train", "--images", "cells.tif", "--labels", "empty.tif",
                                                    "--label-format", fmt, "--output", f"e_{fmt}.safetensors", "-q"], {2})
    case("train on a one-valued mask", ["train", "--images", "cells.tif", "--labels", "one.tif", "--label-format",
                                        "instances", "--iterations", "2", "--tile", "124", "--output", "one.safetensors",
                                        "--precision", "float32", "-q"], {0})

    # 4. memory
    with tifffile.TiffWriter(root / "bomb.tif") as tw:
        tile = np.zeros((1024, 1024), np.uint8)
        tw.write((tile for _ in range(40 * 40)), shape=(40960, 40960), dtype=np.uint8, tile=(1024, 1024),
                 compression="zlib")
    rows.append((f"  bomb.tif on disk: {(root / 'bomb.tif').stat().st_size // 1024} KiB for 40960 x 40960", 0, "", "yes",
                 "none", True))
    case("zlib tif that expands to 1.6 GB (limit 1G)", seg + ["bomb.tif", *M, "--output", "bomb"], {2},
         env={"NAPARI_UNET_MEMORY_LIMIT": "1G"})
    case("--tile 100000", seg + ["cells.tif", *M, "--output", "bigtile", "--tile", "100000", "-q"], {0})
    card = json.loads(meta["model"])
    for k, v in (("depth", 200), ("base_channels", 100000)):
        c = json.loads(json.dumps(card))
        c["architecture"][k] = v
        save_file(load_file(str(root / "small.safetensors")), str(root / f"crafted_{k}.safetensors"),
                  metadata={**meta, "model": json.dumps(c)})
        case(f"model header declaring {k} {v}", seg + ["cells.tif", "--model", f"crafted_{k}.safetensors", "--output", "c"], {2})

    # 5. one line, exit status
    case("--output under a file", seg + ["cells.tif", *M, "--output", "cells.tif/sub"], {2})
    case("train --output a folder", train + ["--output", "out"], {2})
    case("--validate-every 0", train + ["--output", "v.safetensors", "--validate-every", "0"], {2})
    case("--learning-rate 1e4", train + ["--output", "v.safetensors", "--learning-rate", "1e4"], {2})
    tifffile.imwrite(root / "stack.tif", np.stack([inst, inst]))
    tifffile.imwrite(root / "neg.tif", -inst.astype(np.int32))
    case("evaluate a 3D stack", ["evaluate", "--predictions", "stack.tif", "--truth", "cells_truth.tif"], {2})
    case("evaluate negative ids", ["evaluate", "--predictions", "neg.tif", "--truth", "cells_truth.tif"], {2})
    c = json.loads(json.dumps(card))
    c["postprocessing"]["threshold"] = "0.5"
    save_file(load_file(str(root / "small.safetensors")), str(root / "strthr.safetensors"),
              metadata={**meta, "model": json.dumps(c)})
    case("model header with a string threshold", seg + ["cells.tif", "--model", "strthr.safetensors", "--output", "s"], {2})
    big = np.tile(img, (6, 6))
    tifffile.imwrite(root / "big1.tif", big)
    tifffile.imwrite(root / "big2.tif", big)
    case("Ctrl-C during segment (2 large images)", seg + ["cells.tif", "big1.tif", "big2.tif", *M, "--output", "cc", "-q"],
         {130}, signal_after=12)
    case("SIGTERM during segment", seg + ["big1.tif", *M, "--output", "term", "-q"], {143}, signal_after=10,
         sig=signal.SIGTERM)
    (root / "broken.tif").write_bytes(b"not a tif")
    case("batch with an unreadable file in the middle", seg + ["cells.tif", "broken.tif", "nan.tif", *M, "--output",
                                                               "batch", "-q"], {2})
    rows[-1] = rows[-1][:2] + (rows[-1][2] + " | written: " + ", ".join(sorted(p.name for p in (root / "batch").iterdir())),) \
        + rows[-1][3:]
    case("train interrupted (Ctrl-C) at ~25 s", ["train", "--images", "cells.tif", "--labels", "cells_truth.tif",
                                                 "--label-format", "instances", "--model", "small.safetensors", "--iterations", "2000", "--tile",
                                                 "124", "--output", "ft.safetensors", "--precision", "float32", "-q"],
         {130}, signal_after=25)
    from napari_unet.modelheader import read_model_info

    prov = read_model_info(root / "ft.safetensors")["provenance"]
    rows.append(("  ... its card", 0, json.dumps({k: prov[k] for k in ("trained_from", "iterations",
                                                                      "iterations_planned", "finished")}), "yes", "none",
                 prov["finished"] is False))

    # 6. smaller validations
    for extra in (["--batch-size", "0"], ["--threshold", "2"], ["--threshold", "nan"], ["--min-size", "-5"]):
        case(" ".join(extra), seg + ["cells.tif", *M, "--output", "x", *extra], {2})
    case("train --tile 0", train + ["--output", "t0.safetensors", "--tile", "0"], {2})
    os.mkfifo(root / "fifo.tif")
    case("a FIFO as --labels", ["train", "--images", "cells.tif", "--labels", "fifo.tif", "--output", "f.safetensors"],
         {2}, timeout=60)
    case("--model ''", seg + ["cells.tif", "--model", "", "--output", "x"], {2})

    print("| case | exit | last line on stderr | old files kept | .part left | as expected |")
    print("|---|---|---|---|---|---|")
    for name, rc, line, kept, parts, ok in rows:
        line = line.replace(str(root) + "/", "").replace("|", "/")
        print(f"| {name} | {rc} | {line} | {kept} | {parts} | {'yes' if ok else 'NO'} |")
    print(f"\n{sum(r[-1] for r in rows)} of {len(rows)} as expected; work folder {root}")
    return 0 if all(r[-1] for r in rows) else 1


def run_clean(root: Path, M) -> Path:
    subprocess.run(PY + ["segment", "cells.tif", *M, "--output", "clean", "-q"], cwd=root, check=True)
    return root / "clean" / "cells_labels.tif"


if __name__ == "__main__":
    sys.exit(main())
