"""ctypes declarations of include/pkgnet.h and the loader of libpkgnet.so.

Nothing here touches the shared library at import time: `lib()` loads it on
first use, so the pure-Python model tools keep working where it is absent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from ctypes import (
    POINTER,
    Structure,
    c_char_p,
    c_float,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_void_p,
)
from pathlib import Path

from . import errors

# Mirrors of the header's macros; checked against pkgnet_version() by the tests.
VERSION_MAJOR = 0
VERSION_MINOR = 1
VERSION_PATCH = 0
CROP_SIZE = 32
CUBE_FRAMES = 5
MAX_PAIRS = 4

OK = 0
STATUS_NAMES = {
    0: "PKGNET_OK",
    1: "PKGNET_ERR_INVALID_ARGUMENT",
    2: "PKGNET_ERR_IO",
    3: "PKGNET_ERR_FORMAT",
    4: "PKGNET_ERR_UNSUPPORTED",
    5: "PKGNET_ERR_MODEL_MISMATCH",
    6: "PKGNET_ERR_OUT_OF_MEMORY",
    7: "PKGNET_ERR_BACKEND",
    8: "PKGNET_ERR_BUSY",
    9: "PKGNET_ERR_INTERNAL",
}

class ModelInfo(Structure):
    """pkgnet_model_info, field for field."""

    _fields_ = [
        ("k", c_int),
        ("width", c_int),
        ("channels", c_int),
        ("input_frames", c_int),
        ("pairs", c_int),
        ("pair_size", c_int * MAX_PAIRS),
        ("task", c_char_p),
        ("teacher", c_char_p),
        ("channel_order", c_char_p),
        ("teacher_channel_order", c_char_p),
        ("teacher_mean", c_float * 3),
        ("teacher_std", c_float * 3),
        ("weights", c_float * (1 + MAX_PAIRS)),
        ("mu", c_float * (1 + MAX_PAIRS)),
        ("sigma", c_float * (1 + MAX_PAIRS)),
        ("reserved", c_void_p * 8),
    ]


_FloatPtr = POINTER(c_float)


class Outputs(Structure):
    """pkgnet_outputs, field for field."""

    _fields_ = [
        ("capacity", c_size_t),
        ("prediction_error", _FloatPtr),
        ("inconsistency", _FloatPtr),
        ("combined", _FloatPtr),
        ("prediction", _FloatPtr),
        ("error_map", _FloatPtr),
        ("inconsistency_map", _FloatPtr * MAX_PAIRS),
        ("reserved", c_void_p * 8),
    ]


class Frame(Structure):
    """pkgnet_frame."""

    _fields_ = [
        ("data", POINTER(c_uint8)),
        ("width", c_int),
        ("height", c_int),
        ("stride", c_size_t),
        ("format", c_int),
    ]


class Box(Structure):
    """pkgnet_box."""

    _fields_ = [("x1", c_float), ("y1", c_float), ("x2", c_float), ("y2", c_float)]


class Detection(Structure):
    """pkgnet_detection."""

    _fields_ = [("box", Box), ("confidence", c_float)]


class StreamOptions(Structure):
    """pkgnet_stream_options."""

    _fields_ = [
        ("scene", c_char_p),
        ("use_motion", c_int),
        ("top_k", c_int),
        ("median_window", c_int),
        ("causal", c_int),
        ("has_empty_floor", c_int),
        ("empty_floor", c_float),
        ("threads", c_int),
        ("reserved", c_void_p * 8),
    ]


class ObjectScore(Structure):
    """pkgnet_object_score."""

    _fields_ = [
        ("frame", c_int64),
        ("box", Box),
        ("prediction_error", c_float),
        ("inconsistency", c_float * MAX_PAIRS),
        ("combined", c_float),
    ]


class FrameScore(Structure):
    """pkgnet_frame_score."""

    _fields_ = [("frame", c_int64), ("raw", c_float), ("smoothed", c_float)]


PIXEL_GREY, PIXEL_BGR, PIXEL_RGB = 1, 2, 3

# Opaque handles travel as void*: Python never looks inside them, and c_void_p
# turns NULL into None, which makes "was it set?" a plain truth test.
_Handle = c_void_p
_HandleOut = POINTER(c_void_p)

# name: (restype, argtypes). The whole API of pkgnet.h; a library lacking any
# of these is refused, because a partial binding fails late and confusingly.
_PROTOTYPES = {
    "pkgnet_version": (c_char_p, []),
    "pkgnet_system_info": (c_char_p, []),
    "pkgnet_status_name": (c_char_p, [c_int]),
    "pkgnet_last_error": (c_char_p, []),
    "pkgnet_model_load": (c_int, [c_char_p, _HandleOut]),
    "pkgnet_model_load_from_memory": (c_int, [c_void_p, c_size_t, _HandleOut]),
    "pkgnet_model_free": (None, [_Handle]),
    "pkgnet_model_get_info": (c_int, [_Handle, POINTER(ModelInfo)]),
    "pkgnet_session_create": (c_int, [_Handle, c_int, _HandleOut]),
    "pkgnet_session_free": (None, [_Handle]),
    "pkgnet_session_set_threads": (c_int, [_Handle, c_int]),
    "pkgnet_score_u8": (c_int, [_Handle, POINTER(c_uint8), c_size_t, c_size_t, POINTER(Outputs)]),
    "pkgnet_score_f32": (c_int, [_Handle, _FloatPtr, c_size_t, c_size_t, POINTER(Outputs)]),
    "pkgnet_make_cubes": (c_int, [POINTER(Frame), POINTER(Box), c_size_t, c_int, c_char_p,
                                  POINTER(c_uint8), c_size_t, POINTER(c_int32)]),
    "pkgnet_motion_proposals": (c_int, [POINTER(Frame), POINTER(Box), c_size_t, c_char_p,
                                        POINTER(Box), c_size_t, POINTER(c_size_t)]),
    "pkgnet_stream_options_init": (None, [POINTER(StreamOptions)]),
    "pkgnet_stream_create": (c_int, [_Handle, POINTER(StreamOptions), _HandleOut]),
    "pkgnet_stream_free": (None, [_Handle]),
    "pkgnet_stream_push": (c_int, [_Handle, POINTER(Frame), POINTER(Detection), c_size_t]),
    "pkgnet_stream_finish": (c_int, [_Handle]),
    "pkgnet_stream_objects": (c_int, [_Handle, POINTER(ObjectScore), c_size_t, POINTER(c_size_t)]),
    "pkgnet_stream_frame_scores": (c_int, [_Handle, POINTER(FrameScore), c_size_t, POINTER(c_size_t)]),
    "pkgnet_stream_skipped": (c_int, [_Handle, POINTER(Box), POINTER(c_int32), c_size_t, POINTER(c_size_t)]),
}

_lock = threading.Lock()
_lib = None


def _repo_library() -> Path:
    # bindings/python/pkgnet/_native.py -> repo root is three folders up.
    return Path(__file__).resolve().parent.parent.parent.parent / ".build" / "release" / "libpkgnet.so"


def _candidates():
    """(description, what to dlopen) in the order they are tried, each made
    only when the ones before it failed: find_library runs ldconfig and the
    compiler in subprocesses (8-10 ms here), which a library found earlier
    should not cost the first model load."""
    env = os.environ.get("PKGNET_LIBRARY")
    if env:
        # An explicit choice is never silently replaced by another library.
        yield ("PKGNET_LIBRARY", env)
        return
    yield ("repository build", str(_repo_library()))
    # dlopen by SONAME searches LD_LIBRARY_PATH and the ld.so cache, which
    # covers a `make install` to a system prefix.
    yield ("system", "libpkgnet.so.0")
    found = ctypes.util.find_library("pkgnet")
    if found and found != "libpkgnet.so.0":
        yield ("system (find_library)", found)


def _bind(handle: ctypes.CDLL, where: str) -> ctypes.CDLL:
    missing = [name for name in _PROTOTYPES if not hasattr(handle, name)]
    if missing:
        raise errors.BackendError(
            f"{where} is not a usable libpkgnet: it lacks {', '.join(missing)}"
        )
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(handle, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return handle


def lib() -> ctypes.CDLL:
    """The loaded library, loading it on the first call (thread-safe)."""
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        if not os.environ.get("PKGNET_LIBRARY"):
            tried.append("PKGNET_LIBRARY: not set")
        for what, target in _candidates():
            if os.sep in target and not os.path.exists(target):
                tried.append(f"{what}: {target} (absent)")
                continue
            try:
                handle = ctypes.CDLL(target)
            except OSError as exc:
                tried.append(f"{what}: {target} ({exc})")
                continue
            _lib = _bind(handle, target)
            return _lib
        raise errors.BackendError(
            "libpkgnet.so could not be loaded; set PKGNET_LIBRARY to its path, build it "
            "with `make build`, or install it with `make install`. Tried:\n  "
            + "\n  ".join(tried)
        )


def error_class(status: int) -> type:
    # errors.py is the one home of the classes; an unknown status still raises.
    return errors.ERROR_FOR_STATUS.get(status, errors.Error)


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, f"status {status}")


def check(status: int) -> None:
    """Raises the errors.py class of `status` unless it is PKGNET_OK.

    Must run on the thread that made the call, before any other pkgnet call:
    pkgnet_last_error() is per thread and overwritten by the next failure.
    """
    if status == OK:
        return
    raw = lib().pkgnet_last_error()
    message = raw.decode("utf-8", "replace") if raw else ""
    if not message:
        message = status_name(status)
    raise error_class(status)(message)


# ---- built-in detector (pkgnet_detector_*; see detector.py) ----


class DetectorInfo(Structure):
    """pkgnet_detector_info."""

    _fields_ = [
        ("input_width", c_int),
        ("input_height", c_int),
        ("classes", c_int),
        ("heads", c_int),
        ("layers", c_int),
        ("parameters", c_size_t),
        ("reserved", c_void_p * 8),
    ]


class DetectorOptions(Structure):
    """pkgnet_detector_options."""

    _fields_ = [
        ("confidence", c_float),
        ("nms_threshold", c_float),
        ("classes", POINTER(c_int32)),
        ("n_classes", c_size_t),
        ("threads", c_int),
        ("reserved", c_void_p * 8),
    ]


class DetectedObject(Structure):
    """pkgnet_detected_object."""

    _fields_ = [("box", Box), ("confidence", c_float), ("class_id", c_int32)]


_PROTOTYPES.update({
    "pkgnet_detector_options_init": (None, [POINTER(DetectorOptions)]),
    "pkgnet_detector_load": (c_int, [c_char_p, c_char_p, _HandleOut]),
    "pkgnet_detector_free": (None, [_Handle]),
    "pkgnet_detector_get_info": (c_int, [_Handle, POINTER(DetectorInfo)]),
    "pkgnet_detector_detect": (c_int, [_Handle, POINTER(Frame), POINTER(DetectorOptions),
                                       POINTER(DetectedObject), c_size_t, POINTER(c_size_t)]),
    "pkgnet_detector_raw_output": (c_int, [_Handle, POINTER(Frame), c_int, c_int, _FloatPtr, c_size_t,
                                           POINTER(c_size_t), POINTER(c_int)]),
    "pkgnet_stream_set_detector": (c_int, [_Handle, _Handle, POINTER(DetectorOptions)]),
})


# ---- training (pkgnet_train*/pkgnet_trainer_*; see train.py) ----


class TrainOptions(Structure):
    """pkgnet_train_options, field for field."""

    _fields_ = [
        ("k", c_int),
        ("width", c_int),
        ("pairs", c_char_p),
        ("epochs", c_int),
        ("batch_size", c_int),
        ("learning_rate", ctypes.c_double),
        ("milestone_epoch", c_int),
        ("learning_rate_decay", ctypes.c_double),
        ("loss_weights", c_float * 3),
        ("gradient_power", ctypes.c_double),
        ("gradient_loss_paper", c_int),
        ("batch_statistics", c_int),
        ("seed", ctypes.c_uint64),
        ("threads", c_int),
        ("top_k", c_int),
        ("median_window", c_int),
        ("scene", c_char_p),
        ("score_weights", _FloatPtr),
        ("score_weight_count", c_size_t),
        ("input_channel_order", c_int),
        ("teacher_cache_bytes", c_size_t),
        ("reserved", c_void_p * 8),
    ]


class EpochReport(Structure):
    """pkgnet_epoch_report."""

    _fields_ = [
        ("epoch", c_int),
        ("loss", ctypes.c_double),
        ("prediction_loss", ctypes.c_double),
        ("gradient_loss", ctypes.c_double),
        ("distillation_loss", ctypes.c_double),
        ("learning_rate", ctypes.c_double),
        ("seconds", ctypes.c_double),
        ("reserved", ctypes.c_double * 4),
    ]


# pkgnet_train_progress: (user, epoch, done, total, loss).
TrainProgress = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_int, c_int, ctypes.c_double)

_PROTOTYPES.update({
    "pkgnet_train_options_init": (None, [POINTER(TrainOptions)]),
    "pkgnet_trainer_create": (c_int, [c_char_p, POINTER(c_uint8), c_size_t, c_int, POINTER(TrainOptions),
                                      _HandleOut]),
    "pkgnet_trainer_free": (None, [_Handle]),
    "pkgnet_trainer_run_epoch": (c_int, [_Handle, TrainProgress, c_void_p, POINTER(EpochReport)]),
    "pkgnet_trainer_epochs_done": (c_int, [_Handle]),
    "pkgnet_trainer_save_checkpoint": (c_int, [_Handle, c_char_p]),
    "pkgnet_trainer_resume": (c_int, [_Handle, c_char_p]),
    "pkgnet_trainer_write_model": (c_int, [_Handle, c_char_p, c_int]),
})
