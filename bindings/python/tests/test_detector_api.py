"""pkgnet.Detector through the binding: loading errors name the file, line
and layer; bad options raise; a stream given a detector scores what it
scores when handed the detector's objects."""

import numpy as np
import pytest

import pkgnet
from pkgnet import synthetic
from support import need_shared

CFG = """[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=14
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1
anchors=6,8, 14,12
classes=2
"""


def weights_for_cfg(seed=0, floats=None):
    """A .weights image for CFG: 20-byte header, BN conv 8x3x3x3, conv 14x8."""
    rng = np.random.default_rng(seed)
    n = 8 * 4 + 8 * 27 + 14 + 14 * 8 if floats is None else floats
    body = rng.normal(0, 0.3, n).astype(np.float32)
    if floats is None:
        body[8:16] = rng.uniform(0.5, 1.5, 8)   # BatchNorm gamma
        body[24:32] = rng.uniform(0.5, 2.0, 8)  # variance: positive
    header = np.array([0, 2, 5], np.int32).tobytes() + np.array([0], np.uint64).tobytes()
    return header + body.tobytes()


@pytest.fixture
def files(tmp_path):
    def write(cfg=CFG, weights=None):
        c, w = tmp_path / "net.cfg", tmp_path / "net.weights"
        c.write_text(cfg)
        w.write_bytes(weights_for_cfg() if weights is None else weights)
        return c, w
    return write


def test_loads_and_describes(files):
    det = pkgnet.Detector(*files())
    assert det.info == pkgnet.DetectorInfo(32, 32, 2, 1, 3, 8 * 4 + 8 * 27 + 14 + 14 * 8)
    assert det.class_names is None
    frame = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    raw = det.raw_output(frame, 0)
    assert raw.shape == (14, 16, 16) and np.isfinite(raw).all()
    everything = det.detect(frame, confidence=0, nms=1)
    assert len(everything) == 2 * 16 * 16
    assert (everything.box[:, [0, 2]] <= 30).all() and (everything.box[:, [1, 3]] <= 20).all()
    assert (np.diff(everything.confidence) <= 0).all()
    assert everything.as_array().shape == (512, 5)


@pytest.mark.parametrize("edit,error,parts", [
    (lambda c: c.replace("[yolo]", "[route]\nlayers=-9\n\n[yolo]"), pkgnet.FormatError,
     ["net.cfg:22:", "layer 2 [route]", "layers=-9"]),
    (lambda c: c.replace("[yolo]", "[reorg]\nstride=2\n\n[yolo]"), pkgnet.UnsupportedError,
     ["net.cfg:21:", "layer 2 [reorg]"]),
    (lambda c: c.replace("filters=14", "filters=15"), pkgnet.FormatError, ["layer 2 [yolo]", "takes 15 channels"]),
    (lambda c: c.replace("activation=leaky", "activation=swish"), pkgnet.UnsupportedError, ["net.cfg:12:", "swish"]),
])
def test_cfg_errors_name_file_line_and_layer(files, edit, error, parts):
    c, w = files(edit(CFG))
    with pytest.raises(error) as caught:
        pkgnet.Detector(c, w)
    for part in parts:
        assert part in str(caught.value), str(caught.value)


def test_weights_errors(files, tmp_path):
    good = weights_for_cfg()
    with pytest.raises(pkgnet.ModelMismatchError, match=r"truncated.*layer 1 \[convolutional\] \(.*net.cfg:14\)"):
        pkgnet.Detector(*files(weights=good[:-3]))
    with pytest.raises(pkgnet.ModelMismatchError, match="8 bytes are left over"):
        pkgnet.Detector(*files(weights=good + bytes(8)))
    with pytest.raises(pkgnet.FileError, match="nothere.weights"):
        pkgnet.Detector(files()[0], tmp_path / "nothere.weights")


def test_bad_options_raise(files):
    c, w = files()
    det = pkgnet.Detector(c, w)
    frame = np.zeros((8, 8, 3), np.uint8)
    for kwargs, text in [({"confidence": 1.5}, "confidence"), ({"nms": -1}, "NMS"), ({"classes": [2]}, "class 2"),
                         ({"classes": []}, "empty"), ({"threads": 5000}, "threads")]:
        with pytest.raises(pkgnet.InvalidArgumentError, match=text):
            det.detect(frame, **kwargs)
    with pytest.raises(pkgnet.InvalidArgumentError, match="no class names"):
        det.detect(frame, classes=["person"])
    with pytest.raises(pkgnet.InvalidArgumentError, match="1 \\[yolo\\] heads"):
        det.raw_output(frame, 1)
    with pytest.raises(pkgnet.InvalidArgumentError):
        det.detect(np.zeros((8, 8, 4), np.uint8))
    det.close()
    with pytest.raises(pkgnet.InvalidArgumentError, match="closed"):
        det.detect(frame)


def test_class_names_from_file(files, tmp_path):
    c, w = files()
    names = tmp_path / "two.names"
    names.write_text("walker\nwheels\n")
    det = pkgnet.Detector(c, w, names=names)
    assert det.class_ids(["wheels", 0, "1"]) == [1, 0, 1]
    with pytest.raises(pkgnet.InvalidArgumentError, match="not one of"):
        det.class_ids(["cat"])
    names.write_text("walker\n")
    with pytest.raises(pkgnet.InvalidArgumentError, match="names 1 classes"):
        pkgnet.Detector(c, w, names=names)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    synthetic.random_model(path, k=2, width=16, arch="resnet18", seed=5)
    return pkgnet.Model(path, threads=1)


def ped2_clip(n):
    import cv2
    folder = need_shared("data", "ped2", "testing", "frames", "05")
    return [cv2.imread(str(folder / ("%03d.jpg" % (100 + t)))) for t in range(n)]


def test_stream_with_detector_matches_given_boxes(model):
    folder = need_shared("weights", "yolo-fastest-1.1")
    det = pkgnet.Detector(folder / "yolo-fastest-1.1.cfg", folder / "yolo-fastest-1.1.weights")
    frames = ped2_clip(8)
    options = dict(confidence=0.3, classes=["person", "bicycle"])
    with pkgnet.Stream(model, use_motion=True, median_window=1, threads=1) as auto, \
            pkgnet.Stream(model, use_motion=True, median_window=1, threads=1) as given:
        det.attach(auto, **options)
        total = 0
        for t, frame in enumerate(frames):
            a = auto.push(frame)
            b = given.push(frame, det.detect(frame, **options).as_array())
            np.testing.assert_array_equal(a.box, b.box, err_msg=f"frame {t}")
            np.testing.assert_array_equal(a.combined, b.combined, err_msg=f"frame {t}")
            total += len(a.box)
        assert total > 0
        pkgnet.Detector.detach(auto)
        a, b = auto.push(frames[0]), given.push(frames[0])
        np.testing.assert_array_equal(a.box, b.box)
    # The streams kept the network alive on their own: closing the detector changes nothing for them.
    det.close()
