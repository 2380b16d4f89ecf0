"""The whole pipeline with the built-in detector on UCSD Ped2: frames/s of
detect + propose + crop + score, agreement with OpenCV's darknet importer,
and the Ped2 AUROC with pkgnet's own boxes next to the data set's.

    python3 benchmarks/pipeline_detector.py                 # speed, 2 threads
    python3 benchmarks/pipeline_detector.py --agreement     # + OpenCV agreement
    python3 benchmarks/pipeline_detector.py --auroc         # + AUROC through `pkgnet eval`

Frames are decoded before timing (the library takes raw frames). The model
is --model, or a random-weight model of the paper's edge layout (k=2, w=16,
resnet18) until a trained one ships: its AUROC only shows that the paths
work and must be measured again with a trained model. The machine's load
average is printed: on a shared machine the figures move a lot.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bindings" / "python"))

import pkgnet  # noqa: E402
from pkgnet import synthetic  # noqa: E402

SHARED = REPO.parent / "shared"
PED2 = SHARED / "data" / "ped2"
WEIGHTS = SHARED / "weights" / "yolo-fastest-1.1"
CLASSES = ["person", "bicycle", "car", "motorbike", "bus", "truck"]


def load_frames(video, first, n):
    import cv2
    folder = PED2 / "testing" / "frames" / video
    files = sorted(folder.glob("*.jpg"))[first:first + n]
    if not files:
        sys.exit(f"no frames in {folder}")
    return [cv2.imread(str(f)) for f in files]


def rate(fn, frames, rounds):
    """Best frames/s over `rounds` passes over the frames (first pass warms up)."""
    best = 0.0
    for _ in range(rounds + 1):
        start = time.perf_counter()
        fn(frames)
        best = max(best, len(frames) / (time.perf_counter() - start))
    return best


def speed(args, model, frames):
    detector = pkgnet.Detector(args.cfg, args.weights)

    def detect_only(fs):
        for f in fs:
            detector.detect(f, confidence=0.5, classes=CLASSES, threads=args.threads)

    def pipeline(with_detector):
        def run(fs):
            with pkgnet.Stream(model, use_motion=True, threads=args.threads) as stream:
                if with_detector:
                    detector.attach(stream, confidence=0.5, classes=CLASSES, threads=args.threads)
                for f in fs:
                    stream.push(f)
                stream.finish()
        return run

    print(f"load average before: {' '.join('%.2f' % v for v in os.getloadavg())}")
    results = [
        ("detector alone (resize, network, decode, NMS)", rate(detect_only, frames, args.rounds)),
        ("pipeline: detect + motion proposals + crop + score", rate(pipeline(True), frames, args.rounds)),
        ("pipeline without detector: motion + crop + score", rate(pipeline(False), frames, args.rounds)),
    ]
    try:
        import cv2
        cv2.setNumThreads(args.threads)
        net = cv2.dnn.readNetFromDarknet(str(args.cfg), str(args.weights))
        outputs = net.getUnconnectedOutLayersNames()

        def opencv(fs):
            for f in fs:
                net.setInput(cv2.dnn.blobFromImage(f, 1 / 255.0, (320, 320), swapRB=True, crop=False))
                net.forward(outputs)
        results.append(("OpenCV darknet importer: blob + forward (reference)", rate(opencv, frames, args.rounds)))
    except ImportError:
        pass
    for what, fps in results:
        print(f"{what:55s} {fps:7.1f} frames/s  ({1000 / fps:6.1f} ms/frame)")
    print(f"load average after:  {' '.join('%.2f' % v for v in os.getloadavg())}")


def agreement(args, frames):
    import cv2
    detector = pkgnet.Detector(args.cfg, args.weights)
    net = cv2.dnn.readNetFromDarknet(str(args.cfg), str(args.weights))
    heads = ["conv_%d" % (int(n.split("_")[1]) - 1) for n in net.getUnconnectedOutLayersNames()]
    worst_abs = worst_rel = 0.0
    same_count = objects = 0
    min_iou, max_conf = 1.0, 0.0
    for f in frames:
        net.setInput(cv2.dnn.blobFromImage(f, 1 / 255.0, (320, 320), swapRB=True, crop=False))
        ref = net.forward(heads + list(net.getUnconnectedOutLayersNames()))
        for h in range(len(heads)):
            d = np.abs(detector.raw_output(f, h) - ref[h][0])
            worst_abs = max(worst_abs, float(d.max()))
            worst_rel = max(worst_rel, float((d / np.maximum(1, np.abs(ref[h][0]))).max()))
        ours = detector.detect(f, confidence=0.25, nms=0.45)
        theirs = reference_objects(cv2, np.concatenate(ref[len(heads):]), f.shape, 0.25, 0.45)
        same_count += len(ours) == len(theirs[1])
        for b, c, k in zip(*theirs):
            match = [j for j in range(len(ours)) if ours.class_id[j] == k]
            if not match:
                continue
            j = max(match, key=lambda j: iou(ours.box[j], b))
            min_iou = min(min_iou, iou(ours.box[j], b))
            max_conf = max(max_conf, abs(float(ours.confidence[j]) - float(c)))
            objects += 1
    print(f"OpenCV agreement on {len(frames)} frames: raw heads max |diff| {worst_abs:.2e} "
          f"(relative {worst_rel:.2e}); same object count on {same_count}/{len(frames)} frames; "
          f"{objects} objects: min IoU {min_iou:.5f}, max confidence diff {max_conf:.2e}")


def reference_objects(cv2, rows, shape, confidence, nms):
    h, w = shape[:2]
    ids = rows[:, 5:].argmax(axis=1)
    conf = rows[np.arange(len(rows)), 5 + ids]
    keep = conf > confidence
    rows, ids, conf = rows[keep], ids[keep], conf[keep]
    boxes = np.stack([(rows[:, 0] - rows[:, 2] / 2) * w, (rows[:, 1] - rows[:, 3] / 2) * h,
                      (rows[:, 0] + rows[:, 2] / 2) * w, (rows[:, 1] + rows[:, 3] / 2) * h], axis=1)
    kept = []
    for c in np.unique(ids):
        idx = np.nonzero(ids == c)[0]
        rects = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes[idx]]
        kept.extend(idx[np.asarray(cv2.dnn.NMSBoxes(rects, conf[idx].tolist(), confidence, nms), int).reshape(-1)])
    boxes = boxes[kept]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return boxes, conf[kept], ids[kept]


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 1.0


def auroc(args, model_path):
    cli = Path(args.cli)
    if not cli.exists():
        sys.exit(f"{cli} not found: build it (make build) or pass --cli")
    runs = [("given (the data set's boxes)", ["--boxes", "given"]),
            ("given+motion", ["--boxes", "given+motion"]),
            ("detector+motion (pkgnet's own boxes)", ["--boxes", "detector+motion", "--detector-cfg", str(args.cfg),
                                                      "--detector-weights", str(args.weights),
                                                      "--detector-classes", ",".join(CLASSES)])]
    for what, extra in runs:
        cmd = [str(cli), "eval", "--model", str(model_path), "--data", str(PED2), "--threads", str(args.threads),
               "--quiet", *extra]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
        value = re.search(r"^AUROC (\S+)$", out.stdout, re.M).group(1)
        fps = re.search(r"([0-9.]+) frames/s", out.stdout).group(1)
        print(f"Ped2 AUROC, {what:38s} {value}  ({fps} frames/s)")
        print("    " + " ".join(cmd))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model file (default: a random-weight k=2, w=16, resnet18 model)")
    p.add_argument("--cfg", type=Path, default=WEIGHTS / "yolo-fastest-1.1.cfg")
    p.add_argument("--weights", type=Path, default=WEIGHTS / "yolo-fastest-1.1.weights")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--video", default="01")
    p.add_argument("--frames", type=int, default=60, help="frames timed per pass")
    p.add_argument("--rounds", type=int, default=2, help="timed passes (the best counts)")
    p.add_argument("--agreement", action="store_true", help="compare with OpenCV on every 10th frame of every test video")
    p.add_argument("--auroc", action="store_true", help="AUROC of the box sources through `pkgnet eval`")
    p.add_argument("--cli", default=str(REPO / ".build" / "release" / "pkgnet"))
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_path = args.model
        if model_path is None:
            model_path = Path(tmp) / "random.safetensors"
            synthetic.random_model(model_path, k=2, width=16, arch="resnet18", seed=1)
            print("model: random weights (k=2, w=16, resnet18): AUROC figures must be redone with a trained model")
        model = pkgnet.Model(model_path, threads=args.threads)
        print(f"detector: {args.cfg.name}, {args.threads} threads, Ped2 video {args.video}, {args.frames} frames")
        speed(args, model, load_frames(args.video, 0, args.frames))
        if args.agreement:
            frames = []
            for video in sorted(p.name for p in (PED2 / "testing" / "frames").iterdir()):
                frames += load_frames(video, 0, 10_000)[::10]
            agreement(args, frames)
        if args.auroc:
            auroc(args, model_path)


if __name__ == "__main__":
    main()
