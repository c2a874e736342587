"""Peak memory of one forward pass (inference) and of forward + backward (training) on the CPU,
per input pixel, against the estimates napari-unet uses to refuse a job before allocating
(``napari_unet.tileplan.peak_bytes_per_pixel``). Each measurement runs in a fresh subprocess
(peak RSS growth over a warmed-up network).

    python benchmarks/bench_activation_memory.py
"""

from __future__ import annotations

import subprocess
import sys

CHILD = r"""
import resource, sys, torch
from napari_unet.model import UNet, UNetConfig, valid_input_size
from napari_unet.tileplan import peak_bytes_per_pixel
torch.set_num_threads(2)
base, edge, training = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
cfg = UNetConfig(base_channels=base)
net = UNet(cfg).train(training)
if not training:
    net = net.to(memory_format=torch.channels_last)
n = valid_input_size(cfg, edge)
def step(k):
    x = torch.zeros(1, 1, k, k)
    if training:
        net(x).sum().backward()
    else:
        with torch.inference_mode():
            torch.softmax(net(x.contiguous(memory_format=torch.channels_last)), 1)
step(188)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
step(n)
r1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(n, (r1 - r0) / n / n, peak_bytes_per_pixel(cfg, "float32", training=training))
"""


def main():
    print("| base | tile | pass | measured peak (MiB) | measured B/px | estimate B/px | estimate / measured |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for training in (False, True):
        for base in (16, 64):
            for edge in ((1004, 2044) if not training else (508, 1004)):
                out = subprocess.run([sys.executable, "-c", CHILD, str(base), str(edge), "1" if training else "0"],
                                     capture_output=True, text=True, check=True).stdout.split()
                n, bpp, est = int(out[0]), float(out[1]), float(out[2])
                print(f"| {base} | {n} | {'train' if training else 'infer'} | {bpp * n * n / 2**20:.0f} | {bpp:.0f} | "
                      f"{est:.0f} | {est / bpp:.2f} |")


if __name__ == "__main__":
    main()
