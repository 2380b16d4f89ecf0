"""Largest score differences of libpkgnet to its references.

    python3 benchmarks/accuracy.py

1. Against the float64 numpy reference (bindings/python/tests/reference.py)
   on random-weight models with non-trivial BatchNorm statistics, for k=1
   and k=2 and each teacher architecture.
2. Against the PyTorch reference's outputs in ../shared/golden (real torch
   checkpoints converted with pkgnet.convert), where present.
Relative differences: |engine - reference| / max(|reference|, 1e-6) per
score; the largest over cubes and components is printed.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bindings" / "python"), str(ROOT / "bindings" / "python" / "tests")]

import pkgnet  # noqa: E402
from pkgnet import convert, synthetic  # noqa: E402
from reference import read_safetensors, reference_scores  # noqa: E402
from support import GOLDEN_CASES, shared_dir  # noqa: E402

ARCH_WIDTH = {"resnet18": 16, "resnet34": 16, "resnet50": 64, "resnext50_32x4d": 64, "wide_resnet50_2": 64}


def relative(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-6)))


def main():
    worst = 0.0
    cubes = synthetic.random_cubes(8, seed=5)
    with tempfile.TemporaryDirectory() as tmp:
        print("engine vs float64 numpy reference (8 cubes, random weights):")
        for arch, width in ARCH_WIDTH.items():
            for k in (1, 2):
                path = f"{tmp}/{arch}-k{k}.safetensors"
                synthetic.random_model(path, k=k, width=width, arch=arch, seed=k)
                with pkgnet.Model(path) as model:
                    got = model.score(cubes)
                ref = reference_scores(path, cubes)
                e = relative(got.prediction_error, ref["prediction_error"])
                c = relative(got.inconsistency, ref["inconsistency"])
                worst = max(worst, e, c)
                print(f"  {arch:16s} k={k} w={width:2d}  prediction error {e:.1e}  inconsistency {c:.1e}")
        golden = shared_dir() / "golden"
        if golden.exists():
            print("engine vs PyTorch reference outputs (../shared/golden):")
            for case, (k, width, arch, teacher) in GOLDEN_CASES.items():
                folder = golden / case
                path = f"{tmp}/{case}.safetensors"
                convert.convert(str(folder / "student.pt"), str(folder / teacher), arch, k, "pred", path)
                io = read_safetensors(folder / "io.safetensors")[0]
                with pkgnet.Model(path) as model:
                    got = model.score(io["cubes"], prediction=True)
                e = relative(got.prediction_error, io["prediction_error"])
                c = relative(got.inconsistency, io["inconsistency"])
                p = float(np.max(np.abs(got.prediction - io["prediction"])) / np.max(np.abs(io["prediction"])))
                worst = max(worst, e, c)
                print(f"  {case:18s} prediction error {e:.1e}  inconsistency {c:.1e}  prediction (scaled) {p:.1e}")
    print(f"largest relative score difference: {worst:.1e}")


if __name__ == "__main__":
    main()
