"""Model and Scores: the Python face of pkgnet_model and pkgnet_session."""

from __future__ import annotations

import ctypes
import os
import threading
import weakref
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import numpy as np

from . import _native
from .errors import BusyError, Error, InvalidArgumentError

_S = _native.CROP_SIZE
_T = _native.CUBE_FRAMES


def version() -> str:
    """Version of the loaded libpkgnet, e.g. "0.1.0"."""
    return _native.lib().pkgnet_version().decode()


def system_info() -> str:
    """Which kernels libpkgnet runs: CPU features, BLAS, OpenMP, threads."""
    return _native.lib().pkgnet_system_info().decode("utf-8", "replace")


@dataclass(frozen=True)
class ModelInfo:
    """What a model file describes (pkgnet_model_info)."""

    k: int
    width: int
    channels: int
    input_frames: int
    pairs: int
    pair_size: Tuple[int, ...]
    task: str
    teacher: str
    channel_order: str
    teacher_channel_order: str
    teacher_mean: Tuple[float, ...]
    teacher_std: Tuple[float, ...]
    # combined = sum_i weights[i] * (S_i - mu[i]) / sigma[i], i = 0 the
    # prediction error, 1..pairs the inconsistencies.
    weights: Tuple[float, ...]
    mu: Tuple[float, ...]
    sigma: Tuple[float, ...]

    def __getitem__(self, key):
        # Lets callers treat info like the dict they would get from metadata.
        return getattr(self, key)


@dataclass(eq=False)  # array fields: == would be ambiguous
class Scores:
    """Scores of N cubes. Maps and prediction are None unless asked for."""

    prediction_error: np.ndarray  # [N]
    inconsistency: np.ndarray  # [N, K]
    combined: np.ndarray  # [N]
    error_map: Optional[np.ndarray] = None  # [N, 32, 32]
    inconsistency_maps: Optional[List[np.ndarray]] = None  # K x [N, s, s]
    prediction: Optional[np.ndarray] = None  # [N, C, 32, 32]

    def __len__(self) -> int:
        return len(self.prediction_error)


def _float_ptr(a: Optional[np.ndarray]):
    if a is None:
        return None
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


class _Session:
    """One pkgnet_session, owned by one Python thread."""

    __slots__ = ("handle", "busy", "closed", "_finalizer", "__weakref__")

    def __init__(self, handle: int):
        self.handle = handle
        self.busy = False
        self.closed = False
        # Runs when the owning thread ends (threading.local drops us), at
        # Model.close(), or at exit, whichever is first; never twice.
        self._finalizer = weakref.finalize(self, _native.lib().pkgnet_session_free, handle)
        # Not at exit: a daemon thread may still be inside a call on it, and
        # the process is about to give the memory back anyway.
        self._finalizer.atexit = False

    def free(self) -> None:
        self.closed = True
        self._finalizer()


class Model:
    """A PKG-Net model loaded by libpkgnet.

    ``Model(path_or_bytes, threads=0)`` loads a safetensors model file (a path)
    or image (bytes-like). ``threads`` is each scoring call's thread count
    (0: the CPUs available to the process).

    ``score`` may be called from several Python threads at once: each thread
    gets its own pkgnet_session, since a session serves one call at a time.
    """

    def __init__(self, path_or_bytes: Union[str, os.PathLike, bytes, bytearray, memoryview], threads: int = 0):
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
            raise InvalidArgumentError(f"threads must be an int >= 0, got {threads!r}")
        lib = _native.lib()
        self._threads = threads
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions: "weakref.WeakSet[_Session]" = weakref.WeakSet()
        self._closed = False
        self._handle = None
        self._finalizer = None

        out = ctypes.c_void_p()
        if isinstance(path_or_bytes, (str, os.PathLike)):
            path = os.fsencode(path_or_bytes)
            if b"\0" in path:
                raise InvalidArgumentError("model path contains a NUL byte")
            status = lib.pkgnet_model_load(path, ctypes.byref(out))
        else:
            # Anything with the buffer protocol: bytes, bytearray, mmap, arrays.
            try:
                view = memoryview(path_or_bytes)
            except TypeError:
                raise InvalidArgumentError(
                    f"Model() takes a path or bytes-like safetensors image, got {type(path_or_bytes).__name__}"
                ) from None
            try:
                data = np.frombuffer(view, dtype=np.uint8)
            except (ValueError, TypeError, BufferError):
                # Non-contiguous or multi-dimensional views: one flat copy.
                data = np.frombuffer(view.tobytes(), dtype=np.uint8)
            status = lib.pkgnet_model_load_from_memory(
                data.ctypes.data_as(ctypes.c_void_p), data.size, ctypes.byref(out)
            )
        _native.check(status)
        self._handle = out.value
        self._finalizer = weakref.finalize(self, lib.pkgnet_model_free, self._handle)
        self._finalizer.atexit = False  # see _Session

        raw = _native.ModelInfo()
        _native.check(lib.pkgnet_model_get_info(self._handle, ctypes.byref(raw)))
        # Copy the strings now: they point into the model, which close() frees.
        self._info = ModelInfo(
            k=raw.k,
            width=raw.width,
            channels=raw.channels,
            input_frames=raw.input_frames,
            pairs=raw.pairs,
            pair_size=tuple(raw.pair_size[: raw.pairs]),
            task=(raw.task or b"").decode(),
            teacher=(raw.teacher or b"").decode(),
            channel_order=(raw.channel_order or b"").decode(),
            teacher_channel_order=(raw.teacher_channel_order or b"").decode(),
            teacher_mean=tuple(raw.teacher_mean),
            teacher_std=tuple(raw.teacher_std),
            weights=tuple(raw.weights[: 1 + raw.pairs]),
            mu=tuple(raw.mu[: 1 + raw.pairs]),
            sigma=tuple(raw.sigma[: 1 + raw.pairs]),
        )
        # The loading thread usually scores too; creating its session now also
        # reports a bad thread count here rather than at the first score().
        self._release_session(self._acquire_session())

    # -- lifetime ---------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Frees the model and its sessions. Calls in flight on other threads
        finish; their sessions are freed as they return."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle = [s for s in self._sessions if not s.busy]
            for s in idle:
                s.free()
            # Sessions still scoring hold their own reference to the model.
            if self._finalizer is not None:
                self._finalizer()

    def _with_handle(self, fn):
        """fn(handle) while the model cannot be closed under it (for objects
        such as streams that take their own reference to the model)."""
        with self._lock:
            if self._closed:
                raise InvalidArgumentError("the model is closed")
            return fn(self._handle)

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        i = self._info
        state = " closed" if self._closed else ""
        return (
            f"<pkgnet.Model k={i.k} width={i.width} teacher={i.teacher} task={i.task} "
            f"channels={i.channels} pairs={i.pairs}{state}>"
        )

    # -- description ------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def threads(self) -> int:
        return self._threads

    # -- scoring ----------------------------------------------------------

    def _acquire_session(self) -> _Session:
        s = getattr(self._local, "session", None)
        with self._lock:
            if self._closed:
                raise Error("the model is closed")
            if s is None or s.closed:
                out = ctypes.c_void_p()
                _native.check(_native.lib().pkgnet_session_create(self._handle, self._threads, ctypes.byref(out)))
                s = _Session(out.value)
                self._local.session = s
                self._sessions.add(s)
            if s.busy:
                # Only reachable by re-entering score() from the same thread
                # (e.g. a signal handler); the engine would answer BUSY anyway.
                raise BusyError("this thread's session is already scoring")
            s.busy = True
            return s

    def _release_session(self, s: _Session) -> None:
        with self._lock:
            s.busy = False
            if self._closed:
                s.free()

    def _check_cubes(self, cubes) -> Tuple[np.ndarray, int]:
        c = self._info.channels
        u8_shape = f"[N, {_T}, {_S}, {_S}, {c}]"
        f32_shape = f"[N, {_T * c}, {_S}, {_S}]"
        expected = f"uint8 {u8_shape} or float32 {f32_shape}"
        if not isinstance(cubes, np.ndarray):
            try:
                cubes = np.asarray(cubes)
            except Exception as exc:  # e.g. ragged lists
                raise InvalidArgumentError(f"cubes must be an array, {expected}: {exc}") from None
        if cubes.dtype.kind == "f" and cubes.dtype.itemsize == 4 and not cubes.dtype.isnative:
            # Big-endian float32 is still float32; the engine reads native order.
            cubes = cubes.astype(np.float32)
        if cubes.dtype == np.uint8:
            if cubes.ndim != 5 or cubes.shape[1:] != (_T, _S, _S, c):
                raise InvalidArgumentError(
                    f"uint8 cubes must have shape {u8_shape} for this model, got {list(cubes.shape)}"
                )
        elif cubes.dtype == np.float32:
            if cubes.ndim != 4 or cubes.shape[1:] != (_T * c, _S, _S):
                raise InvalidArgumentError(
                    f"float32 cubes must have shape {f32_shape} for this model, got {list(cubes.shape)}"
                )
        else:
            raise InvalidArgumentError(f"cubes must be {expected}, got dtype {cubes.dtype}")
        return np.ascontiguousarray(cubes), cubes.shape[0]

    def score(self, cubes, maps: bool = False, prediction: bool = False) -> Scores:
        """Scores object cubes.

        cubes: uint8 [N, 5, 32, 32, C] (frames oldest first, pixels HWC as
        cropped, channel order of ``info.channel_order``) or float32
        [N, 5*C, 32, 32] in [0, 1] (frames stacked frame-major on channels).
        maps: also return ``error_map`` [N, 32, 32] and ``inconsistency_maps``.
        prediction: also return the predicted frame [N, C, 32, 32].
        """
        cubes, n = self._check_cubes(cubes)
        info = self._info
        k = info.pairs
        scores = Scores(
            prediction_error=np.empty(n, np.float32),
            inconsistency=np.empty((n, k), np.float32),
            combined=np.empty(n, np.float32),
        )
        if maps:
            scores.error_map = np.empty((n, _S, _S), np.float32)
            scores.inconsistency_maps = [np.empty((n, s, s), np.float32) for s in info.pair_size]
        if prediction:
            scores.prediction = np.empty((n, info.channels, _S, _S), np.float32)

        out = _native.Outputs()
        out.capacity = n
        out.prediction_error = _float_ptr(scores.prediction_error)
        out.inconsistency = _float_ptr(scores.inconsistency)
        out.combined = _float_ptr(scores.combined)
        out.prediction = _float_ptr(scores.prediction)
        out.error_map = _float_ptr(scores.error_map)
        if maps:
            for j, m in enumerate(scores.inconsistency_maps):
                out.inconsistency_map[j] = _float_ptr(m)

        lib = _native.lib()
        session = self._acquire_session()
        try:
            # ctypes drops the GIL for the call, so other threads run meanwhile.
            if cubes.dtype == np.uint8:
                status = lib.pkgnet_score_u8(
                    session.handle, cubes.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
                    n, cubes.size, ctypes.byref(out),
                )
            else:
                status = lib.pkgnet_score_f32(
                    session.handle, cubes.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                    n, cubes.size, ctypes.byref(out),
                )
            _native.check(status)
        finally:
            self._release_session(session)
        return scores
