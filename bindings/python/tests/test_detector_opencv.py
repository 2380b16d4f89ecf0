"""pkgnet's Yolo-Fastest 1.1 detector against OpenCV's darknet importer
(cv2.dnn.readNetFromDarknet, the reference) on Ped2 frames and a colour
image of another size: the raw yolo head outputs element by element, then
the objects after NMS (same count, same classes, IoU > 0.99, confidences
within 1e-4).

The reference postprocessing is OpenCV's object detection sample: each
Region row reports its best class (restricted to the allowed classes), rows
with confidence > threshold become boxes in frame pixels (centre and size
scaled by the frame's width and height), cv2.dnn.NMSBoxes per class, then
clipping to the frame.
"""

import numpy as np
import pytest

import pkgnet
from support import need_shared

cv2 = pytest.importorskip("cv2")

MODELS = ["yolo-fastest-1.1", "yolo-fastest-1.1-xl"]
# (video, frame): people near and far, cyclists, a cart.
PED2_FRAMES = [("01", 100), ("03", 40), ("05", 130), ("07", 20), ("09", 60), ("11", 150)]


@pytest.fixture(scope="module", params=MODELS)
def pair(request):
    folder = need_shared("weights", "yolo-fastest-1.1")
    cfg, weights = folder / (request.param + ".cfg"), folder / (request.param + ".weights")
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    return pkgnet.Detector(cfg, weights), net


def ped2_frame(video, index):
    return cv2.imread(str(need_shared("data", "ped2", "testing", "frames", video, "%03d.jpg" % index)))


def colour_image():
    """500x375 BGR: Ped2 content stretched, channels scaled differently and a
    colour ramp added, so that a swapped channel order or axis shows."""
    base = cv2.resize(ped2_frame("05", 130), (500, 375), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    ramp = np.linspace(0, 60, 500, dtype=np.float32)[None, :]
    base[:, :, 0] = base[:, :, 0] * 0.55 + ramp
    base[:, :, 1] *= 0.85
    base[:, :, 2] = base[:, :, 2] * 1.1 + np.linspace(0, 40, 375, dtype=np.float32)[:, None]
    return np.clip(base, 0, 255).astype(np.uint8)


def images():
    return [("ped2 %s/%03d" % f, lambda f=f: ped2_frame(*f)) for f in PED2_FRAMES] + [("colour 500x375", colour_image)]


def cv_forward(net, image, names):
    net.setInput(cv2.dnn.blobFromImage(image, 1 / 255.0, (320, 320), swapRB=True, crop=False))
    return net.forward(names)


def head_layer_names(net):
    """The convolutions feeding the yolo layers (darknet index - 1), in order."""
    return ["conv_%d" % (int(name.split("_")[1]) - 1) for name in net.getUnconnectedOutLayersNames()]


def cv_detections(net, image, confidence, nms, classes=None):
    h, w = image.shape[:2]
    rows = np.concatenate(cv_forward(net, image, list(net.getUnconnectedOutLayersNames())))
    scores = rows[:, 5:].copy()
    if classes is not None:
        mask = np.zeros(scores.shape[1], bool)
        mask[classes] = True
        scores[:, ~mask] = -1
    ids = scores.argmax(axis=1)
    conf = scores[np.arange(len(rows)), ids]
    keep = conf > confidence
    rows, ids, conf = rows[keep], ids[keep], conf[keep]
    cx, cy, bw, bh = (rows[:, 0] * np.float32(w), rows[:, 1] * np.float32(h),
                      rows[:, 2] * np.float32(w), rows[:, 3] * np.float32(h))
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    kept = []
    for c in np.unique(ids):
        idx = np.nonzero(ids == c)[0]
        rects = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes[idx]]
        chosen = cv2.dnn.NMSBoxes(rects, conf[idx].tolist(), float(confidence), float(nms))
        kept.extend(idx[np.asarray(chosen, int).reshape(-1)])
    kept = np.array(sorted(kept, key=lambda i: -conf[i]), int)
    out = boxes[kept]
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
    return out, conf[kept], ids[kept]


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 1.0


def assert_same_objects(ours, ref, what):
    boxes, conf, ids = ref
    assert len(ours) == len(conf), f"{what}: pkgnet found {len(ours)} objects, OpenCV {len(conf)}"
    unmatched = list(range(len(ours)))
    for b, c, k in zip(boxes, conf, ids):
        candidates = [j for j in unmatched if ours.class_id[j] == k]
        assert candidates, f"{what}: no pkgnet object of class {k} left for OpenCV's {b} ({c})"
        j = max(candidates, key=lambda j: iou(ours.box[j], b))
        assert iou(ours.box[j], b) > 0.99, f"{what}: IoU {iou(ours.box[j], b)} for {ours.box[j]} vs {b}"
        assert abs(ours.confidence[j] - c) <= 1e-4, f"{what}: confidence {ours.confidence[j]} vs {c}"
        unmatched.remove(j)


@pytest.mark.parametrize("name,make", images(), ids=[n for n, _ in images()])
def test_raw_heads_match_opencv(pair, name, make):
    detector, net = pair
    image = make()
    theirs = cv_forward(net, image, head_layer_names(net))
    assert len(theirs) == detector.info.heads
    for head, ref in enumerate(theirs):
        ours = detector.raw_output(image, head)
        assert ours.shape == ref.shape[1:], f"{name}: head {head} shape"
        np.testing.assert_allclose(ours, ref[0], rtol=1e-4, atol=1e-4, err_msg=f"{name}: head {head}")


@pytest.mark.parametrize("name,make", images(), ids=[n for n, _ in images()])
@pytest.mark.parametrize("confidence,nms", [(0.25, 0.45), (0.5, 0.4)])
def test_detections_match_opencv(pair, name, make, confidence, nms):
    detector, net = pair
    image = make()
    ours = detector.detect(image, confidence=confidence, nms=nms)
    assert_same_objects(ours, cv_detections(net, image, confidence, nms), name)


def test_class_filter_matches_opencv(pair):
    detector, net = pair
    total = 0
    for video, index in PED2_FRAMES:
        image = ped2_frame(video, index)
        ours = detector.detect(image, confidence=0.25, classes=["person", "bicycle", "car"])
        assert set(ours.class_id.tolist()) <= {0, 1, 2}
        assert_same_objects(ours, cv_detections(net, image, 0.25, 0.45, classes=[0, 1, 2]), f"{video}/{index}")
        total += len(ours)
    assert total > 0, "no person, bicycle or car on six Ped2 frames"


def test_frame_formats_agree(pair):
    """A grey frame is read as its BGR conversion, an RGB frame as its BGR twin."""
    detector, _ = pair
    bgr = colour_image()
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    a = detector.detect(grey)
    b = detector.detect(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    np.testing.assert_array_equal(a.box, b.box)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    c = detector.detect(bgr)
    d = detector.detect(np.ascontiguousarray(bgr[:, :, ::-1]), frame_order="rgb")
    np.testing.assert_array_equal(c.box, d.box)
    assert len(c) > 0
