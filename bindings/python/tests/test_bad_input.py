"""Rows of docs/errors.md that no other test covers, at the C ABI (through
ctypes, so the exact status and the message are checked) and in Python."""
import ctypes
import math

import numpy as np
import pytest

import pkgnet
from pkgnet import _native as nat
from pkgnet import synthetic

OK, INVALID, FORMAT = 0, 1, 3


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "m.safetensors"
    synthetic.random_model(str(path), k=1, width=16, dtype="f16")
    lib = nat.lib()
    model, sess = ctypes.c_void_p(), ctypes.c_void_p()
    assert lib.pkgnet_model_load(str(path).encode(), ctypes.byref(model)) == OK
    assert lib.pkgnet_session_create(model, 1, ctypes.byref(sess)) == OK
    yield lib, model, sess, path
    lib.pkgnet_session_free(sess)
    lib.pkgnet_model_free(model)


def message(lib):
    return lib.pkgnet_last_error().decode()


@pytest.mark.parametrize("n", [2**62, 2**63 - 1, 2**64 - 1])
def test_cube_count_whose_size_overflows(session, n):
    lib, _, sess, _ = session
    cubes = (ctypes.c_uint8 * 16)()
    combined = (ctypes.c_float * 1)()
    out = nat.Outputs(capacity=1, combined=ctypes.cast(combined, ctypes.POINTER(ctypes.c_float)))
    st = lib.pkgnet_score_u8(sess, cubes, n, 16, ctypes.byref(out))
    assert st == INVALID
    assert "too many" in message(lib) or "too large" in message(lib)


def test_outputs_capacity_below_n(session):
    lib, _, sess, _ = session
    n, size = 2, 2 * 5 * 32 * 32 * 3
    cubes = (ctypes.c_uint8 * size)()
    combined = (ctypes.c_float * 2)()
    out = nat.Outputs(capacity=1, combined=ctypes.cast(combined, ctypes.POINTER(ctypes.c_float)))
    assert lib.pkgnet_score_u8(sess, cubes, n, size, ctypes.byref(out)) == INVALID
    assert "capacity is 1" in message(lib)


def test_load_from_memory_with_size_past_int_max(session):
    lib, _, _, _ = session
    data = (ctypes.c_uint8 * 8)()
    model = ctypes.c_void_p()
    assert lib.pkgnet_model_load_from_memory(data, 2**64 - 1, ctypes.byref(model)) == INVALID
    assert "too large" in message(lib) and not model.value


def test_empty_model_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    with pytest.raises(pkgnet.FormatError, match="empty"):
        pkgnet.Model(str(path))


@pytest.mark.parametrize("width,height,stride,fragment", [
    (0, 48, 0, "must be positive"),
    (64, -1, 192, "must be positive"),
    (64, 48, 100, "stride 100 is smaller than a row"),
    (2**30, 48, 2**32, "too large"),
])
def test_bad_frame_geometry(session, width, height, stride, fragment):
    lib, model, _, _ = session
    stream = ctypes.c_void_p()
    assert lib.pkgnet_stream_create(model, None, ctypes.byref(stream)) == OK
    try:
        pixels = (ctypes.c_uint8 * (64 * 48 * 3))()
        frame = nat.Frame(data=ctypes.cast(pixels, ctypes.POINTER(ctypes.c_uint8)), width=width,
                          height=height, stride=stride, format=2)
        assert lib.pkgnet_stream_push(stream, ctypes.byref(frame), None, 0) == INVALID
        assert fragment in message(lib)
    finally:
        lib.pkgnet_stream_free(stream)


def test_unknown_pixel_format(session):
    lib, model, _, _ = session
    stream = ctypes.c_void_p()
    assert lib.pkgnet_stream_create(model, None, ctypes.byref(stream)) == OK
    try:
        pixels = (ctypes.c_uint8 * (64 * 48 * 3))()
        frame = nat.Frame(data=ctypes.cast(pixels, ctypes.POINTER(ctypes.c_uint8)), width=64,
                          height=48, stride=192, format=7)
        assert lib.pkgnet_stream_push(stream, ctypes.byref(frame), None, 0) == INVALID
        assert "format" in message(lib)
    finally:
        lib.pkgnet_stream_free(stream)


def test_bad_boxes_are_skipped_not_errors(session):
    # Outside, inverted, zero-area and NaN detector boxes never fail a push;
    # a frame that is all bad boxes scores no objects.
    _, _, _, path = session
    model = pkgnet.Model(str(path))
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    boxes = np.array([[100, 100, 200, 200, 0.9],      # outside the frame
                      [40, 30, 10, 5, 0.9],           # inverted
                      [10, 10, 10, 30, 0.9],          # zero width
                      [math.nan, 0, 20, 20, 0.9],     # NaN
                      [0, 0, math.inf, 20, 0.9]],     # Inf
                     dtype=np.float32)
    with pkgnet.Stream(model, median_window=1) as stream:
        for _ in range(3):
            step = stream.push(frame, boxes)
            assert all(math.isfinite(o.combined) for o in getattr(step, "objects", []))
        stream.finish()
