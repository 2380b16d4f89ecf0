"""Frames to object cubes and per-camera streams (docs/video-pipeline.md).

``cubes(frames, boxes)`` crops the same boxes from 5 frames (t-4..t) into the
uint8 cubes ``Model.score`` takes; ``Stream`` turns one camera's frames (and
detector boxes) into object scores and smoothed frame scores.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from . import _native
from .errors import InvalidArgumentError
from .model import Model

__all__ = ["cubes", "motion_proposals", "Stream", "StreamStep", "BOX_PROBLEMS"]

# pkgnet_box_problem values, by name.
BOX_PROBLEMS = {0: "ok", 1: "non-finite", 2: "inverted", 3: "empty"}

_FORMATS = {"grey": _native.PIXEL_GREY, "bgr": _native.PIXEL_BGR, "rgb": _native.PIXEL_RGB}


def _frame(array, order: str, what: str):
    """A numpy frame as a pkgnet_frame; returns (struct, the array kept alive)."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise InvalidArgumentError(f"{what}: frames must be uint8, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        fmt = _native.PIXEL_GREY
    elif a.ndim == 3 and a.shape[2] == 3:
        if order not in ("bgr", "rgb"):
            raise InvalidArgumentError(f"{what}: frame order must be 'bgr' or 'rgb', got {order!r}")
        fmt = _FORMATS[order]
    else:
        raise InvalidArgumentError(f"{what}: a frame is HxW or HxWx3, got shape {a.shape}")
    # Rows may be strided (a crop of a bigger array), pixels must be packed.
    if a.strides[-1] != 1 or (a.ndim == 3 and a.strides[1] != 3) or a.strides[0] < 0:
        a = np.ascontiguousarray(a)
    frame = _native.Frame(a.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), a.shape[1], a.shape[0], a.strides[0], fmt)
    return frame, a


def _boxes(boxes, what: str) -> np.ndarray:
    b = np.ascontiguousarray(np.asarray(boxes, dtype=np.float32).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4), np.float32))
    return b


def cubes(frames: Sequence[np.ndarray], boxes, channels: int = 3, order: str = "bgr",
          frame_order: str = "bgr", return_problems: bool = False):
    """Object cubes uint8 [M, 5, 32, 32, channels] from 5 frames t-4..t.

    frames: 5 uint8 arrays HxW (grey) or HxWx3 (``frame_order``), same size;
    boxes: float [M, 4] x1, y1, x2, y2 in pixels of frame t. Crops follow the
    published preprocessing (bounds ceil(x1):ceil(x2), ceil(y1):ceil(y2), OpenCV
    INTER_LINEAR resize). ``order`` is the channel order of the cubes (the
    model's). A box that gives no cube (non-finite, inverted, empty) leaves a
    zero cube; ``return_problems=True`` also returns int32 [M] problem codes
    (see BOX_PROBLEMS).
    """
    if len(frames) != 5:
        raise InvalidArgumentError(f"cubes: need the 5 frames t-4..t, got {len(frames)}")
    converted = [_frame(f, frame_order, f"cubes: frames[{i}]") for i, f in enumerate(frames)]
    structs = (_native.Frame * 5)(*[c[0] for c in converted])
    b = _boxes(boxes, "cubes")
    out = np.zeros((len(b), 5, 32, 32, channels), dtype=np.uint8)
    problems = np.zeros(len(b), dtype=np.int32)
    lib = _native.lib()
    _native.check(lib.pkgnet_make_cubes(
        structs, b.ctypes.data_as(ctypes.POINTER(_native.Box)), len(b), channels, order.encode(),
        out.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), out.nbytes,
        problems.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))))
    return (out, problems) if return_problems else out


def motion_proposals(frames: Sequence[np.ndarray], detector_boxes=(), scene: str = "ped2",
                     frame_order: str = "bgr") -> np.ndarray:
    """Foreground boxes float [P, 4] found by motion around frame t, from the
    frames t-1, t, t+1; the detector's boxes (grown by 2 px) are masked out."""
    if len(frames) != 3:
        raise InvalidArgumentError(f"motion_proposals: need the 3 frames t-1, t, t+1, got {len(frames)}")
    converted = [_frame(f, frame_order, f"motion_proposals: frames[{i}]") for i, f in enumerate(frames)]
    structs = (_native.Frame * 3)(*[c[0] for c in converted])
    b = _boxes(detector_boxes, "motion_proposals")
    lib = _native.lib()
    capacity = 64
    while True:
        out = np.zeros((capacity, 4), dtype=np.float32)
        found = ctypes.c_size_t()
        _native.check(lib.pkgnet_motion_proposals(
            structs, b.ctypes.data_as(ctypes.POINTER(_native.Box)), len(b), scene.encode(),
            out.ctypes.data_as(ctypes.POINTER(_native.Box)), capacity, ctypes.byref(found)))
        if found.value <= capacity:
            return out[: found.value].copy()
        capacity = found.value


@dataclass
class StreamStep:
    """What one push (or finish) produced.

    objects: one row per object scored now: ``frame``, ``box`` [4],
    ``prediction_error``, ``inconsistency`` [K], ``combined``.
    frame_scores: (frame, raw, smoothed) of the frames whose smoothed score
    became final. skipped: (box [4], problem name) of boxes that gave no cube.
    """

    frame: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    box: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    prediction_error: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    inconsistency: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    combined: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    frame_scores: List[tuple] = field(default_factory=list)
    skipped: List[tuple] = field(default_factory=list)


class Stream:
    """One camera's stream on a shared Model.

    ``Stream(model, scene=None, use_motion=False, top_k=None, median_window=None,
    causal=None, empty_floor=None, threads=0)``: None takes the model's setting.
    ``push(frame, detections=None)`` with a uint8 HxW or HxWx3 frame and
    detections float [D, 5] (x1, y1, x2, y2, confidence) or [D, 4] (confidence
    1) returns a StreamStep; ``finish()`` ends the clip. One thread at a time
    per stream; many streams may run on many threads.
    """

    def __init__(self, model: Model, scene: Optional[str] = None, use_motion: bool = False,
                 top_k: Optional[int] = None, median_window: Optional[int] = None,
                 causal: Optional[bool] = None, empty_floor: Optional[float] = None,
                 threads: int = 0, frame_order: str = "bgr"):
        lib = _native.lib()
        options = _native.StreamOptions()
        lib.pkgnet_stream_options_init(ctypes.byref(options))
        self._scene = scene.encode() if scene is not None else None  # kept alive for the call
        options.scene = self._scene
        options.use_motion = int(bool(use_motion))
        options.top_k = _positive(top_k, "top_k")
        options.median_window = _positive(median_window, "median_window")
        options.causal = -1 if causal is None else int(bool(causal))
        if empty_floor is not None:
            options.has_empty_floor = 1
            options.empty_floor = float(empty_floor)
        options.threads = int(threads)
        out = ctypes.c_void_p()
        _native.check(model._with_handle(
            lambda handle: lib.pkgnet_stream_create(handle, ctypes.byref(options), ctypes.byref(out))))
        self._handle = out.value
        self._finalizer = weakref.finalize(self, lib.pkgnet_stream_free, self._handle)
        self._pairs = model.info.pairs
        self._frame_order = frame_order
        self._lock = threading.Lock()

    def push(self, frame: np.ndarray, detections=None) -> StreamStep:
        struct, keep = _frame(frame, self._frame_order, "Stream.push")
        d = np.zeros((0, 5), np.float32) if detections is None or np.size(detections) == 0 else np.asarray(detections, np.float32)
        if d.ndim != 2 or d.shape[1] not in (4, 5):
            raise InvalidArgumentError(f"Stream.push: detections are [D, 4] or [D, 5] (with confidence), got shape {d.shape}")
        if d.shape[1] == 4:
            d = np.concatenate([d, np.ones((len(d), 1), np.float32)], axis=1)
        d = np.ascontiguousarray(d)
        with self._lock:
            lib = _native.lib()
            _native.check(lib.pkgnet_stream_push(self._live(), ctypes.byref(struct),
                                                 d.ctypes.data_as(ctypes.POINTER(_native.Detection)), len(d)))
            del keep
            return self._step()

    def finish(self) -> StreamStep:
        with self._lock:
            _native.check(_native.lib().pkgnet_stream_finish(self._live()))
            return self._step()

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _live(self):
        if not self._finalizer.alive:
            raise InvalidArgumentError("the stream is closed")
        return self._handle

    def _read(self, fn, struct, *extra):
        count = ctypes.c_size_t()
        _native.check(fn(self._handle, *([None] * len(extra)), None, 0, ctypes.byref(count)))
        items = (struct * count.value)()
        buffers = [(t * count.value)() for t in extra]
        _native.check(fn(self._handle, items, *buffers, count.value, ctypes.byref(count)))
        return items, buffers

    def _step(self) -> StreamStep:
        lib = _native.lib()
        objects, _ = self._read(lib.pkgnet_stream_objects, _native.ObjectScore)
        scores, _ = self._read(lib.pkgnet_stream_frame_scores, _native.FrameScore)
        boxes, (problems,) = self._read(lib.pkgnet_stream_skipped, _native.Box, ctypes.c_int32)
        n, k = len(objects), self._pairs
        return StreamStep(
            frame=np.array([o.frame for o in objects], np.int64),
            box=np.array([[o.box.x1, o.box.y1, o.box.x2, o.box.y2] for o in objects], np.float32).reshape(n, 4),
            prediction_error=np.array([o.prediction_error for o in objects], np.float32),
            inconsistency=np.array([list(o.inconsistency)[:k] for o in objects], np.float32).reshape(n, k),
            combined=np.array([o.combined for o in objects], np.float32),
            frame_scores=[(s.frame, s.raw, s.smoothed) for s in scores],
            skipped=[((b.x1, b.y1, b.x2, b.y2), BOX_PROBLEMS.get(p, str(p))) for b, p in zip(boxes, problems)],
        )


def _positive(value: Optional[int], what: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgumentError(f"{what} must be an int >= 1, got {value!r}")
    return value
