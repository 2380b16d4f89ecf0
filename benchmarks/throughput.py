"""Scoring throughput of libpkgnet.so: cubes/s per batch size and thread count.

    python3 benchmarks/throughput.py [--model M.safetensors] [--threads 2] [--batches 1 128]

Without --model, a random-weight model of the paper's size (k=2, w=64,
resnet50 teacher) is made in a temporary folder. Batch sizes are timed in
turn, round after round, so that machine noise spreads over all of them;
the figures are medians. GFLOP/s counts the direct convolutions' FLOPs
(2 per multiply-add) of student and teacher.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bindings" / "python"))

import pkgnet  # noqa: E402
from pkgnet import safetensors_io, synthetic  # noqa: E402


def output_side(name, bottleneck):
    """Side of the map a student or teacher conv writes, from its parameter name."""
    student = [("encoder.in_conv", 32), ("encoder.down1", 16), ("encoder.down2", 8), ("encoder.down3", 4),
               ("decoder.up1", 8), ("decoder.up2", 16), ("decoder.up3", 32), ("decoder.outconv", 32)]
    for prefix, side in student:
        if name.startswith("student." + prefix):
            return side
    if name.startswith("teacher.conv1"):
        return 16
    if name.startswith("teacher.layer1"):
        return 8
    # A Bottleneck strides in its 3x3 conv: layer2's first 1x1 still runs at 8x8.
    if name.startswith("teacher.layer2.0.conv1") and bottleneck:
        return 8
    return 4


def gflop_per_cube(path):
    entries, _ = safetensors_io.read_header(path)
    bottleneck = "teacher.layer1.0.conv3.weight" in entries
    macs = 0
    for name, (_, shape, _, _) in entries.items():
        if not name.endswith("weight") or len(shape) != 4:
            continue
        a, b, kh, kw = shape
        side = output_side(name, bottleneck)
        if name.endswith(".up.weight"):  # ConvTranspose2d [in, out, k, k] runs on the input grid
            side //= 2
        macs += a * b * kh * kw * side * side
    return 2 * macs / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 128])
    parser.add_argument("--seconds", type=float, default=20, help="wall time per thread count")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            path = os.path.join(tmp, "k2-w64-resnet50.safetensors")
            synthetic.random_model(path, k=2, width=64, arch="resnet50", seed=0)
        gflop = gflop_per_cube(path)
        print(pkgnet.system_info())
        print(f"model {path}: {gflop:.3f} GFLOP per cube")
        cubes = {n: synthetic.random_cubes(n, seed=n) for n in args.batches}
        for threads in args.threads:
            model = pkgnet.Model(path, threads=threads)
            for n in args.batches:  # warm-up: workspaces grow to size
                model.score(cubes[n])
            times = {n: [] for n in args.batches}
            start = time.perf_counter()
            while time.perf_counter() - start < args.seconds or min(len(t) for t in times.values()) < 3:
                for n in args.batches:
                    t0 = time.perf_counter()
                    model.score(cubes[n])
                    times[n].append(time.perf_counter() - t0)
            for n in args.batches:
                rate = n / statistics.median(times[n])
                print(f"threads {threads}  batch {n:4d}  {rate:8.1f} cubes/s  {rate * gflop:6.1f} GFLOP/s"
                      f"  ({len(times[n])} runs)")
            model.close()


if __name__ == "__main__":
    main()
