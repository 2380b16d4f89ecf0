import json
import struct

import numpy as np
import pytest

from pkgnet import safetensors_io as sio
from pkgnet.errors import FileError, FormatError, InvalidArgumentError, UnsupportedError


def _tensors():
    rng = np.random.default_rng(1)
    return {
        "a.f32": rng.normal(size=(3, 4, 5)).astype(np.float32),
        "b.f16": rng.normal(size=(7,)).astype(np.float16),
        "c.u8": rng.integers(0, 256, size=(2, 3, 5), dtype=np.uint8),
        "d.i64": rng.integers(-(2 ** 40), 2 ** 40, size=(3,)),
        "e.scalar": np.array(1.5, dtype=np.float32),
        "f.empty": np.zeros((0, 4), dtype=np.float32),
        "g.f64": rng.normal(size=(2, 2)),
    }


def _header(path):
    blob = open(path, "rb").read()
    n = struct.unpack("<Q", blob[:8])[0]
    return blob, n, json.loads(blob[8:8 + n])


def test_round_trip(tmp_path):
    t = _tensors()
    path = tmp_path / "t.safetensors"
    sio.write(path, t, metadata={"pkgnet": '{"x": 1}', "note": "héllo"})
    got, meta = sio.read(path)
    assert meta == {"pkgnet": '{"x": 1}', "note": "héllo"}
    assert set(got) == set(t)
    for name, want in t.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        assert np.array_equal(got[name], want), name
        assert got[name].flags.writeable


def test_layout_aligned_and_dense(tmp_path):
    path = tmp_path / "t.safetensors"
    sio.write(path, _tensors(), metadata={"k": "v"})
    blob, n, header = _header(path)
    assert (8 + n) % 8 == 0  # data section 8-aligned
    assert blob[8:8 + n].decode().rstrip(" ") == blob[8:8 + n].decode().strip()
    spans = sorted(tuple(v["data_offsets"]) + (v["dtype"],)
                   for k, v in header.items() if k != "__metadata__")
    pos = 0
    sizes = {"F64": 8, "I64": 8, "F32": 4, "F16": 2, "U8": 1}
    for begin, end, dtype in spans:
        assert begin == pos  # no holes
        assert begin % sizes[dtype] == 0  # every element naturally aligned
        pos = end
    assert pos == len(blob) - 8 - n


def test_bf16_rounding():
    one = 1.0
    x = np.array([one, one + 2 ** -8, one + 3 * 2 ** -8, -2.0, 0.0, np.inf, -np.inf,
                  3.3895314e38, 1e-40], dtype=np.float32)
    bits = sio.float32_to_bf16_bits(x)
    # Ties go to even: 1 + 2^-8 -> 1.0 (0x3F80), 1 + 3*2^-8 -> 1 + 2^-6 (0x3F82).
    assert bits[:3].tolist() == [0x3F80, 0x3F80, 0x3F82]
    assert bits[3] == 0xC000 and bits[4] == 0
    assert bits[5] == 0x7F80 and bits[6] == 0xFF80
    back = sio.bf16_bits_to_float32(bits)
    assert back[7] == np.float32(3.3895314e38)
    # Quiet NaNs of both signs and a NaN whose payload lies in the low bits only.
    nan_in = np.array([0x7FC00000, 0xFFC00000, 0x7F800001], dtype=np.uint32).view(np.float32)
    nan = sio.float32_to_bf16_bits(nan_in)
    assert np.all(np.isnan(sio.bf16_bits_to_float32(nan)))
    # Round trip of every representable bf16 value is exact.
    allbits = np.arange(0, 2 ** 16, dtype=np.uint32).astype(np.uint16)
    vals = sio.bf16_bits_to_float32(allbits)
    finite = np.isfinite(vals)
    assert np.array_equal(sio.float32_to_bf16_bits(vals[finite]), allbits[finite])


def test_bf16_and_f16_write(tmp_path):
    x = np.random.default_rng(2).normal(size=(5, 6)).astype(np.float32)
    path = tmp_path / "h.safetensors"
    sio.write(path, {"x": x, "y": x, "i": np.arange(3)}, dtypes={"x": "BF16", "y": "F16"})
    _, _, header = _header(path)
    assert header["x"]["dtype"] == "BF16" and header["y"]["dtype"] == "F16"
    assert header["i"]["dtype"] == "I64"
    got, _ = sio.read(path)
    assert got["x"].dtype == np.float32
    assert np.max(np.abs(got["x"] - x) / np.abs(x)) <= 2 ** -8
    assert got["y"].dtype == np.float16
    assert np.array_equal(got["y"], x.astype(np.float16))
    raw, _ = sio.read(path, bf16_as_float32=False)
    assert raw["x"].dtype == np.uint16
    assert np.array_equal(raw["x"], sio.float32_to_bf16_bits(x))
    # One dtype string converts the floating tensors only.
    sio.write(path, {"x": x, "i": np.arange(3)}, dtypes="BF16")
    _, _, header = _header(path)
    assert header["x"]["dtype"] == "BF16" and header["i"]["dtype"] == "I64"


def test_read_header(tmp_path):
    path = tmp_path / "t.safetensors"
    sio.write(path, _tensors(), metadata={"a": "b"})
    entries, meta = sio.read_header(path)
    assert meta == {"a": "b"}
    assert entries["a.f32"][:2] == ("F32", (3, 4, 5))


def test_read_bytes():
    blob = sio.serialize({"w": np.ones((2, 2), np.float32)}, {"m": "1"})
    got, meta = sio.read_bytes(blob)
    assert np.array_equal(got["w"], np.ones((2, 2))) and meta == {"m": "1"}


# -------------------------------------------------- the PyPI reader/writer

def _safetensors():
    try:
        import safetensors
        import safetensors.numpy
    except ImportError:
        pytest.skip("the PyPI 'safetensors' package is not installed (pip install safetensors) "
                    "to cross-check the writer")
    return safetensors


def test_written_file_reads_with_pypi_safetensors(tmp_path):
    st = _safetensors()
    t = _tensors()
    path = tmp_path / "t.safetensors"
    sio.write(path, t, metadata={"pkgnet": "{}", "x": "y"})
    got = st.numpy.load_file(str(path))
    assert set(got) == set(t)
    for name, want in t.items():
        assert got[name].dtype == want.dtype and np.array_equal(got[name], want), name
    with st.safe_open(str(path), framework="numpy") as f:
        assert f.metadata() == {"pkgnet": "{}", "x": "y"}


def test_bf16_reads_with_pypi_safetensors(tmp_path):
    st = _safetensors()
    x = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
    path = tmp_path / "b.safetensors"
    sio.write(path, {"x": x, "y": x[:2]}, dtypes="BF16")
    items = dict(st.deserialize(open(path, "rb").read()))
    assert items["x"]["dtype"] in ("bfloat16", "BF16")
    assert list(items["x"]["shape"]) == [4, 3]
    bits = np.frombuffer(bytes(items["x"]["data"]), dtype="<u2").reshape(4, 3)
    assert np.array_equal(bits, sio.float32_to_bf16_bits(x))


def test_reads_pypi_written_file(tmp_path):
    st = _safetensors()
    t = _tensors()
    path = tmp_path / "p.safetensors"
    st.numpy.save_file(t, str(path), metadata={"who": "pypi"})
    got, meta = sio.read(path)
    assert meta == {"who": "pypi"}
    for name, want in t.items():
        assert np.array_equal(got[name], want), name


# ------------------------------------------------------------------ errors

def _write_raw(path, header, data=b"", pad=True):
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    if pad:
        text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(FileError, match="absent.safetensors"):
        sio.read(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("header,data,err,msg", [
    (b"[1, 2]", b"", FormatError, "not a JSON object|start with"),
    (b"{not json", b"", FormatError, "not valid JSON"),
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, FormatError,
     "reach past"),
    ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, FormatError,
     "needs 12 bytes"),
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, FormatError,
     "overlap"),
    ({"x": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, UnsupportedError,
     "unsupported dtype Q7"),
    ({"x": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, FormatError,
     "bad shape"),
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, FormatError,
     "bad data_offsets"),
    ({"x": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, FormatError, "bad data_offsets"),
    ({"__metadata__": {"a": 1}}, b"", FormatError, "__metadata__"),
    (b'{"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
     b'"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}', b"\0", FormatError, "twice"),
    (b"\xff\xfe{}", b"", FormatError, "UTF-8"),
])
def test_malformed(tmp_path, header, data, err, msg):
    path = _write_raw(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(err, match="bad.safetensors.*(%s)" % msg):
        sio.read(path)


def test_bad_header_length(tmp_path):
    path = tmp_path / "len.safetensors"
    path.write_bytes(struct.pack("<Q", 10 ** 12) + b"{}")
    with pytest.raises(FormatError, match="len.safetensors.*header length"):
        sio.read(path)
    path.write_bytes(b"\x01\x02")
    with pytest.raises(FormatError, match="too short"):
        sio.read(path)


def test_truncated(tmp_path):
    path = tmp_path / "t.safetensors"
    sio.write(path, _tensors())
    blob = path.read_bytes()
    for keep in (4, 20, len(blob) - 1):
        cut = tmp_path / "cut.safetensors"
        cut.write_bytes(blob[:keep])
        with pytest.raises(FormatError, match="cut.safetensors"):
            sio.read(cut)


def test_holes_are_tolerated(tmp_path):
    # The format doc allows any order; a gap between tensors is not an error.
    header = {"b": {"dtype": "U8", "shape": [2], "data_offsets": [6, 8]},
              "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    data = np.float32(2.0).tobytes() + b"\0\0" + b"\x07\x09"
    got, _ = sio.read(_write_raw(tmp_path / "h.safetensors", header, data))
    assert got["a"].tolist() == [2.0] and got["b"].tolist() == [7, 9]


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(InvalidArgumentError):
        sio.write(tmp_path / "x.safetensors", {"a": np.zeros(2, dtype=np.complex64)})
    with pytest.raises(InvalidArgumentError):
        sio.write(tmp_path / "x.safetensors", {"a": np.zeros(2)}, metadata={"k": 1})
    with pytest.raises(InvalidArgumentError):
        sio.write(tmp_path / "x.safetensors", {"__metadata__": np.zeros(2)})
    with pytest.raises(FileError, match="cannot write"):
        sio.write(tmp_path / "no" / "dir" / "x.safetensors", {"a": np.zeros(2)})
    assert not list(tmp_path.glob(".pkgnet-*"))  # no temporary left behind
