from collections import OrderedDict

import numpy as np
import pytest

import torchfile as tf
from pkgnet import torch_checkpoint as tc
from pkgnet.errors import Error, FileError, FormatError, UnsupportedError
from support import GOLDEN_CASES, need_shared


def _sample(seed=0):
    rng = np.random.default_rng(seed)
    return OrderedDict([
        ("conv.weight", rng.normal(size=(4, 3, 3, 3)).astype(np.float32)),
        ("conv.bias", rng.normal(size=4).astype(np.float32)),
        ("bn.num_batches_tracked", np.array(7, dtype=np.int64)),
        ("half", rng.normal(size=(2, 5)).astype(np.float16)),
        ("double", rng.normal(size=(3,))),
        ("bytes", rng.integers(0, 256, size=(6,), dtype=np.uint8)),
        ("flags", np.array([True, False, True])),
        ("ints", np.arange(-3, 3, dtype=np.int32)),
        ("scalar", np.array(2.5, dtype=np.float32)),
        ("empty", np.zeros((0, 3), dtype=np.float32)),
    ])


# ------------------------------------------------------- golden checkpoints

@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden_student_and_teacher(case):
    k, width, arch, teacher = GOLDEN_CASES[case]
    folder = need_shared("golden", case)
    student = tc.load_state_dict(folder / "student.pt")
    w = student["encoder.in_conv.conv.conv.0.weight"]
    assert w.shape == (width, 12, 3, 3) and w.dtype == np.float32
    assert student["decoder.up1.up.weight"].shape == (8 * width, 4 * width, 3, 3)
    assert student["encoder.in_conv.conv.conv.1.num_batches_tracked"].dtype == np.int64
    assert ("encoder.down1.mpconv.0.weight" in student) == (k == 1)
    assert all(np.all(np.isfinite(v)) for v in student.values())
    # Random, non-trivial BatchNorm statistics (the golden README's promise).
    assert not np.allclose(student["encoder.in_conv.conv.conv.1.running_var"], 1.0)

    t = tc.load_state_dict(folder / teacher)
    assert t["conv1.weight"].shape == (64, 3, 7, 7)
    assert not any(n.startswith(("layer3.", "layer4.", "fc.")) for n in t)
    if arch == "resnext50_32x4d":
        assert t["layer1.0.conv2.weight"].shape == (128, 4, 3, 3)  # 32 groups of 4
        assert t["layer2.3.bn3.weight"].shape == (512,)
    else:
        assert t["layer2.1.bn2.running_var"].shape == (128,)
    assert tc.is_torch_checkpoint(folder / "student.pt")


def test_cifar_resnet_legacy_format():
    path = need_shared("weights", "cifar-resnet", "resnet20-12fca82f.th")
    raw = tc.load(path)
    assert set(raw) == {"state_dict", "best_prec1"}
    assert abs(raw["best_prec1"] - 91.78) < 1e-3
    assert raw["state_dict"]["module.conv1.weight"].shape == (16, 3, 3, 3)
    sd = tc.load_state_dict(path)
    assert sd["conv1.weight"].shape == (16, 3, 3, 3)
    assert sd["conv1.weight"].dtype == np.float32
    assert sd["layer3.2.conv2.weight"].shape == (64, 64, 3, 3)
    assert sd["linear.weight"].shape == (10, 64)
    assert not any("num_batches_tracked" in n for n in sd)
    assert all(np.all(np.isfinite(v)) for v in sd.values())
    assert float(sd["bn1.running_var"].min()) > 0
    assert np.all(raw["state_dict"]["module.conv1.weight"] == sd["conv1.weight"])
    assert tc.is_torch_checkpoint(path)


def test_cifar_resnet56_legacy_format():
    path = need_shared("weights", "cifar-resnet", "resnet56-4bfd9763.th")
    raw = tc.load(path)
    assert abs(raw["best_prec1"] - 93.62) < 1e-2
    sd = tc.load_state_dict(path)
    assert sd["layer3.8.conv2.weight"].shape == (64, 64, 3, 3)
    assert sum(v.size for n, v in sd.items() if "running" not in n) > 800_000


# ------------------------------------------------------------- round trips

@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_round_trip_dtypes(tmp_path, layout):
    sd = _sample()
    path = tmp_path / "x.pt"
    (tf.write_zip if layout == "zip" else tf.write_legacy)(path, tf.tensors(sd))
    got = tc.load_state_dict(path)
    assert list(got) == list(sd)
    for name, want in sd.items():
        have = got[name]
        assert have.shape == want.shape, name
        if want.dtype == np.float16:
            assert have.dtype == np.float32  # widened losslessly
            assert np.array_equal(have, want.astype(np.float32))
        else:
            assert have.dtype == want.dtype, name
            assert np.array_equal(have, want), name


def test_bfloat16_widened(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 0.0, 1e-3], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    exact = (bits.astype(np.uint32) << 16).view(np.float32)
    path = tmp_path / "bf16.pt"
    tf.write_zip(path, OrderedDict(w=tf.Tensor(storage=bits, size=(5,), dtype="bfloat16")))
    got = tc.load_state_dict(path)["w"]
    assert got.dtype == np.float32
    assert np.array_equal(got, exact)


def test_strides_offsets_and_shared_storage(tmp_path):
    base = np.arange(24, dtype=np.float32)
    obj = OrderedDict([
        # a transposed [4,6] -> [6,4] view
        ("t", tf.Tensor(storage=base, size=(6, 4), stride=(1, 6))),
        # the same storage from an offset with a step
        ("slice", tf.Tensor(storage=base, offset=5, size=(3, 2), stride=(4, 2))),
        ("whole", tf.Tensor(storage=base, size=(2, 12))),
        # a broadcast (stride 0) view
        ("bcast", tf.Tensor(storage=base, offset=3, size=(2, 3), stride=(0, 1))),
    ])
    for layout, write in (("zip", tf.write_zip), ("legacy", tf.write_legacy)):
        path = tmp_path / ("v." + layout)
        write(path, obj)
        got = tc.load_state_dict(path)
        assert np.array_equal(got["t"], base.reshape(4, 6).T)
        want = np.lib.stride_tricks.as_strided(base[5:], (3, 2), (16, 8))
        assert np.array_equal(got["slice"], want)
        assert np.array_equal(got["whole"], base.reshape(2, 12))
        assert np.array_equal(got["bcast"], np.stack([base[3:6]] * 2))
        got["t"][0, 0] = 99  # arrays own their data
        assert got["whole"][0, 0] == 0


def test_big_endian_zip(tmp_path):
    sd = OrderedDict(a=np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
                     b=np.array([1, -2, 3], dtype=np.int64))
    path = tmp_path / "be.pt"
    tf.write_zip(path, tf.tensors(sd), byteorder="big")
    got = tc.load_state_dict(path)
    assert np.array_equal(got["a"], sd["a"]) and np.array_equal(got["b"], sd["b"])


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "model_state_dict"])
def test_wrapped_and_module_prefix(tmp_path, wrapper):
    sd = OrderedDict(("module." + k, v) for k, v in _sample().items())
    obj = {wrapper: tf.tensors(sd), "epoch": 12, "best": 0.5, "opt": {"lr": [1e-4]}}
    path = tmp_path / "wrapped.pt"
    tf.write_zip(path, obj)
    got = tc.load_state_dict(path)
    assert list(got) == list(_sample())
    raw = tc.load(path)
    assert raw["epoch"] == 12 and raw["opt"] == {"lr": [1e-4]}


def test_prefix_directory_name_is_free(tmp_path):
    path = tmp_path / "p.pt"
    tf.write_zip(path, tf.tensors({"a": np.ones(3, np.float32)}), prefix="some_other_name")
    assert np.array_equal(tc.load_state_dict(path)["a"], np.ones(3))


# ------------------------------------------------------------------ errors

def test_missing_file(tmp_path):
    with pytest.raises(FileError, match="nope.pt"):
        tc.load(tmp_path / "nope.pt")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"hello world, not a checkpoint")
    with pytest.raises(FormatError, match="junk.pt.*not a torch checkpoint"):
        tc.load(path)
    assert not tc.is_torch_checkpoint(path)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        tc.load(empty)
    tiny = tmp_path / "tiny.pt"
    tiny.write_bytes(b"\x80\x02")
    assert not tc.is_torch_checkpoint(tiny)
    with pytest.raises(FormatError, match="tiny.pt"):
        tc.load(tiny)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, 0.99])
def test_truncated_zip(tmp_path, keep):
    blob = tf.zip_bytes(tf.tensors(_sample()))
    path = tmp_path / "cut.pt"
    path.write_bytes(blob[: int(len(blob) * keep)])
    with pytest.raises(FormatError, match="cut.pt.*(truncated|corrupt)"):
        tc.load(path)


def test_corrupt_storage_crc(tmp_path):
    sd = OrderedDict(a=np.arange(64, dtype=np.float32))
    blob = bytearray(tf.zip_bytes(tf.tensors(sd)))
    raw = np.arange(64, dtype=np.float32).tobytes()
    at = bytes(blob).index(raw)
    blob[at + 10] ^= 0xFF
    path = tmp_path / "crc.pt"
    path.write_bytes(bytes(blob))
    with pytest.raises(FormatError, match="crc.pt"):
        tc.load(path)


def test_missing_storage(tmp_path):
    path = tmp_path / "miss.pt"
    tf.write_zip(path, tf.tensors(_sample()), skip_storages=("1",))
    with pytest.raises(FormatError, match="miss.pt.*missing storage '1'"):
        tc.load(path)


def test_short_storage(tmp_path):
    # The pickle claims a 24-element storage; the record holds only 12.
    base = np.arange(24, dtype=np.float32)
    t = tf.Tensor(storage=base, size=(24,))
    blob = tf.zip_bytes(OrderedDict(a=t))
    import io
    import zipfile
    src = zipfile.ZipFile(io.BytesIO(blob))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in src.namelist():
            data = src.read(name)
            z.writestr(name, data[:48] if name.endswith("data/0") else data)
    path = tmp_path / "short.pt"
    path.write_bytes(out.getvalue())
    with pytest.raises(FormatError, match="short.pt.*storage '0'"):
        tc.load(path)


def test_view_past_storage(tmp_path):
    base = np.arange(10, dtype=np.float32)
    path = tmp_path / "past.pt"
    tf.write_zip(path, OrderedDict(a=tf.Tensor(storage=base, offset=4, size=(2, 4), stride=(4, 1))))
    with pytest.raises(FormatError, match="past.pt.*reaches past"):
        tc.load(path)


def test_legacy_truncated(tmp_path):
    blob = tf.legacy_bytes(tf.tensors(_sample()))
    for keep in (len(blob) - 3, len(blob) // 2, 40):
        path = tmp_path / "cut.th"
        path.write_bytes(blob[:keep])
        with pytest.raises(FormatError, match="cut.th"):
            tc.load(path)


@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval"),
                                         ("posix", "system"), ("torch.nn.modules.conv", "Conv2d"),
                                         ("numpy", "load")])
def test_unsupported_global_runs_nothing(tmp_path, module, name):
    marker = tmp_path / "pwned"
    payload = tf.Reduce(tf.Global(module, name), ("touch %s" % marker,))
    pkl = tf.raw_pickle(OrderedDict(a=payload))
    path = tmp_path / "evil.pt"
    tf.write_zip(path, None, pickle_bytes=pkl)
    with pytest.raises(UnsupportedError, match="evil.pt.*unsupported pickle global '%s.%s'"
                       % (module, name)):
        tc.load(path)
    assert not marker.exists()


def test_pickled_module_refused(tmp_path):
    pid = tf.PersistentId(("module", tf.Global("torch.nn", "Linear"), "model.py", "src"))
    path = tmp_path / "module.th"
    # Splice a main pickle holding a module persistent id into a legacy file.
    head = b"".join(tf.raw_pickle(x) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    path.write_bytes(head + tf.raw_pickle({"m": pid}) + tf.raw_pickle([]))
    with pytest.raises(Error, match="module.th"):
        tc.load(path)


def test_no_tensors(tmp_path):
    path = tmp_path / "none.pt"
    tf.write_zip(path, {"epoch": 3, "note": "x"})
    with pytest.raises(FormatError, match="none.pt.*no tensors"):
        tc.load_state_dict(path)


def test_errors_are_pkgnet_errors(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"\x80" + np.random.default_rng(0).bytes(99))
    with pytest.raises(Error):
        tc.load(path)
