"""Object cubes and motion proposals of libpkgnet against OpenCV on real Ped2
frames (the shared data folder beside the repo).

Calls the C API functions pkgnet_make_cubes and pkgnet_motion_proposals
through ctypes; the tests skip while the library lacks them. The ctypes
declarations below follow the proposed header (adapt `_make_cubes` and
`_motion_proposals` if include/pkgnet.h settles on other signatures):

    typedef struct pkgnet_frame {
        const uint8_t *data; int width; int height; size_t stride;
        int format;                      // 1 grey, 2 bgr, 3 rgb (8-bit, interleaved)
    } pkgnet_frame;
    typedef struct pkgnet_box { float x1, y1, x2, y2; } pkgnet_box;

    // cubes uint8 [n][5][32][32][channels], size = its bytes; problems int32 [n] or NULL
    pkgnet_status pkgnet_make_cubes(const pkgnet_frame frames[5], const pkgnet_box *boxes, size_t n,
                                    int channels, const char *channel_order,
                                    uint8_t *cubes, size_t size, int32_t *problems);
    // scene "ped2" | "avenue" | "shanghaitech"; writes min(count, capacity) boxes
    pkgnet_status pkgnet_motion_proposals(const pkgnet_frame frames[3],
                                          const pkgnet_box *detector_boxes, size_t n_detector,
                                          const char *scene, pkgnet_box *proposals,
                                          size_t capacity, size_t *count);

The OpenCV references are those of make_video_fixtures.py (which also feeds
the same comparison to the Swift tests, Tests/PkgnetTests/VideoOpenCVTests.swift).
"""

import ctypes
from ctypes import POINTER, Structure, c_char_p, c_float, c_int, c_int32, c_size_t, c_uint8

import numpy as np
import pytest

import make_video_fixtures as ref
from support import need_shared


class Frame(Structure):
    _fields_ = [("data", POINTER(c_uint8)), ("width", c_int), ("height", c_int),
                ("stride", c_size_t), ("format", c_int)]


class Box(Structure):
    _fields_ = [("x1", c_float), ("y1", c_float), ("x2", c_float), ("y2", c_float)]


GREY, BGR = 1, 2


@pytest.fixture(scope="module")
def cv2():
    module = ref.import_cv2()
    if module is None:
        pytest.skip("OpenCV cannot be imported: pip install 'opencv-python-headless<5'")
    return module


@pytest.fixture(scope="module")
def video_lib():
    """The library, skipping while it lacks the video functions."""
    import pkgnet
    from pkgnet import _native

    try:
        lib = _native.lib()
    except pkgnet.BackendError as exc:
        pytest.skip(f"libpkgnet not available (run `make build`): {exc}")
    missing = [n for n in ("pkgnet_make_cubes", "pkgnet_motion_proposals") if not hasattr(lib, n)]
    if missing:
        pytest.skip("libpkgnet lacks %s (the video C API is not there yet)" % ", ".join(missing))
    lib.pkgnet_make_cubes.restype = c_int
    lib.pkgnet_make_cubes.argtypes = [POINTER(Frame), POINTER(Box), c_size_t, c_int, c_char_p,
                                      POINTER(c_uint8), c_size_t, POINTER(c_int32)]
    lib.pkgnet_motion_proposals.restype = c_int
    lib.pkgnet_motion_proposals.argtypes = [POINTER(Frame), POINTER(Box), c_size_t, c_char_p,
                                            POINTER(Box), c_size_t, POINTER(c_size_t)]
    return lib


@pytest.fixture(scope="module")
def ped2():
    return need_shared("data", "ped2")


def _frames(images):
    """A ctypes array of pkgnet_frame over contiguous numpy images (kept alive by the caller)."""
    out = (Frame * len(images))()
    for i, img in enumerate(images):
        assert img.flags.c_contiguous
        h, w = img.shape[:2]
        out[i] = Frame(img.ctypes.data_as(POINTER(c_uint8)), w, h, img.strides[0], GREY if img.ndim == 2 else BGR)
    return out


def _boxes(boxes):
    out = (Box * max(len(boxes), 1))()
    for i, b in enumerate(boxes):
        out[i] = Box(*b)
    return out


def _make_cubes(lib, images, boxes, channels, order):
    images = [np.ascontiguousarray(i) for i in images]
    frames = _frames(images)
    cubes = np.full((len(boxes), 5, 32, 32, channels), 0xAB, np.uint8)
    problems = np.zeros(max(len(boxes), 1), np.int32)
    status = lib.pkgnet_make_cubes(frames, _boxes(boxes), len(boxes), channels, order.encode(),
                                   cubes.ctypes.data_as(POINTER(c_uint8)), cubes.nbytes,
                                   problems.ctypes.data_as(POINTER(c_int32)))
    assert status == 0, lib.pkgnet_last_error()
    return cubes, problems[:len(boxes)]


def _motion_proposals(lib, images, detector_boxes, scene):
    images = [np.ascontiguousarray(i) for i in images]
    frames = _frames(images)
    capacity = 4096
    out = (Box * capacity)()
    count = c_size_t(0)
    status = lib.pkgnet_motion_proposals(frames, _boxes(detector_boxes), len(detector_boxes), scene.encode(),
                                         out, capacity, ctypes.byref(count))
    assert status == 0, lib.pkgnet_last_error()
    assert count.value <= capacity
    return sorted([int(out[i].x1), int(out[i].y1), int(out[i].x2), int(out[i].y2)] for i in range(count.value))


def _clips(ped2):
    return sorted(p.name for p in (ped2 / "testing" / "frames").iterdir() if p.is_dir())


def _load(cv2, ped2, clip):
    files = sorted((ped2 / "testing" / "frames" / clip).glob("*.jpg"))
    cache = {}

    def get(i):
        if i not in cache:
            cache[i] = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
            assert cache[i] is not None, files[i]
        return cache[i]

    return len(files), get


def test_cubes_match_opencv_resize(cv2, video_lib, ped2):
    total = exact = worst = checked = 0
    for clip in _clips(ped2):
        n, get = _load(cv2, ped2, clip)
        boxes = ref.read_boxes(ped2 / "testing" / "boxes" / (clip + ".csv"))
        for t in sorted({4, n // 2, n - 2}):
            frames = [get(i) for i in range(t - 4, t + 1)]
            greys = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
            h, w = frames[0].shape[:2]
            frame_boxes = boxes.get(t, []) + ref.extra_boxes(w, h)
            for images, channels, order in ((frames, 3, "bgr"), (frames, 3, "rgb"), (frames, 1, "bgr"),
                                            (greys, 3, "bgr"), (greys, 1, "bgr")):
                got, problems = _make_cubes(video_lib, images, frame_boxes, channels, order)
                expected = ref.cv_cubes(cv2, images, frame_boxes, channels, order)
                skipped = [ref.crop_bounds(b, w, h) is None for b in frame_boxes]
                assert [p != 0 for p in problems] == skipped
                d = np.abs(got.astype(np.int16) - expected.astype(np.int16))
                worst = max(worst, int(d.max()))
                exact += int((d == 0).sum())
                total += d.size
                checked += len(frame_boxes)
    print("cubes vs OpenCV %s: %d box-variants, max |diff| %d, exact %.6f"
          % (cv2.__version__, checked, worst, exact / total))
    assert worst <= 1
    assert exact / total > 0.999


def test_motion_proposals_match_opencv(cv2, video_lib, ped2):
    cases = differ = found = 0
    for clip in _clips(ped2):
        n, get = _load(cv2, ped2, clip)
        boxes = ref.read_boxes(ped2 / "testing" / "boxes" / (clip + ".csv"))
        for t in sorted({4, n // 2, n - 2}):
            frames = [get(i) for i in (t - 1, t, t + 1)]
            for scene in ref.SCENES:
                for det in (boxes.get(t, []), [], boxes.get(t, [])[::2]):
                    expected = ref.cv_motion(cv2, frames, det, scene)
                    got = _motion_proposals(video_lib, frames, det, scene)
                    cases += 1
                    found += len(expected)
                    differ += got != expected
                    assert got == expected, (clip, t, scene, len(det))
            # Grey frames: the single-channel path.
            greys = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
            expected = ref.cv_motion(cv2, greys, [], "ped2")
            got = _motion_proposals(video_lib, greys, [], "ped2")
            cases += 1
            found += len(expected)
            differ += got != expected
            assert got == expected, (clip, t, "grey")
    print("motion proposals vs OpenCV: %d cases, %d boxes, %d differ" % (cases, found, differ))
    assert found > 0
