"""Training: a new student fitted to object cubes of normal footage against a
frozen teacher (pkgnet_trainer_*, docs/training.md).

    from pkgnet.train import Trainer
    with Trainer("resnet20.teacher.safetensors", cubes, pairs="d8:layer3,d16:layer2",
                 epochs=8) as trainer:
        while trainer.epochs_done < trainer.epochs:
            report = trainer.run_epoch()
            trainer.save_checkpoint("model.ckpt")
        trainer.write_model("model.safetensors")      # mu, sigma calibrated on the cubes

``cubes`` is uint8 [n, 5, 32, 32, C] (frames oldest first, HWC, C 1 or 3),
e.g. from ``pkgnet.cubes``. Options left out take pkgnet_train_options_init's
defaults, the published recipe: k 2, width 16, 120 epochs of batch 128, Adam
at 1e-4 decayed by 0.8 after epoch 60, loss weights (0.8, 0.1, 0.2), gradient
loss power 3.
"""

from __future__ import annotations

import ctypes
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from .errors import BusyError, InvalidArgumentError

__all__ = ["Trainer", "EpochReport", "default_options"]

_S = _native.CROP_SIZE
_T = _native.CUBE_FRAMES

_GRADIENT_LOSS = {"published": 0, "paper": 1}
_BATCH_NORM = {"fixed": 0, "batch": 1}
_CHANNEL_ORDER = {"bgr": 0, "rgb": 1}

Pairs = Union[str, Sequence[Tuple[str, str]]]
Progress = Callable[[int, int, int, float], None]


@dataclass(frozen=True)
class EpochReport:
    """One finished epoch (pkgnet_epoch_report): means over its steps."""

    epoch: int  # 1-based
    loss: float  # the weighted total
    prediction_loss: float  # MSE
    gradient_loss: float
    distillation_loss: float  # mean over pairs of the mean 1 - cos
    learning_rate: float
    seconds: float


def default_options() -> dict:
    """The keyword options of ``Trainer`` with the values pkgnet_train_options_init
    fills (None for pairs, scene and score_weights: the engine's choice)."""
    raw = _native.TrainOptions()
    _native.lib().pkgnet_train_options_init(ctypes.byref(raw))
    return {
        "k": raw.k,
        "width": raw.width,
        "pairs": raw.pairs.decode() if raw.pairs else None,
        "epochs": raw.epochs,
        "batch_size": raw.batch_size,
        "learning_rate": raw.learning_rate,
        "milestone_epoch": raw.milestone_epoch,
        "learning_rate_decay": raw.learning_rate_decay,
        "loss_weights": tuple(raw.loss_weights),
        "gradient_power": raw.gradient_power,
        "gradient_loss": {v: k for k, v in _GRADIENT_LOSS.items()}[raw.gradient_loss_paper],
        "batch_norm": {v: k for k, v in _BATCH_NORM.items()}[raw.batch_statistics],
        "seed": raw.seed,
        "threads": raw.threads,
        "top_k": raw.top_k,
        "median_window": raw.median_window,
        "scene": raw.scene.decode() if raw.scene else None,
        "score_weights": None,
        "input_channel_order": {v: k for k, v in _CHANNEL_ORDER.items()}[raw.input_channel_order],
        "teacher_cache_bytes": raw.teacher_cache_bytes,
    }


def _path(path, what: str) -> bytes:
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise InvalidArgumentError(f"{what} must be a path, got {type(path).__name__}")
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise InvalidArgumentError(f"{what} contains a NUL byte")
    return raw


def _int(value, what: str, low: int = -(2 ** 31), high: int = 2 ** 31 - 1) -> int:
    # bool is an int to Python but never a meaningful count here.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{what} must be an int, got {value!r}")
    if not low <= int(value) <= high:
        raise InvalidArgumentError(f"{what} must be in {low}...{high}, got {value}")
    return int(value)


def _float(value, what: str) -> float:
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{what} must be a number, got {value!r}") from None


def _choice(value, choices: dict, what: str) -> int:
    if value not in choices:
        raise InvalidArgumentError(f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return choices[value]


def _pairs_text(pairs: Pairs) -> bytes:
    if isinstance(pairs, str):
        return pairs.encode()
    try:
        items = [tuple(p) for p in pairs]
    except TypeError:
        raise InvalidArgumentError(
            f"pairs must be 'student:teacher,...' or a list of (student, teacher), got {pairs!r}") from None
    for item in items:
        if len(item) != 2 or not all(isinstance(name, str) for name in item):
            raise InvalidArgumentError(f"each pair must be (student feature, teacher block), got {item!r}")
    return ",".join(f"{s}:{t}" for s, t in items).encode()


def _check_cubes(cubes) -> np.ndarray:
    expected = f"uint8 [n, {_T}, {_S}, {_S}, C] with C 1 or 3"
    if not isinstance(cubes, np.ndarray):
        try:
            cubes = np.asarray(cubes)
        except Exception as exc:  # e.g. ragged lists
            raise InvalidArgumentError(f"cubes must be an array, {expected}: {exc}") from None
    if cubes.dtype != np.uint8:
        raise InvalidArgumentError(f"cubes must be {expected}, got dtype {cubes.dtype}")
    if cubes.ndim != 5 or cubes.shape[1:4] != (_T, _S, _S) or cubes.shape[4] not in (1, 3):
        raise InvalidArgumentError(f"cubes must be {expected}, got shape {list(cubes.shape)}")
    return np.ascontiguousarray(cubes)


class Trainer:
    """A pkgnet_trainer: a student, its Adam state and the training cubes.

    ``Trainer(teacher, cubes, **options)``: ``teacher`` is a teacher file
    (``python -m pkgnet.convert teacher``); ``cubes`` uint8 [n, 5, 32, 32, C],
    copied by the engine. Options (keyword only; left out = the C defaults,
    see ``default_options()``):

    k (2 maxpool, 1 strided conv), width, pairs ("d8:layer3,d16:layer2" or
    [("d8", "layer3"), ...]; None = the published pairs of a torchvision
    teacher), epochs, batch_size, learning_rate, milestone_epoch,
    learning_rate_decay, loss_weights (lambda_e, lambda_g, lambda_c),
    gradient_power, gradient_loss ("published" |dx(t) - dx(p)| or "paper"
    ||dx(t)| - |dx(p)||), batch_norm ("fixed" statistics as published, or
    "batch"), seed, threads (0 = default), top_k, median_window, scene
    ("ped2", "avenue", "shanghaitech"), score_weights ([w_e, w_c1, ...]),
    input_channel_order ("bgr" or "rgb": the cubes'), teacher_cache_bytes
    (teacher features of all cubes are kept when they fit; 0 runs the teacher
    at every step).

    The same seed and thread count give the same model. One call at a time:
    calls from several Python threads wait for each other; from inside the
    progress callback only ``epochs_done`` is available (other calls raise
    BusyError).
    """

    def __init__(self, teacher: Union[str, os.PathLike], cubes, *, k: Optional[int] = None,
                 width: Optional[int] = None, pairs: Optional[Pairs] = None, epochs: Optional[int] = None,
                 batch_size: Optional[int] = None, learning_rate: Optional[float] = None,
                 milestone_epoch: Optional[int] = None, learning_rate_decay: Optional[float] = None,
                 loss_weights: Optional[Sequence[float]] = None, gradient_power: Optional[float] = None,
                 gradient_loss: Optional[str] = None, batch_norm: Optional[str] = None,
                 seed: Optional[int] = None, threads: Optional[int] = None, top_k: Optional[int] = None,
                 median_window: Optional[int] = None, scene: Optional[str] = None,
                 score_weights: Optional[Sequence[float]] = None, input_channel_order: Optional[str] = None,
                 teacher_cache_bytes: Optional[int] = None):
        self._handle = None
        self._finalizer = None
        # Reentrant: the progress callback runs inside run_epoch, on its thread,
        # and may ask for epochs_done.
        self._lock = threading.RLock()
        self._running = False
        teacher_path = _path(teacher, "teacher")
        cubes = _check_cubes(cubes)
        lib = _native.lib()
        raw = _native.TrainOptions()
        lib.pkgnet_train_options_init(ctypes.byref(raw))
        for name, value in (("k", k), ("width", width), ("epochs", epochs), ("batch_size", batch_size),
                            ("milestone_epoch", milestone_epoch), ("threads", threads), ("top_k", top_k),
                            ("median_window", median_window)):
            if value is not None:
                setattr(raw, name, _int(value, name))
        for name, value in (("learning_rate", learning_rate), ("learning_rate_decay", learning_rate_decay),
                            ("gradient_power", gradient_power)):
            if value is not None:
                setattr(raw, name, _float(value, name))
        if seed is not None:
            raw.seed = _int(seed, "seed", 0, 2 ** 64 - 1)
        if teacher_cache_bytes is not None:
            raw.teacher_cache_bytes = _int(teacher_cache_bytes, "teacher_cache_bytes", 0, 2 ** 63 - 1)
        if loss_weights is not None:
            values = [_float(v, "loss_weights") for v in loss_weights]
            if len(values) != 3:
                raise InvalidArgumentError(
                    f"loss_weights takes 3 numbers (lambda_e, lambda_g, lambda_c), got {len(values)}")
            raw.loss_weights[:] = values
        if gradient_loss is not None:
            raw.gradient_loss_paper = _choice(gradient_loss, _GRADIENT_LOSS, "gradient_loss")
        if batch_norm is not None:
            raw.batch_statistics = _choice(batch_norm, _BATCH_NORM, "batch_norm")
        if input_channel_order is not None:
            raw.input_channel_order = _choice(input_channel_order, _CHANNEL_ORDER, "input_channel_order")
        # The engine copies strings and weights during create: these locals
        # only need to outlive the call.
        pairs_text = None if pairs is None else _pairs_text(pairs)
        raw.pairs = pairs_text
        scene_text = None if scene is None else str(scene).encode()
        raw.scene = scene_text
        weights = None
        if score_weights is not None:
            weights = np.ascontiguousarray([_float(v, "score_weights") for v in score_weights], dtype=np.float32)
            raw.score_weights = weights.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            raw.score_weight_count = weights.size

        out = ctypes.c_void_p()
        _native.check(lib.pkgnet_trainer_create(
            teacher_path, cubes.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), cubes.shape[0], cubes.shape[4],
            ctypes.byref(raw), ctypes.byref(out)))
        self._handle = out.value
        self._finalizer = weakref.finalize(self, lib.pkgnet_trainer_free, self._handle)
        self._epochs = raw.epochs
        self._cube_count = cubes.shape[0]
        self._channels = cubes.shape[4]

    # -- lifetime ---------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._finalizer is None or not self._finalizer.alive

    def close(self) -> None:
        """Frees the trainer (after a call in flight on another thread returns)."""
        if self._finalizer is None:
            return
        with self._lock:
            if self._running:
                raise BusyError("the trainer cannot be closed from its own progress callback")
            self._finalizer()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else f" epochs_done={self.epochs_done}"
        return f"<pkgnet.train.Trainer cubes={self._cube_count} channels={self._channels} epochs={self._epochs}{state}>"

    def _live(self):
        if self.closed:
            raise InvalidArgumentError("the trainer is closed")
        return self._handle

    # -- training ---------------------------------------------------------

    @property
    def epochs(self) -> int:
        """Epochs of the whole run (the ``epochs`` option)."""
        return self._epochs

    @property
    def epochs_done(self) -> int:
        """Epochs completed so far (after ``resume``: the checkpoint's)."""
        with self._lock:
            return _native.lib().pkgnet_trainer_epochs_done(self._live())

    def run_epoch(self, progress: Optional[Progress] = None) -> EpochReport:
        """Runs the next epoch and returns its report.

        ``progress(epoch, done, total, loss)`` is called after every step (and
        with epoch 0 while the teacher features are computed), on this thread;
        ``loss`` is the epoch's mean so far (NaN before the first step). The
        engine cannot be stopped mid-epoch: an exception raised by
        ``progress`` is raised once the epoch has finished.
        """
        lib = _native.lib()
        report = _native.EpochReport()
        raised = []
        callback = _native.TrainProgress()  # NULL: no progress
        if progress is not None:
            def forward(_user, epoch, done, total, loss):
                if raised:
                    return
                try:
                    progress(epoch, done, total, loss)
                except BaseException as exc:  # noqa: B902 - KeyboardInterrupt too, re-raised below
                    raised.append(exc)

            # Referenced by this frame for the whole call: ctypes does not keep
            # the C function pointer's Python object alive on its own.
            callback = _native.TrainProgress(forward)
        with self._lock:
            if self._running:
                raise BusyError("run_epoch called from its own progress callback")
            self._running = True
            try:
                status = lib.pkgnet_trainer_run_epoch(self._live(), callback, None, ctypes.byref(report))
            finally:
                self._running = False
            _native.check(status)
        if raised:
            raise raised[0]
        return EpochReport(epoch=report.epoch, loss=report.loss, prediction_loss=report.prediction_loss,
                           gradient_loss=report.gradient_loss, distillation_loss=report.distillation_loss,
                           learning_rate=report.learning_rate, seconds=report.seconds)

    def save_checkpoint(self, path: Union[str, os.PathLike]) -> None:
        """Writes the student, Adam's moments and the position in the run
        (atomically: a previous file at ``path`` stays until the new one is whole)."""
        raw = _path(path, "checkpoint path")
        with self._lock:
            _native.check(_native.lib().pkgnet_trainer_save_checkpoint(self._live(), raw))

    def resume(self, path: Union[str, os.PathLike]) -> None:
        """Continues from a checkpoint of a run with the same settings and cubes
        (InvalidArgumentError names what differs)."""
        raw = _path(path, "checkpoint path")
        with self._lock:
            _native.check(_native.lib().pkgnet_trainer_resume(self._live(), raw))

    def write_model(self, path: Union[str, os.PathLike], calibrate: bool = True) -> None:
        """Writes the model file of the student as it stands. ``calibrate``:
        mu and sigma of every score component over the training cubes (paper
        eq. 8); False writes mu 0 and sigma 1."""
        raw = _path(path, "model path")
        with self._lock:
            _native.check(_native.lib().pkgnet_trainer_write_model(self._live(), raw, 1 if calibrate else 0))
