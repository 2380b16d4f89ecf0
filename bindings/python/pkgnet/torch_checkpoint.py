"""Read ``torch.save`` checkpoints with numpy only (no torch).

Two layouts exist:

* the zip format (torch >= 1.6): ``<name>/data.pkl`` is a pickle whose tensors
  refer to storages ``<name>/data/<key>`` through persistent ids;
* the legacy format: five things back to back in one file: a pickled magic
  number, the protocol version, a sys_info dict, the object pickle, the list
  of storage keys, then every storage as an int64 element count and raw bytes.

Pickles are read by a restricted unpickler that resolves only the handful of
globals a tensor state_dict needs. Anything else (a whole pickled
``nn.Module``, arbitrary callables) is refused, so reading a checkpoint never
runs code from it.

``load_state_dict(path)`` is what the converter uses; ``load(path)`` returns the
whole unpickled object (e.g. ``{'state_dict': ..., 'best_prec1': ...}``).
Floating tensors come back as float32 (float16 and bfloat16 are widened
losslessly) or float64; integer and bool tensors keep their dtype.
"""

import collections
import io
import os
import pickle
import pickletools
import struct
import zipfile

import numpy as np

from .errors import FileError, FormatError, UnsupportedError

__all__ = ["load", "load_state_dict", "unwrap_state_dict", "is_torch_checkpoint"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Storage class name -> (numpy dtype, bytes per element). bfloat16 has no
# numpy dtype: its raw uint16 bits are widened after the tensor is rebuilt.
_STORAGE_DTYPES = {
    "FloatStorage": ("f4", 4),
    "DoubleStorage": ("f8", 8),
    "HalfStorage": ("f2", 2),
    "BFloat16Storage": ("bf16", 2),
    "LongStorage": ("i8", 8),
    "IntStorage": ("i4", 4),
    "ShortStorage": ("i2", 2),
    "CharStorage": ("i1", 1),
    "ByteStorage": ("u1", 1),
    "BoolStorage": ("?", 1),
    "UntypedStorage": ("u1", 1),
}

# torch dtype globals (pickled by name, e.g. by _rebuild_tensor_v3).
_TORCH_DTYPES = {
    "float32": "f4", "float": "f4",
    "float64": "f8", "double": "f8",
    "float16": "f2", "half": "f2",
    "bfloat16": "bf16",
    "int64": "i8", "long": "i8",
    "int32": "i4", "int": "i4",
    "int16": "i2", "short": "i2",
    "int8": "i1",
    "uint8": "u1",
    "bool": "?",
}


class _StorageType:
    """Stands in for a ``torch.*Storage`` class inside the pickle."""

    def __init__(self, name):
        self.name = name
        self.dtype, self.itemsize = _STORAGE_DTYPES[name]


class _TorchDtype:
    def __init__(self, name):
        self.name = name
        self.dtype = _TORCH_DTYPES[name]


class _Storage:
    """A storage named by a persistent id; its bytes are attached later
    (legacy files store them after the pickle)."""

    def __init__(self, key, storage_type, numel, element_offset=0):
        self.key = key
        self.type = storage_type
        self.numel = numel
        self.element_offset = element_offset  # legacy storage views


class _TensorRef:
    def __init__(self, storage, offset, size, stride, dtype=None):
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)
        self.dtype = dtype  # overrides the storage type (v3 tensors)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    if not isinstance(storage, _Storage):
        raise _PickleProblem("a tensor whose storage is not a persistent storage")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    ref = _rebuild_tensor(storage, storage_offset, size, stride)
    ref.dtype = dtype.dtype if isinstance(dtype, _TorchDtype) else None
    return ref


def _rebuild_parameter(data, *unused):
    return data


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    # Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1'); only
    # that use is needed, so no other codec is reachable from a pickle.
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise _PickleProblem("_codecs.encode with encoding %r" % (encoding,))
    return obj.encode("latin1")


class _PickleProblem(Exception):
    pass


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("_codecs", "encode"): _codecs_encode,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
}
for _name in _STORAGE_DTYPES:
    _ALLOWED_GLOBALS[("torch", _name)] = _StorageType(_name)
    _ALLOWED_GLOBALS[("torch.storage", _name)] = _StorageType(_name)
for _name in _TORCH_DTYPES:
    _ALLOWED_GLOBALS[("torch", _name)] = _TorchDtype(_name)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, persistent_load):
        super().__init__(file, encoding="utf-8")
        self._persistent = persistent_load

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _PickleProblem(
                "unsupported pickle global '%s.%s': only tensor state_dicts can be read "
                "(save model.state_dict(), not the model object)" % (module, name)) from None

    def persistent_load(self, pid):
        return self._persistent(pid)


def _as_str(x):
    return x.decode("ascii") if isinstance(x, bytes) else x


_MEMO_OPS = frozenset(("PUT", "BINPUT", "LONG_BINPUT"))


def _check_memo(file):
    """Refuses memo indices a pickler never writes before unpickling.

    Picklers number memo slots 0, 1, 2, ... in order, so an index beyond the
    pickle's opcode count is forged; and CPython's C unpickler sizes its memo
    array by the largest index, so a 900-byte file with LONG_BINPUT 10**9
    would allocate gigabytes (found by fuzz_torch_checkpoint.py).
    """
    start = file.tell()
    try:
        ops = 0
        for opcode, arg, _ in pickletools.genops(file):
            ops += 1
            if opcode.name in _MEMO_OPS and (not isinstance(arg, int) or not 0 <= arg <= ops):
                raise _PickleProblem("memo index %r past the pickle's %d opcodes" % (arg, ops))
    finally:
        file.seek(start)


def _unpickle(file, persistent_load, path, what):
    try:
        _check_memo(file)
        return _RestrictedUnpickler(file, persistent_load).load()
    except _PickleProblem as e:
        if str(e).startswith("unsupported pickle global"):
            raise UnsupportedError("%s: %s" % (path, e)) from None
        raise FormatError("%s: %s: %s" % (path, what, e)) from None
    except (FormatError, UnsupportedError):
        raise
    except Exception as e:  # a damaged pickle fails in many ways
        raise FormatError("%s: %s is not a valid pickle (%s: %s)"
                          % (path, what, type(e).__name__, e)) from None


def _storage_from_pid(pid, legacy):
    if not isinstance(pid, tuple) or not pid or _as_str(pid[0]) != "storage":
        kind = _as_str(pid[0]) if isinstance(pid, tuple) and pid else pid
        if kind == "module":
            raise _PickleProblem("unsupported pickle global: the file holds a pickled module; "
                                 "save model.state_dict() instead")
        raise _PickleProblem("unknown persistent id %r" % (kind,))
    if legacy:
        if len(pid) != 6:
            raise _PickleProblem("malformed storage id %r" % (pid,))
        _, stype, key, _location, numel, view = pid
    else:
        if len(pid) != 5:
            raise _PickleProblem("malformed storage id %r" % (pid,))
        _, stype, key, _location, numel = pid
        view = None
    if not isinstance(stype, _StorageType):
        raise _PickleProblem("storage of unknown type %r" % (stype,))
    if not isinstance(numel, int) or numel < 0:
        raise _PickleProblem("storage with bad size %r" % (numel,))
    key = _as_str(key)
    if not isinstance(key, str):
        raise _PickleProblem("storage with a non-string key %r" % (key,))
    if view is None:
        return _Storage(key, stype, numel)
    # Legacy views share the bytes of a root storage from an element offset.
    view_key, offset, view_size = view
    return _Storage(key, stype, view_size, element_offset=offset)


def _walk(obj, fn):
    """Replaces every _TensorRef in nested containers by fn(ref)."""
    if isinstance(obj, _TensorRef):
        return fn(obj)
    if isinstance(obj, dict):
        out = obj.__class__() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _walk(v, fn)
        return out
    if isinstance(obj, list):
        return [_walk(v, fn) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_walk(v, fn) for v in obj)
    return obj


def _materialize(ref, raw, big_endian, path):
    """Builds the numpy array of a tensor from its storage's bytes."""
    stype = ref.storage.type
    code = ref.dtype or stype.dtype
    if ref.dtype is not None and ref.dtype != stype.dtype:
        itemsize = np.dtype("u2" if code == "bf16" else code).itemsize
    else:
        itemsize = stype.itemsize
    npcode = "u2" if code == "bf16" else code
    dt = np.dtype(npcode).newbyteorder(">" if big_endian else "<")
    nbytes_storage = len(raw)
    start = ref.storage.element_offset * stype.itemsize
    count = (nbytes_storage - start) // itemsize if nbytes_storage >= start else -1
    size, stride, offset = ref.size, ref.stride, ref.offset
    if (count < 0 or len(size) != len(stride) or not isinstance(offset, int) or offset < 0
            or any((not isinstance(s, int)) or s < 0 for s in size)
            or any((not isinstance(s, int)) or s < 0 for s in stride)):
        raise FormatError("%s: tensor of storage '%s' has a bad view (offset %r, size %r, stride %r)"
                          % (path, ref.storage.key, offset, size, stride))
    flat = np.frombuffer(raw, dtype=dt, count=count, offset=start)
    if 0 in size:
        arr = np.zeros(size, dtype=dt)
    else:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= count:
            raise FormatError("%s: tensor of storage '%s' (offset %d, size %s, stride %s) "
                              "reaches past the storage's %d elements"
                              % (path, ref.storage.key, offset, list(size), list(stride), count))
        arr = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=[s * itemsize for s in stride], writeable=False)
    arr = np.array(arr, dtype=dt.newbyteorder("="), copy=True)
    if code == "bf16":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    elif code == "f2":
        arr = arr.astype(np.float32)
    return arr


def is_torch_checkpoint(path):
    """True when the file starts like a torch.save file (zip or legacy)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return True
    # The legacy format opens with a pickle of the magic number (a LONG1).
    if len(head) < 4 or head[:1] != b"\x80" or head[2:3] != b"\x8a":
        return False
    return int.from_bytes(head[4:4 + head[3]], "little") == _LEGACY_MAGIC


def _load_zip(path, data):
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        names = zf.namelist()
    except Exception as e:  # zipfile reports damage with many exception types
        raise FormatError("%s: truncated or corrupt torch zip checkpoint (%s)" % (path, e)) from None
    pkls = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    pkls = [n for n in pkls if n.count("/") <= 1]
    if len(pkls) != 1:
        raise FormatError("%s: a torch zip checkpoint holds one '<name>/data.pkl', found %d"
                          % (path, len(pkls)))
    prefix = pkls[0][: -len("data.pkl")]

    def read(name):
        try:
            return zf.read(name)
        except KeyError:
            raise FormatError("%s: missing zip record '%s'" % (path, name)) from None
        except Exception as e:  # BadZipFile, zlib.error, NotImplementedError (method), ...
            raise FormatError("%s: cannot read zip record '%s' (truncated or corrupt: %s)"
                              % (path, name, e)) from None

    big_endian = False
    if prefix + "byteorder" in names:
        order = read(prefix + "byteorder").decode("ascii", "replace").strip()
        if order not in ("little", "big"):
            raise FormatError("%s: unknown byteorder %r" % (path, order))
        big_endian = order == "big"

    obj = _unpickle(io.BytesIO(read(pkls[0])), lambda pid: _storage_from_pid(pid, False),
                    path, pkls[0])
    cache = {}

    def resolve(ref):
        key = ref.storage.key
        if key not in cache:
            record = prefix + "data/" + key
            if record not in names:
                raise FormatError("%s: missing storage '%s' (zip record '%s')" % (path, key, record))
            raw = read(record)
            need = ref.storage.numel * ref.storage.type.itemsize
            if len(raw) < need:
                raise FormatError("%s: storage '%s' holds %d bytes, %d expected (truncated)"
                                  % (path, key, len(raw), need))
            cache[key] = raw[:need] if need else b""
        return _materialize(ref, cache[key], big_endian, path)

    return _walk(obj, resolve)


def _load_legacy(path, data):
    f = io.BytesIO(data)

    def none(pid):
        raise _PickleProblem("unexpected persistent id in a header pickle")

    magic = _unpickle(f, none, path, "magic number")
    if magic != _LEGACY_MAGIC:
        raise FormatError("%s: not a torch checkpoint (neither a zip nor the legacy format)" % path)
    version = _unpickle(f, none, path, "protocol version")
    if version != _LEGACY_PROTOCOL:
        raise UnsupportedError("%s: legacy torch protocol version %r (only %d is supported)"
                               % (path, version, _LEGACY_PROTOCOL))
    sys_info = _unpickle(f, none, path, "sys_info")
    big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False

    roots = {}  # key -> numel of the root storage, as the pickle declares it

    def persistent(pid):
        storage = _storage_from_pid(pid, True)
        # A view's key is its root's: element_offset selects its part.
        roots.setdefault(storage.key, (storage.type, pid[4]))
        return storage

    obj = _unpickle(f, persistent, path, "object pickle")
    keys = _unpickle(f, none, path, "storage key list")
    if not isinstance(keys, list):
        raise FormatError("%s: legacy storage key list is a %s" % (path, type(keys).__name__))
    raws = {}
    for key in keys:
        key = _as_str(key)
        if key not in roots:
            raise FormatError("%s: storage '%s' is listed but used by no tensor" % (path, key))
        stype, numel = roots[key]
        head = f.read(8)
        if len(head) < 8:
            raise FormatError("%s: truncated before storage '%s'" % (path, key))
        count = struct.unpack(">q" if big_endian else "<q", head)[0]
        if count != numel:
            raise FormatError("%s: storage '%s' holds %d elements, the pickle says %d"
                              % (path, key, count, numel))
        raw = f.read(count * stype.itemsize)
        if len(raw) < count * stype.itemsize:
            raise FormatError("%s: storage '%s' is truncated (%d of %d bytes)"
                              % (path, key, len(raw), count * stype.itemsize))
        raws[key] = raw

    def resolve(ref):
        try:
            raw = raws[ref.storage.key]
        except KeyError:
            raise FormatError("%s: missing storage '%s'" % (path, ref.storage.key)) from None
        return _materialize(ref, raw, big_endian, path)

    return _walk(obj, resolve)


def load(path):
    """Unpickles a torch.save file; tensors become numpy arrays."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise FileError("%s: cannot read (%s)" % (path, e.strerror or e)) from None
    try:
        if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
            return _load_zip(path, data)
        if data[:1] == b"\x80":  # a pickle protocol >= 2 opcode: the legacy layout
            return _load_legacy(path, data)
    except (ValueError, TypeError, OverflowError, IndexError, KeyError, AttributeError) as e:
        # Damaged files that pass the structural checks still fail somewhere.
        raise FormatError("%s: damaged torch checkpoint (%s: %s)" % (path, type(e).__name__, e)) from None
    if not data:
        raise FormatError("%s: empty file" % path)
    raise FormatError("%s: not a torch checkpoint (neither a zip nor the legacy format)" % path)


_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


def unwrap_state_dict(obj, path="<object>"):
    """The flat name -> array map of a checkpoint object.

    Accepts a state_dict, or a dict holding one under 'state_dict', 'model' or
    'model_state_dict' (training checkpoints). A 'module.' prefix
    (DataParallel) is stripped. Non-tensor entries are dropped.
    """
    if not isinstance(obj, dict):
        raise FormatError("%s: holds a %s, not a state_dict" % (path, type(obj).__name__))
    if not any(isinstance(v, np.ndarray) for v in obj.values()):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, np.ndarray) for v in inner.values()):
                obj = inner
                break
        else:
            raise FormatError("%s: no tensors found (top-level keys: %s)"
                              % (path, ", ".join(map(str, list(obj)[:10])) or "none"))
    out = collections.OrderedDict()
    for name, value in obj.items():
        if not isinstance(value, np.ndarray):
            continue
        name = str(name)
        if name.startswith("module."):
            name = name[len("module."):]
        if name in out:
            raise FormatError("%s: tensor '%s' appears twice (with and without 'module.')"
                              % (path, name))
        out[name] = value
    return out


def load_state_dict(path):
    """The state_dict of a torch.save file as name -> numpy array."""
    return unwrap_state_dict(load(path), os.fspath(path))
