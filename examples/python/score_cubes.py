#!/usr/bin/env python3
"""Scores object cubes with a pkgnet model and prints a table.

    score_cubes.py                          # random model and cubes, in a temp dir
    score_cubes.py MODEL.safetensors        # the model, on random cubes
    score_cubes.py MODEL.safetensors CUBES  # CUBES: .npy (uint8 [N,5,32,32,C] or
                                            # float32 [N,5C,32,32]) or raw uint8 .u8

A model file comes from `python -m pkgnet.convert` (PyTorch checkpoints) or
pkgnet.synthetic.random_model (random weights, for trying things out).
"""

import argparse
import os
import sys
import tempfile
import time

try:
    import pkgnet
except ImportError:  # run from a checkout without installing the binding
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bindings", "python"))
    import pkgnet

import numpy as np


def load_cubes(path: str, channels: int) -> np.ndarray:
    if path.endswith(".npy"):
        return np.load(path)
    raw = np.fromfile(path, dtype=np.uint8)
    cube = 5 * 32 * 32 * channels
    if raw.size % cube:
        raise SystemExit(f"{path}: {raw.size} bytes is not a whole number of 5x32x32x{channels} cubes")
    return raw.reshape(-1, 5, 32, 32, channels)


def print_table(scores: "pkgnet.Scores") -> None:
    k = scores.inconsistency.shape[1]
    header = ["cube", "pred_error"] + [f"incons_{j + 1}" for j in range(k)] + ["combined"]
    print("  ".join(f"{h:>12}" for h in header))
    for i in range(len(scores)):
        row = [f"{i:>12d}", f"{scores.prediction_error[i]:12.6g}"]
        row += [f"{v:12.6g}" for v in scores.inconsistency[i]]
        row.append(f"{scores.combined[i]:12.6g}")
        print("  ".join(row))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="pkgnet model file (.safetensors)")
    ap.add_argument("cubes", nargs="?", help="cubes: .npy or raw uint8 [N,5,32,32,C]")
    ap.add_argument("-n", type=int, default=8, help="random cubes to make when no CUBES are given (default 8)")
    ap.add_argument("--threads", type=int, default=0, help="threads per call (default: all CPUs)")
    args = ap.parse_args(argv)

    print(f"libpkgnet {pkgnet.version()}")
    print(pkgnet.system_info())
    print()

    with tempfile.TemporaryDirectory(prefix="pkgnet-demo-") as tmp:
        model_path = args.model
        if model_path is None:
            from pkgnet import synthetic

            model_path = os.path.join(tmp, "random_k2_w16_resnet18.safetensors")
            synthetic.random_model(model_path, k=2, width=16, arch="resnet18", task="pred",
                                   channels=3, seed=0, dtype="f32")
            print(f"no model given: made a random-weight model at {model_path}")

        try:
            model = pkgnet.Model(model_path, threads=args.threads)
        except pkgnet.Error as exc:
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        with model:
            i = model.info
            print(f"model: k={i.k} width={i.width} teacher={i.teacher} task={i.task} "
                  f"channels={i.channels} order={i.channel_order} pairs={i.pairs} sizes={list(i.pair_size)}")
            if args.cubes:
                cubes = load_cubes(args.cubes, i.channels)
            else:
                from pkgnet import synthetic

                cubes = synthetic.random_cubes(args.n, channels=i.channels, seed=1)
                print(f"no cubes given: scoring {len(cubes)} random cubes")
            try:
                t0 = time.perf_counter()
                scores = model.score(cubes)
                dt = time.perf_counter() - t0
            except pkgnet.Error as exc:
                print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
        print()
        print_table(scores)
        if len(scores):
            print(f"\n{len(scores)} cubes in {dt * 1e3:.1f} ms ({dt * 1e3 / len(scores):.2f} ms per cube)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
