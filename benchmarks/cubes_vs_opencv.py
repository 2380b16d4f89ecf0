"""Object cubes of pkgnet against the published preprocessing done with OpenCV.

    python3 benchmarks/cubes_vs_opencv.py [--data ../shared/data/ped2] [--every 1]

For every frame t of the test clips (every `--every`-th) and every box of
it: crop frame[ceil(y1):ceil(y2), ceil(x1):ceil(x2)] from frames t-4..t
(the clip's first frame repeated before its start) and cv2.resize to 32x32
(INTER_LINEAR), against pkgnet.cubes on the same decoded frames. Prints the
largest grey-level difference and the share of identical values.
"""

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bindings" / "python"))

import cv2  # noqa: E402

import pkgnet  # noqa: E402


def published_cube(frames, box):
    x1, y1, x2, y2 = (math.ceil(v) for v in box)
    h, w = frames[0].shape[:2]
    x1, x2 = max(0, min(x1, w)), max(0, min(x2, w))
    y1, y2 = max(0, min(y1, h)), max(0, min(y2, h))
    return np.stack([cv2.resize(f[y1:y2, x1:x2], (32, 32), interpolation=cv2.INTER_LINEAR) for f in frames])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ped2"))
    parser.add_argument("--every", type=int, default=1)
    args = parser.parse_args()
    testing = Path(args.data) / "testing"
    worst, equal, total, cubes_compared = 0, 0, 0, 0
    for clip in sorted((testing / "frames").iterdir()):
        paths = sorted(clip.iterdir())
        frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
        rows = np.loadtxt(testing / "boxes" / f"{clip.name}.csv", delimiter=",", skiprows=1, ndmin=2)
        for t in range(0, len(frames), args.every):
            boxes = rows[rows[:, 0] == t][:, 1:5].astype(np.float32)
            if len(boxes) == 0:
                continue
            past = [frames[max(i, 0)] for i in range(t - 4, t + 1)]
            ours = pkgnet.cubes(past, boxes)
            for box, cube in zip(boxes, ours):
                theirs = published_cube(past, box)
                diff = np.abs(cube.astype(np.int16) - theirs.astype(np.int16))
                worst = max(worst, int(diff.max()))
                equal += int((diff == 0).sum())
                total += diff.size
                cubes_compared += 1
        print(f"clip {clip.name}: {len(frames)} frames, running max |diff| {worst}", flush=True)
    print(f"{cubes_compared} cubes, {total} values: max |diff| {worst} grey levels, {100 * equal / total:.4f}% identical")


if __name__ == "__main__":
    main()
