"""The built-in object detector: darknet YOLO models (e.g. Yolo-Fastest 1.1)
run by pkgnet's own engine, so frames become anomaly scores with no outside
detector.

    det = pkgnet.Detector("yolo-fastest-1.1.cfg", "yolo-fastest-1.1.weights")
    found = det.detect(frame, classes=["person", "bicycle"])   # uint8 HxWx3 BGR
    found.box, found.confidence, found.class_id

    stream = pkgnet.Stream(model, use_motion=True)
    det.attach(stream, classes=["person", "bicycle"])          # boxes from the detector
    step = stream.push(frame)

Frames are resized to the network input as cv2.dnn.blobFromImage(frame,
1/255, size, swapRB=True, crop=False) does, and decoded as OpenCV's darknet
importer does; see include/pkgnet.h for the exact rules.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from . import _native
from .errors import InvalidArgumentError
from .video import Stream, _frame

__all__ = ["Detector", "DetectorInfo", "Detections"]


@dataclass(frozen=True)
class DetectorInfo:
    """What a loaded detector is (pkgnet_detector_info)."""

    input_width: int
    input_height: int
    classes: int
    heads: int
    layers: int
    parameters: int


@dataclass
class Detections:
    """Objects of one frame, highest confidence first: ``box`` float32 [N, 4]
    (x1, y1, x2, y2 in frame pixels, clipped), ``confidence`` float32 [N]
    (objectness x class probability), ``class_id`` int32 [N]."""

    box: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray

    def __len__(self) -> int:
        return len(self.confidence)

    def as_array(self) -> np.ndarray:
        """float32 [N, 5]: x1, y1, x2, y2, confidence, what ``Stream.push`` takes."""
        return np.concatenate([self.box, self.confidence[:, None]], axis=1).astype(np.float32)


class Detector:
    """A darknet YOLO network with the scratch memory of one forward pass.

    ``Detector(cfg, weights, names=None)``: ``names`` is a class-name file
    (one per line, e.g. coco.names); by default the ``coco.names`` beside the
    cfg is read when present. Class names are only needed to pass names in
    ``classes``. One thread at a time per detector (a concurrent call raises
    BusyError); streams given the detector with ``attach`` run it in their
    own memory.
    """

    def __init__(self, cfg: Union[str, Path], weights: Union[str, Path],
                 names: Optional[Union[str, Path]] = None):
        lib = _native.lib()
        out = ctypes.c_void_p()
        _native.check(lib.pkgnet_detector_load(str(cfg).encode(), str(weights).encode(), ctypes.byref(out)))
        self._handle = out.value
        self._finalizer = weakref.finalize(self, lib.pkgnet_detector_free, self._handle)
        self._lock = threading.Lock()
        raw = _native.DetectorInfo()
        _native.check(lib.pkgnet_detector_get_info(self._handle, ctypes.byref(raw)))
        self.info = DetectorInfo(raw.input_width, raw.input_height, raw.classes, raw.heads, raw.layers,
                                 raw.parameters)
        path = Path(names) if names is not None else Path(cfg).parent / "coco.names"
        self.class_names: Optional[List[str]] = None
        if names is not None or path.is_file():
            listed = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if len(listed) != self.info.classes:
                raise InvalidArgumentError(
                    f"{path} names {len(listed)} classes but the detector has {self.info.classes}")
            self.class_names = listed

    def class_ids(self, classes: Sequence[Union[int, str]]) -> List[int]:
        """Class indices of names (from ``class_names``) or indices."""
        ids = []
        for c in classes:
            if isinstance(c, str) and not c.isdigit():
                if self.class_names is None:
                    raise InvalidArgumentError(
                        f"class {c!r} given by name, but the detector has no class names (pass names=)")
                if c not in self.class_names:
                    raise InvalidArgumentError(f"class {c!r} is not one of the detector's class names")
                ids.append(self.class_names.index(c))
            else:
                ids.append(int(c))
        return ids

    def _options(self, confidence, nms, classes, threads):
        options = _native.DetectorOptions()
        _native.lib().pkgnet_detector_options_init(ctypes.byref(options))
        options.confidence = float(confidence)
        options.nms_threshold = float(nms)
        options.threads = int(threads)
        keep = None
        if classes is not None:
            keep = np.ascontiguousarray(self.class_ids(classes), dtype=np.int32)
            options.classes = keep.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
            options.n_classes = len(keep)
        return options, keep

    def detect(self, frame: np.ndarray, confidence: float = 0.25, nms: float = 0.45,
               classes: Optional[Sequence[Union[int, str]]] = None, threads: int = 0,
               frame_order: str = "bgr") -> Detections:
        """Objects of a uint8 frame HxW or HxWx3 (``frame_order``): confidence
        above ``confidence``, per-class NMS at IoU ``nms`` (1 = off), classes
        restricted to ``classes`` (indices or names; None = all)."""
        struct, keep_frame = _frame(frame, frame_order, "Detector.detect")
        options, keep_classes = self._options(confidence, nms, classes, threads)
        lib = _native.lib()
        capacity = 256  # a rerun (for a larger buffer) would repeat the forward pass
        with self._lock:
            while True:
                objects = (_native.DetectedObject * capacity)()
                count = ctypes.c_size_t()
                _native.check(lib.pkgnet_detector_detect(self._live(), ctypes.byref(struct), ctypes.byref(options),
                                                         objects, capacity, ctypes.byref(count)))
                if count.value <= capacity:
                    break
                capacity = count.value
        del keep_frame, keep_classes
        n = count.value
        return Detections(
            box=np.array([[o.box.x1, o.box.y1, o.box.x2, o.box.y2] for o in objects[:n]], np.float32).reshape(n, 4),
            confidence=np.array([o.confidence for o in objects[:n]], np.float32),
            class_id=np.array([o.class_id for o in objects[:n]], np.int32),
        )

    def raw_output(self, frame: np.ndarray, head: int, threads: int = 0, frame_order: str = "bgr") -> np.ndarray:
        """The raw input of the head-th [yolo] layer for a frame: float32
        [anchors*(5+classes), grid_h, grid_w], before any logistic."""
        struct, keep_frame = _frame(frame, frame_order, "Detector.raw_output")
        lib = _native.lib()
        count = ctypes.c_size_t()
        shape = (ctypes.c_int * 3)()
        with self._lock:
            _native.check(lib.pkgnet_detector_raw_output(self._live(), ctypes.byref(struct), int(head), int(threads),
                                                         None, 0, ctypes.byref(count), shape))
            out = np.zeros(count.value, np.float32)
            _native.check(lib.pkgnet_detector_raw_output(
                self._live(), ctypes.byref(struct), int(head), int(threads),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), count.value, ctypes.byref(count), shape))
        del keep_frame
        return out.reshape(shape[0], shape[1], shape[2])

    def attach(self, stream: Stream, confidence: float = 0.25, nms: float = 0.45,
               classes: Optional[Sequence[Union[int, str]]] = None, threads: int = 0) -> None:
        """Runs this detector on every frame pushed to ``stream`` from now on;
        its objects join the detections given to ``push`` before the scene's
        filter. The stream uses its own scratch memory."""
        options, keep = self._options(confidence, nms, classes, threads)
        with stream._lock:
            _native.check(_native.lib().pkgnet_stream_set_detector(stream._live(), self._live(),
                                                                   ctypes.byref(options)))
        del keep

    @staticmethod
    def detach(stream: Stream) -> None:
        """Removes any detector from ``stream``."""
        with stream._lock:
            _native.check(_native.lib().pkgnet_stream_set_detector(stream._live(), None, None))

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _live(self):
        if not self._finalizer.alive:
            raise InvalidArgumentError("the detector is closed")
        return self._handle
