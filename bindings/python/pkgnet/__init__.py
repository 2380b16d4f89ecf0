"""pkgnet: PKG-Net video anomaly scoring (binding of libpkgnet.so).

The native library is loaded on first use, so the model tools
(``python -m pkgnet.convert``) work without it.

    import pkgnet
    with pkgnet.Model("model.safetensors") as model:
        scores = model.score(cubes)          # uint8 [N, 5, 32, 32, C]
        print(scores.combined)

The library is looked up in $PKGNET_LIBRARY, then the repository's
.build/release/libpkgnet.so, then the system's libpkgnet.so.0.
"""

from .errors import (
    BackendError,
    BusyError,
    Error,
    FileError,
    FormatError,
    InternalError,
    InvalidArgumentError,
    ModelMismatchError,
    OutOfMemoryError,
    UnsupportedError,
)
# Importing model does not load libpkgnet; only constructing a Model or
# calling version()/system_info() does.
from .model import Model, ModelInfo, Scores, system_info, version
from .video import Stream, StreamStep, cubes, motion_proposals
from .detector import Detections, Detector, DetectorInfo

__version__ = "0.1.0"

__all__ = [
    "Model",
    "ModelInfo",
    "Scores",
    "Stream",
    "StreamStep",
    "cubes",
    "motion_proposals",
    "Detector",
    "DetectorInfo",
    "Detections",
    "version",
    "system_info",
    "Error",
    "InvalidArgumentError",
    "FileError",
    "FormatError",
    "UnsupportedError",
    "ModelMismatchError",
    "OutOfMemoryError",
    "BackendError",
    "BusyError",
    "InternalError",
]

# Training; like the rest, importing it does not load libpkgnet.
from .train import EpochReport, Trainer  # noqa: E402

__all__ += ["Trainer", "EpochReport"]
