"""OpenCV references for pkgnet's object cubes and motion proposals.

Run as ``python3 make_video_fixtures.py OUTDIR``: reads real Ped2 frames from
the shared data folder, computes with OpenCV what pkgnet must reproduce, and
writes raw files plus ``OUTDIR/manifest.json`` for the Swift tests
(Tests/PkgnetTests/VideoOpenCVTests.swift). Exit status 3 (with a message on
stderr) means "cannot run here": OpenCV or the shared data is missing.

The same functions are the references of test_video_opencv.py.

Published steps reproduced here:
  cubes      frame[ceil(y1):ceil(y2), ceil(x1):ceil(x2)] (bounds clipped to the
             frame) -> cv2.resize(crop, (32, 32)) (INTER_LINEAR)
  proposals  cv2.GaussianBlur(f, (k, k), 0) of frames t-1, t, t+1; the sum of
             the two cv2.absdiff in int16 (pkgnet does not wrap like the
             published uint8 sum); cv2.threshold THRESH_BINARY; detector boxes
             (astype int32, grown by 2, inclusive) zeroed; cv2.cvtColor
             BGR2GRAY; cv2.findContours(RETR_EXTERNAL, CHAIN_APPROX_SIMPLE);
             cv2.boundingRect; area and aspect rules; grown by 2 and clipped.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

SKIP = 3

SCENES = {
    # name: (blur kernel, threshold, min proposal area, margin, max aspect)
    "ped2": (3, 18, 100, 2, 10),
    "avenue": (5, 18, 1600, 2, 10),
    "shanghaitech": (5, 15, 1600, 2, 10),
}


def import_cv2():
    """cv2, or None when opencv-python(-headless) is not installed."""
    try:
        import cv2  # noqa: PLC0415
    except ImportError:
        return None
    return cv2


def shared_dir():
    """As support.shared_dir (without importing pytest): $PKGNET_SHARED_DIR, else
    the folder 'shared' beside the repo root."""
    env = os.environ.get("PKGNET_SHARED_DIR")
    return Path(env).resolve() if env else (Path(__file__).resolve().parents[4] / "shared").resolve()


def ped2_dir():
    return shared_dir() / "data" / "ped2"


def read_boxes(csv_path):
    """frame index -> list of [x1, y1, x2, y2] (float32 values as in the file)."""
    boxes = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            boxes.setdefault(int(row["frame"]), []).append(
                [float(np.float32(row[k])) for k in ("x1", "y1", "x2", "y2")])
    return boxes


# ---- cubes ----

def crop_bounds(box, width, height):
    """(xa, ya, xb, yb) of the published slice with bounds clipped, or None when skipped."""
    x1, y1, x2, y2 = (float(np.float32(v)) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
        return None

    def clip(v, hi):
        return int(min(max(math.ceil(v), 0), hi))

    xa, xb, ya, yb = clip(x1, width), clip(x2, width), clip(y1, height), clip(y2, height)
    if xb <= xa or yb <= ya:
        return None
    return xa, ya, xb, yb


def cv_cubes(cv2, frames, boxes, channels, order="bgr"):
    """uint8 [m][5][32][32][channels] from 5 frames (HxWx3 BGR or HxW grey)."""
    grey_input = frames[0].ndim == 2
    if channels == 1 and not grey_input:
        frames = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    height, width = frames[0].shape[:2]
    out = np.zeros((len(boxes), 5, 32, 32, channels), np.uint8)
    for i, box in enumerate(boxes):
        b = crop_bounds(box, width, height)
        if b is None:
            continue
        xa, ya, xb, yb = b
        for f, frame in enumerate(frames):
            r = cv2.resize(np.ascontiguousarray(frame[ya:yb, xa:xb]), (32, 32))
            if r.ndim == 2:
                r = r[:, :, None]
            if channels == 3 and r.shape[2] == 1:
                r = np.repeat(r, 3, axis=2)
            elif channels == 3 and order == "rgb":
                r = r[:, :, ::-1]
            out[i, f] = r
    return out


def extra_boxes(width, height):
    """Boxes that exercise the edges: exact 32 and 64 (area path), clipped, tiny, whole frame."""
    return [
        [10.0, 20.0, 42.0, 52.0],          # 32x32: a copy
        [100.0, 50.0, 164.0, 114.0],       # 64x64: cv2 takes INTER_AREA
        [-7.5, -3.2, 25.4, 40.9],          # clipped at the top-left
        [width - 20.3, height - 9.9, width + 15.0, height + 4.0],  # clipped at the bottom-right
        [50.5, 60.5, 51.5, 61.5],          # 1x1
        [0.0, 0.0, float(width), float(height)],  # whole frame
        [200.2, 30.7, 203.9, 150.1],       # tall and thin
        [5.0, 5.0, 5.0, 30.0],             # zero width: skipped
    ]


# ---- motion proposals ----

def cv_motion(cv2, frames, detector_boxes, scene):
    """Proposals [[x1, y1, x2, y2], ...] (ints) of frames t-1, t, t+1, sorted."""
    k, thr, min_area, margin, max_aspect = SCENES[scene]
    blurred = [cv2.GaussianBlur(f, (k, k), 0) for f in frames]
    # Wide sum (pkgnet does not wrap; the published uint8 sum would).
    acc = (cv2.absdiff(blurred[0], blurred[1]).astype(np.int16)
           + cv2.absdiff(blurred[1], blurred[2]).astype(np.int16))
    mask = cv2.threshold(acc, thr, 255, cv2.THRESH_BINARY)[1].astype(np.uint8)
    height, width = mask.shape[:2]
    for box in detector_boxes:
        bi = np.array(box, dtype=np.float32).astype(np.int32)
        ey1 = max(0, bi[1] - margin)
        ey2 = min(bi[3] + margin, height)
        ex1 = max(0, bi[0] - margin)
        ex2 = min(bi[2] + margin, width)
        if ey2 >= ey1 and ex2 >= ex1:  # (the published slice would wrap for far-off boxes)
            mask[ey1:ey2 + 1, ex1:ex2 + 1] = 0
    grey = cv2.cvtColor(mask, cv2.COLOR_BGR2GRAY) if mask.ndim == 3 else mask
    contours = cv2.findContours(grey, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    out = []
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        if (w + 1) * (h + 1) > min_area and w / h < max_aspect and h / w < max_aspect:
            out.append([max(0, x - margin), max(0, y - margin),
                        min(x + w + margin, width), min(y + h + margin, height)])
    return sorted(out)


def cv_external_rects(cv2, mask):
    """Sorted [x, y, w, h] of the external contours of a 0/1 mask."""
    contours = cv2.findContours((mask != 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    return sorted(list(cv2.boundingRect(c)) for c in contours)


def random_masks(seed=0):
    """Blobby masks with holes and islands inside holes, plus a sparse noise mask."""
    rng = np.random.default_rng(seed)
    masks = []
    for size, density in (((60, 80), 0.5), ((97, 131), 0.45), ((40, 40), 0.3)):
        noise = rng.random(size)
        # Smooth noise so components are blobs with holes, not single pixels.
        smooth = np.zeros_like(noise)
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                smooth += np.roll(np.roll(noise, dy, 0), dx, 1)
        masks.append((smooth / 25 > np.quantile(smooth / 25, 1 - density)).astype(np.uint8))
    masks.append((rng.random((50, 70)) < 0.2).astype(np.uint8))
    rings = np.zeros((40, 60), np.uint8)
    rings[2:38, 2:38] = 1
    rings[5:35, 5:35] = 0
    rings[8:32, 8:32] = 1     # a ring inside the hole
    rings[11:29, 11:29] = 0
    rings[15:20, 15:20] = 1   # an island inside that ring's hole
    rings[0:10, 45:60] = 1    # touches the frame edge
    masks.append(rings)
    return masks


# ---- fixtures for the Swift tests ----

def write_fixtures(out: Path):
    cv2 = import_cv2()
    if cv2 is None:
        print("OpenCV is not installed (pip install 'opencv-python-headless<5')", file=sys.stderr)
        return SKIP
    root = ped2_dir()
    if not (root / "testing" / "frames").is_dir():
        print("Ped2 frames not found at %s (the shared data folder beside the repo)" % root, file=sys.stderr)
        return SKIP
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"opencv": cv2.__version__, "frames": {}, "cube_cases": [], "motion_cases": [],
                "component_cases": []}

    def frame_entry(name, image):
        if name not in manifest["frames"]:
            (out / (name + ".raw")).write_bytes(np.ascontiguousarray(image).tobytes())
            h, w = image.shape[:2]
            manifest["frames"][name] = {"file": name + ".raw", "width": w, "height": h,
                                        "format": "grey" if image.ndim == 2 else "bgr"}
        return name

    clips = sorted(p.name for p in (root / "testing" / "frames").iterdir() if p.is_dir())
    for clip in clips:
        files = sorted((root / "testing" / "frames" / clip).glob("*.jpg"))
        boxes = read_boxes(root / "testing" / "boxes" / (clip + ".csv"))
        n = len(files)
        cache = {}

        def load(i):
            if i not in cache:
                image = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
                if image is None:
                    raise SystemExit("cannot decode %s" % files[i])
                cache[i] = image
            return cache[i]

        for t in sorted({4, n // 2, n - 2}):
            frames = [load(i) for i in range(t - 4, t + 1)]
            height, width = frames[0].shape[:2]
            frame_boxes = boxes.get(t, []) + extra_boxes(width, height)
            names = [frame_entry("%s_%03d" % (clip, i), load(i)) for i in range(t - 4, t + 1)]
            case = {"clip": clip, "t": t, "frames": names, "boxes": frame_boxes, "variants": []}
            for channels, order in ((3, "bgr"), (3, "rgb"), (1, "bgr")):
                cubes = cv_cubes(cv2, frames, frame_boxes, channels, order)
                file = "cubes_%s_%03d_c%d_%s.raw" % (clip, t, channels, order)
                (out / file).write_bytes(cubes.tobytes())
                case["variants"].append({"format": "bgr", "channels": channels, "order": order, "file": file})
            # Grey frames into a 3-channel model (channel replicated) and a 1-channel one.
            greys = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
            gnames = [frame_entry("%s_%03d_grey" % (clip, i), g) for i, g in zip(range(t - 4, t + 1), greys)]
            for channels in (3, 1):
                cubes = cv_cubes(cv2, greys, frame_boxes, channels)
                file = "cubes_%s_%03d_grey_c%d.raw" % (clip, t, channels)
                (out / file).write_bytes(cubes.tobytes())
                case["variants"].append({"format": "grey", "frames": gnames, "channels": channels,
                                         "order": "bgr", "file": file})
            manifest["cube_cases"].append(case)

            motion_frames = [load(i) for i in (t - 1, t, t + 1)]
            mnames = [frame_entry("%s_%03d" % (clip, i), load(i)) for i in (t - 1, t, t + 1)]
            for scene in SCENES:
                det_all = boxes.get(t, [])
                # All detector boxes, none, and every other one (partial masking).
                for label, det in (("detector", det_all), ("none", []), ("half", det_all[::2])):
                    manifest["motion_cases"].append({
                        "clip": clip, "t": t, "scene": scene, "boxes": label, "frames": mnames,
                        "detector_boxes": det,
                        "expected": cv_motion(cv2, motion_frames, det, scene)})
            # Grey frames too (a single-channel mask path).
            gm = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in motion_frames]
            gmn = [frame_entry("%s_%03d_grey" % (clip, i), g) for i, g in zip((t - 1, t, t + 1), gm)]
            manifest["motion_cases"].append({
                "clip": clip, "t": t, "scene": "ped2", "boxes": "none", "frames": gmn,
                "detector_boxes": [], "expected": cv_motion(cv2, gm, [], "ped2")})

    for i, mask in enumerate(random_masks()):
        file = "mask_%d.raw" % i
        (out / file).write_bytes(np.ascontiguousarray(mask).tobytes())
        manifest["component_cases"].append({"file": file, "width": mask.shape[1], "height": mask.shape[0],
                                            "expected": cv_external_rects(cv2, mask)})

    (out / "manifest.json").write_text(json.dumps(manifest))
    return 0


def main(argv):
    if len(argv) != 2:
        print("usage: make_video_fixtures.py OUTDIR", file=sys.stderr)
        return 2
    return write_fixtures(Path(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
