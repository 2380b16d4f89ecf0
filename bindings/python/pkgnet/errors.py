"""Exceptions of pkgnet, one per ``pkgnet_status`` of include/pkgnet.h.

The model tools (pure Python) and the binding of libpkgnet.so raise the same
classes, so callers catch one hierarchy whichever side found the problem.
"""

__all__ = [
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
    "ERROR_FOR_STATUS",
]


class Error(Exception):
    """Base class of every pkgnet error."""

    status = None  # the pkgnet_status value this class stands for


class InvalidArgumentError(Error, ValueError):
    """A bad argument (PKGNET_ERR_INVALID_ARGUMENT)."""

    status = 1


class FileError(Error, OSError):
    """A file could not be opened, read, mapped or written (PKGNET_ERR_IO).

    Not called IOError so that it does not shadow the builtin.
    """

    status = 2


class FormatError(Error):
    """A file is malformed: header, pickle, JSON, offsets (PKGNET_ERR_FORMAT)."""

    status = 3


class UnsupportedError(Error):
    """Well-formed but not supported: version, dtype, arch, pickle global
    (PKGNET_ERR_UNSUPPORTED)."""

    status = 4


class ModelMismatchError(Error):
    """Tensors missing, extra or of the wrong shape (PKGNET_ERR_MODEL_MISMATCH)."""

    status = 5


class OutOfMemoryError(Error):
    """An allocation failed (PKGNET_ERR_OUT_OF_MEMORY)."""

    status = 6


class BackendError(Error):
    """The BLAS or OpenMP runtime could not be loaded (PKGNET_ERR_BACKEND)."""

    status = 7


class BusyError(Error):
    """The session is in use by another thread (PKGNET_ERR_BUSY)."""

    status = 8


class InternalError(Error):
    """A bug in pkgnet (PKGNET_ERR_INTERNAL)."""

    status = 9


ERROR_FOR_STATUS = {
    cls.status: cls
    for cls in (
        InvalidArgumentError,
        FileError,
        FormatError,
        UnsupportedError,
        ModelMismatchError,
        OutOfMemoryError,
        BackendError,
        BusyError,
        InternalError,
    )
}
