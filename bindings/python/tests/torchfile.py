"""Write torch.save-format files without torch, for tests.

A tiny pickle emitter (protocol 2 opcodes by hand, since the pickle module
insists on importing torch to name its globals) plus the zip and legacy
container layouts. Tensors are given as ``Tensor`` placeholders so tests can
control storage keys, offsets and strides.
"""

import io
import struct
import zipfile
from collections import OrderedDict

import numpy as np


class Global:
    def __init__(self, module, name):
        self.module, self.name = module, name


class Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args


class PersistentId:
    def __init__(self, value):
        self.value = value


class Tensor:
    """A tensor viewing ``storage`` (a 1-D array) from ``offset`` with
    ``size``/``stride``; defaults to the contiguous whole of ``array``."""

    def __init__(self, array=None, storage=None, offset=0, size=None, stride=None, key=None,
                 dtype=None):
        if storage is None:
            storage = np.ascontiguousarray(array).reshape(-1)
            size = array.shape if size is None else size
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        if stride is None:
            stride, acc = [], 1
            for n in reversed(self.size):
                stride.insert(0, acc)
                acc *= n
        self.stride = tuple(stride)
        self.key = key
        self.dtype = dtype  # 'bfloat16' when storage holds uint16 bf16 bits


_STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage",
    np.dtype("int16"): "ShortStorage",
    np.dtype("int8"): "CharStorage",
    np.dtype("uint8"): "ByteStorage",
    np.dtype("bool"): "BoolStorage",
}


def _storage_name(t):
    if t.dtype == "bfloat16":
        return "BFloat16Storage"
    return _STORAGE_NAMES[np.dtype(t.storage.dtype)]


class _Emitter:
    def __init__(self):
        self.out = io.BytesIO()

    def w(self, b):
        self.out.write(b)

    def emit(self, obj):
        w = self.w
        if isinstance(obj, Global):
            w(b"c" + obj.module.encode() + b"\n" + obj.name.encode() + b"\n")
        elif isinstance(obj, Reduce):
            self.emit(obj.func)
            self.emit(tuple(obj.args))
            w(b"R")
        elif isinstance(obj, PersistentId):
            self.emit(obj.value)
            w(b"Q")
        elif obj is None:
            w(b"N")
        elif obj is True:
            w(b"\x88")
        elif obj is False:
            w(b"\x89")
        elif isinstance(obj, int):
            if -2 ** 31 <= obj < 2 ** 31:
                w(b"J" + struct.pack("<i", obj))
            else:
                raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
                w(b"\x8a" + bytes([len(raw)]) + raw)
        elif isinstance(obj, float):
            w(b"G" + struct.pack(">d", obj))
        elif isinstance(obj, str):
            raw = obj.encode("utf-8")
            w(b"X" + struct.pack("<I", len(raw)) + raw)
        elif isinstance(obj, tuple):
            w(b"(")
            for v in obj:
                self.emit(v)
            w(b"t")
        elif isinstance(obj, list):
            w(b"]")
            if obj:
                w(b"(")
                for v in obj:
                    self.emit(v)
                w(b"e")
        elif isinstance(obj, OrderedDict):
            self.emit(Reduce(Global("collections", "OrderedDict"), ()))
            self._items(obj)
        elif isinstance(obj, dict):
            w(b"}")
            self._items(obj)
        else:
            raise TypeError(type(obj))

    def _items(self, d):
        if d:
            self.w(b"(")
            for k, v in d.items():
                self.emit(k)
                self.emit(v)
            self.w(b"u")

    def finish(self, obj):
        self.w(b"\x80\x02")
        self.emit(obj)
        self.w(b".")
        return self.out.getvalue()


def _collect(obj, legacy):
    """Replaces Tensor placeholders by rebuild calls; returns (obj, storages)."""
    storages = OrderedDict()  # key -> (Tensor owning it, raw bytes)
    ids = {}

    def conv(o):
        if isinstance(o, Tensor):
            sid = id(o.storage)
            if sid not in ids:
                key = o.key if o.key is not None else str(len(storages))
                ids[sid] = key
                storages[key] = (o, np.ascontiguousarray(o.storage).tobytes())
            key = ids[sid]
            numel = o.storage.size
            stype = Global("torch", _storage_name(o))
            if legacy:
                pid = ("storage", stype, key, "cpu", numel, None)
                return Reduce(Global("torch._utils", "_rebuild_tensor"),
                              (PersistentId(pid), o.offset, o.size, o.stride))
            pid = ("storage", stype, key, "cpu", numel)
            return Reduce(Global("torch._utils", "_rebuild_tensor_v2"),
                          (PersistentId(pid), o.offset, o.size, o.stride, False,
                           Reduce(Global("collections", "OrderedDict"), ())))
        if isinstance(o, OrderedDict):
            return OrderedDict((k, conv(v)) for k, v in o.items())
        if isinstance(o, dict):
            return {k: conv(v) for k, v in o.items()}
        if isinstance(o, list):
            return [conv(v) for v in o]
        if isinstance(o, tuple):
            return tuple(conv(v) for v in o)
        return o

    return conv(obj), storages


def tensors(state_dict):
    """An OrderedDict of Tensor placeholders from name -> array."""
    return OrderedDict((k, Tensor(np.asarray(v))) for k, v in state_dict.items())


def zip_bytes(obj, prefix="archive", byteorder="little", skip_storages=(), pickle_bytes=None):
    obj, storages = _collect(obj, legacy=False)
    pkl = pickle_bytes if pickle_bytes is not None else _Emitter().finish(obj)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(prefix + "/data.pkl", pkl)
        z.writestr(prefix + "/byteorder", byteorder)
        for key, (t, raw) in storages.items():
            if key in skip_storages:
                continue
            if byteorder == "big":
                raw = np.ascontiguousarray(t.storage).byteswap().tobytes()
            z.writestr(prefix + "/data/" + key, raw)
        z.writestr(prefix + "/version", "3\n")
    return buf.getvalue()


def write_zip(path, obj, **kw):
    with open(path, "wb") as f:
        f.write(zip_bytes(obj, **kw))


def legacy_bytes(obj):
    obj, storages = _collect(obj, legacy=True)
    parts = [
        _Emitter().finish(0x1950A86A20F9469CFC6C),
        _Emitter().finish(1001),
        _Emitter().finish({"protocol_version": 1001, "little_endian": True,
                           "type_sizes": {"short": 2, "int": 4, "long": 4}}),
        _Emitter().finish(obj),
        _Emitter().finish(list(storages)),
    ]
    for key, (t, raw) in storages.items():
        parts.append(struct.pack("<q", t.storage.size) + raw)
    return b"".join(parts)


def write_legacy(path, obj):
    with open(path, "wb") as f:
        f.write(legacy_bytes(obj))


def raw_pickle(obj):
    """Pickle bytes of an object graph of Global/Reduce/... (for hostile pickles)."""
    return _Emitter().finish(obj)
