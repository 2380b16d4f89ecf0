"""Read and write safetensors files with numpy only.

Layout (https://github.com/huggingface/safetensors): an 8-byte little-endian
header length ``n``, ``n`` bytes of UTF-8 JSON (which may end in spaces), then
the data section. Each header entry is ``{"dtype", "shape", "data_offsets":
[begin, end]}`` relative to the data section; ``__metadata__`` is an optional
string-to-string map.

numpy has no bfloat16: BF16 tensors are read as float32 (exact) and written
from float32 by rounding to the nearest even bfloat16, on the raw bits.
"""

import json
import math
import os
import tempfile

import numpy as np

from .errors import FileError, FormatError, InvalidArgumentError, UnsupportedError

__all__ = [
    "read",
    "read_bytes",
    "read_header",
    "write",
    "serialize",
    "float32_to_bf16_bits",
    "bf16_bits_to_float32",
]

# safetensors dtype -> little-endian numpy dtype of the stored elements.
_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",  # raw bits, widened to float32 on read
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}

_FROM_NUMPY = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint64"): "U64",
    np.dtype("uint32"): "U32",
    np.dtype("uint16"): "U16",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}

# A header larger than this is a damaged length field, not a real model.
_MAX_HEADER = 100 * 1024 * 1024


def float32_to_bf16_bits(x):
    """uint16 bfloat16 bits of float32 values, rounded to nearest even."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> 16) & 1))
    out = (rounded >> 16).astype(np.uint16)
    # Rounding could turn a NaN payload into infinity; keep it a quiet NaN.
    out[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return out


def bf16_bits_to_float32(bits):
    """float32 values of uint16 bfloat16 bits (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def _parse_header(blob, total, name):
    """Parses and checks the header of a safetensors image.

    ``blob`` holds at least the first 8 + header bytes; ``total`` is the
    image size. Returns (entries, metadata, data_start).
    """
    if total < 8 or len(blob) < 8:
        raise FormatError("%s: %d bytes, too short for a safetensors header" % (name, total))
    n = int.from_bytes(blob[:8], "little")
    if n > total - 8 or n > _MAX_HEADER:
        raise FormatError("%s: header length %d does not fit in the %d-byte file (truncated?)"
                          % (name, n, total))
    raw = bytes(blob[8:8 + n])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError("%s: header is not UTF-8 (%s)" % (name, e)) from None
    if not text.startswith("{"):
        raise FormatError("%s: header does not start with '{'" % name)

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise FormatError("%s: header names '%s' twice" % (name, dup))
        return dict(pairs)

    try:
        header = json.loads(text, object_pairs_hook=no_duplicates)
    except FormatError:
        raise
    except ValueError as e:
        raise FormatError("%s: header is not valid JSON (%s)" % (name, e)) from None
    if not isinstance(header, dict):
        raise FormatError("%s: header is not a JSON object" % name)

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise FormatError("%s: __metadata__ must map strings to strings" % name)

    data_start = 8 + n
    data_len = total - data_start
    entries = {}
    for key, info in header.items():
        where = "%s: tensor '%s'" % (name, key)
        if not isinstance(info, dict):
            raise FormatError("%s: entry is not an object" % where)
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str):
            raise FormatError("%s: missing dtype" % where)
        if dtype not in _DTYPES:
            raise UnsupportedError("%s: unsupported dtype %s" % (where, dtype))
        if (not isinstance(shape, list)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise FormatError("%s: bad shape %r" % (where, shape))
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise FormatError("%s: bad data_offsets %r" % (where, offsets))
        begin, end = offsets
        if not 0 <= begin <= end:
            raise FormatError("%s: bad data_offsets [%d, %d]" % (where, begin, end))
        if end > data_len:
            raise FormatError("%s: data_offsets [%d, %d] reach past the %d-byte data section "
                              "(truncated?)" % (where, begin, end, data_len))
        need = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
        if end - begin != need:
            raise FormatError("%s: %s %s needs %d bytes, data_offsets give %d"
                              % (where, dtype, shape, need, end - begin))
        entries[key] = (dtype, tuple(shape), begin, end)

    spans = sorted((b, e, k) for k, (_, _, b, e) in entries.items() if e > b)
    for (b0, e0, k0), (b1, e1, k1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise FormatError("%s: tensors '%s' and '%s' overlap" % (name, k0, k1))
    return entries, metadata, data_start


def _decode(buf, entries, data_start, bf16_as_float32):
    tensors = {}
    for key, (dtype, shape, begin, end) in entries.items():
        count = math.prod(shape)
        arr = np.frombuffer(buf, dtype=_DTYPES[dtype], count=count, offset=data_start + begin)
        arr = arr.reshape(shape).astype(np.dtype(_DTYPES[dtype]).newbyteorder("="), copy=True)
        if dtype == "BF16" and bf16_as_float32:
            arr = bf16_bits_to_float32(arr).reshape(shape)
        tensors[key] = arr
    return tensors


def read_bytes(data, name="<memory>", bf16_as_float32=True):
    """(tensors, metadata) of a safetensors image held in memory."""
    entries, metadata, start = _parse_header(data, len(data), name)
    return _decode(data, entries, start, bf16_as_float32), metadata


def _read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise FileError("%s: cannot read (%s)" % (path, e.strerror or e)) from None


def read(path, bf16_as_float32=True):
    """(tensors, metadata) of a safetensors file.

    Tensors are native-endian numpy arrays; BF16 ones are float32 unless
    ``bf16_as_float32`` is False (then their uint16 bits).
    """
    path = os.fspath(path)
    return read_bytes(_read_file(path), path, bf16_as_float32)


def read_header(path):
    """(entries, metadata): entries map name -> (dtype, shape, begin, end)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            total = os.fstat(f.fileno()).st_size
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            blob = head + f.read(min(n, _MAX_HEADER + 1))
    except OSError as e:
        raise FileError("%s: cannot read (%s)" % (path, e.strerror or e)) from None
    entries, metadata, _ = _parse_header(blob, total, path)
    return entries, metadata


def _encode(name, arr, dtype):
    """(safetensors dtype, little-endian bytes) of one tensor."""
    arr = np.asarray(arr)
    if dtype is None:
        dtype = _FROM_NUMPY.get(arr.dtype.newbyteorder("="))
        if dtype is None:
            raise InvalidArgumentError("tensor '%s': numpy dtype %s has no safetensors dtype"
                                       % (name, arr.dtype))
    dtype = dtype.upper()
    if dtype not in _DTYPES:
        raise InvalidArgumentError("tensor '%s': unknown safetensors dtype %s" % (name, dtype))
    if dtype == "BF16":
        if arr.dtype == np.uint16:
            bits = arr  # already bfloat16 bits
        else:
            bits = float32_to_bf16_bits(arr.astype(np.float32))
        out = np.ascontiguousarray(bits, dtype="<u2")
    else:
        out = np.ascontiguousarray(arr, dtype=_DTYPES[dtype])
    return dtype, out.tobytes()


def serialize(tensors, metadata=None, dtypes=None):
    """The bytes of a safetensors image.

    ``tensors``: name -> array. ``dtypes``: None (each array's own dtype), one
    safetensors dtype for every floating tensor (e.g. "BF16"), or a map
    name -> dtype. ``metadata``: str -> str.
    """
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise InvalidArgumentError("metadata must map strings to strings")
    encoded = []
    for name, arr in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise InvalidArgumentError("bad tensor name %r" % (name,))
        arr = np.asarray(arr)
        if isinstance(dtypes, dict):
            want = dtypes.get(name)
        elif isinstance(dtypes, str) and arr.dtype.kind == "f":
            want = dtypes
        else:
            want = None
        dtype, blob = _encode(name, arr, want)
        encoded.append((name, dtype, list(arr.shape), blob))
    # Widest elements first keeps every tensor naturally aligned, given an
    # 8-aligned data section, without holes (which strict readers refuse).
    encoded.sort(key=lambda e: -np.dtype(_DTYPES[e[1]]).itemsize)
    header = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, dtype, shape, blob in encoded:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    parts = [len(text).to_bytes(8, "little"), text]
    parts.extend(blob for _, _, _, blob in encoded)
    return b"".join(parts)


def write(path, tensors, metadata=None, dtypes=None):
    """Writes a safetensors file (atomically: a temporary file, then rename).

    Arguments as for ``serialize``.
    """
    path = os.fspath(path)
    blob = serialize(tensors, metadata, dtypes)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".pkgnet-", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise FileError("%s: cannot write (%s)" % (path, e.strerror or e)) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return len(blob)
