import json
import os
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest

import torchfile as tf
from pkgnet import convert, safetensors_io as sio, synthetic, torch_checkpoint as tc
from pkgnet.errors import (FileError, FormatError, InvalidArgumentError, ModelMismatchError)
from support import BINDINGS


def _meta(path):
    _, meta = sio.read_header(path)
    return json.loads(meta["pkgnet"])


def _expected_meta(k, width, arch, task="pred", channels=3, weights=None, mean=None, std=None,
                   input_order="bgr", teacher_order="bgr"):
    n = 1 + k
    return {
        "format_version": 1,
        "student": {"k": k, "width": width, "task": task, "channels": channels},
        "teacher": {"arch": arch, "channel_order": teacher_order,
                    "mean": mean or [0.0] * 3, "std": std or [1.0] * 3},
        "input": {"channel_order": input_order},
        "scoring": {"weights": weights or [1.0] * n, "mu": [0.0] * n, "sigma": [1.0] * n},
    }


@pytest.fixture
def synth(tmp_path):
    """Torch checkpoints of a random k=2 w16 student and a full resnet18
    (with layer3, layer4, fc and num_batches_tracked, like torchvision's)."""
    student, teacher = synthetic.random_state_dicts(2, 16, "resnet18", "pred", 3, seed=5)
    full = OrderedDict(teacher)
    rng = np.random.default_rng(0)
    for name in list(teacher):
        if name.endswith("running_var"):
            full[name[: -len("running_var")] + "num_batches_tracked"] = np.array(3, np.int64)
    full["layer3.0.conv1.weight"] = rng.normal(size=(256, 128, 3, 3)).astype(np.float32)
    full["layer4.1.bn2.running_mean"] = np.zeros(512, np.float32)
    full["fc.weight"] = rng.normal(size=(1000, 512)).astype(np.float32)
    full["fc.bias"] = np.zeros(1000, np.float32)
    s_path = tmp_path / "student.pt"
    t_path = tmp_path / "resnet18.pth"
    tf.write_zip(s_path, tf.tensors(student))
    tf.write_zip(t_path, tf.tensors(full))
    return student, teacher, s_path, t_path


# ------------------------------------------------------------ golden cases

def test_golden_convert(golden_case, tmp_path, capsys):
    name, folder, k, width, arch, teacher = golden_case
    out = tmp_path / (name + ".safetensors")
    rc = convert.main(["--student", str(folder / "student.pt"), "--k", str(k), "--task", "pred",
                       "--teacher", "%s=%s" % (arch, teacher), "-o", str(out)])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    tensors, meta = sio.read(out)
    assert list(meta) == ["pkgnet"]
    assert json.loads(meta["pkgnet"]) == _expected_meta(k, width, arch)

    src_s = tc.load_state_dict(folder / "student.pt")
    src_t = tc.load_state_dict(teacher)
    want = {"student." + n: v for n, v in src_s.items() if not n.endswith("num_batches_tracked")}
    want.update({"teacher." + n: v for n, v in src_t.items()
                 if not n.endswith("num_batches_tracked")})
    assert set(tensors) == set(want)
    expected_names = ({"student." + n for n in convert.student_shapes(k, width, 3, "pred")}
                      | {"teacher." + n for n in convert.teacher_shapes(arch)})
    assert set(tensors) == expected_names
    n_bn_s = sum(n.endswith("num_batches_tracked") for n in src_s)
    n_bn_t = sum(n.endswith("num_batches_tracked") for n in src_t)
    assert len(tensors) == len(src_s) - n_bn_s + len(src_t) - n_bn_t
    for n, v in want.items():
        assert tensors[n].dtype == np.float32 and np.array_equal(tensors[n], v), n
    entries, _ = sio.read_header(out)
    assert {e[0] for e in entries.values()} == {"F32"}


def test_golden_counts(golden_case, tmp_path):
    name, folder, k, width, arch, teacher = golden_case
    out = tmp_path / "m.safetensors"
    convert.convert(folder / "student.pt", teacher, arch, k, "pred", out)
    entries, _ = sio.read_header(out)
    n_student = sum(e.startswith("student.") for e in entries)
    n_teacher = sum(e.startswith("teacher.") for e in entries)
    # By hand from the spec: a double conv is 12 tensors, an up adds 2, the
    # outconv 2 (k=1 adds 3 strided convs); resnet18 to layer2 is 5 + 4 blocks
    # of 10 + a downsample of 5; resnext50 is 5 + 7 bottlenecks of 15 + 2 of 5.
    assert n_student == {2: 92, 1: 98}[k]
    assert n_teacher == {"resnet18": 50, "resnext50_32x4d": 120}[arch]


def test_cli_subprocess(tmp_path):
    from support import need_shared
    folder = need_shared("golden", "k2_w16_resnet18")
    out = tmp_path / "m.safetensors"
    env = dict(os.environ, PYTHONPATH=str(BINDINGS) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "pkgnet.convert", "--student", str(folder / "student.pt"),
           "--k", "2", "--task", "pred", "--teacher", "resnet18=%s" % (folder / "resnet18.pth"),
           "--weights", "0.01", "0.65", "0.35", "--mean", "0.406", "0.456", "0.485",
           "--std", "0.225", "0.224", "0.229", "--input-order", "rgb", "--teacher-order", "rgb",
           "--dtype", "bf16", "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "k=2 width=16" in r.stdout
    assert _meta(out) == _expected_meta(
        2, 16, "resnet18", weights=[0.01, 0.65, 0.35], mean=[0.406, 0.456, 0.485],
        std=[0.225, 0.224, 0.229], input_order="rgb", teacher_order="rgb")
    entries, _ = sio.read_header(out)
    assert {e[0] for e in entries.values()} == {"BF16"}

    r = subprocess.run(cmd[:-2] + ["--k", "1", "-o", str(out)], capture_output=True, text=True,
                       env=env, cwd=str(tmp_path))
    assert r.returncode == 1
    assert "error:" in r.stderr and "k=1 given" in r.stderr


# --------------------------------------------------------- synthetic inputs

def test_drops_teacher_tail_and_counters(synth, tmp_path):
    student, teacher, s_path, t_path = synth
    out = tmp_path / "m.safetensors"
    meta = convert.convert(s_path, t_path, "resnet18", 2, "pred", out)
    assert meta == _expected_meta(2, 16, "resnet18")
    tensors, _ = sio.read(out)
    assert not any(n.startswith(("teacher.layer3", "teacher.layer4", "teacher.fc")) for n in tensors)
    assert not any("num_batches_tracked" in n for n in tensors)
    assert len(tensors) == len(student) + len(teacher)
    for n, v in teacher.items():
        assert np.array_equal(tensors["teacher." + n], v)


@pytest.mark.parametrize("dtype,st,tol", [("f16", "F16", 1e-3), ("bf16", "BF16", 4e-3)])
def test_half_dtypes(synth, tmp_path, dtype, st, tol):
    student, teacher, s_path, t_path = synth
    out = tmp_path / "m.safetensors"
    convert.convert(s_path, t_path, "resnet18", 2, "pred", out, dtype=dtype)
    entries, _ = sio.read_header(out)
    assert {e[0] for e in entries.values()} == {st}
    tensors, _ = sio.read(out)
    for n, v in student.items():
        got = tensors["student." + n].astype(np.float32)
        assert np.all(np.abs(got - v) <= tol * np.abs(v) + 1e-6), n


def test_safetensors_inputs_and_wrappers(synth, tmp_path):
    student, teacher, s_path, t_path = synth
    s_st = tmp_path / "student.safetensors"
    sio.write(s_st, OrderedDict(("module." + n, v) for n, v in student.items()))
    t_wrapped = tmp_path / "teacher_ckpt.pt"
    tf.write_zip(t_wrapped, {"state_dict": tf.tensors(teacher), "epoch": 90})
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    convert.convert(s_st, t_wrapped, "resnet18", 2, "pred", a)
    convert.convert(s_path, t_path, "resnet18", 2, "pred", b)
    ta, ma = sio.read(a)
    tb, mb = sio.read(b)
    assert ma == mb and set(ta) == set(tb)
    assert all(np.array_equal(ta[n], tb[n]) for n in ta)
    # A model file can be fed back in as either side.
    c = tmp_path / "c.safetensors"
    convert.convert(a, a, "resnet18", 2, "pred", c)
    tc_, _ = sio.read(c)
    assert all(np.array_equal(ta[n], tc_[n]) for n in ta)


def test_state_dicts_in_memory(tmp_path):
    student, teacher = synthetic.random_state_dicts(1, 64, "wide_resnet50_2", "recon", 1, seed=2)
    out = tmp_path / "m.safetensors"
    meta = convert.convert(student, teacher, "wide_resnet50_2", 1, "recon", out,
                           weights=[0.85, 0.15])
    assert meta == _expected_meta(1, 64, "wide_resnet50_2", task="recon", channels=1,
                                  weights=[0.85, 0.15])
    assert _meta(out) == meta


@pytest.mark.parametrize("arch", sorted(convert.ARCHS))
@pytest.mark.parametrize("k", [1, 2])
def test_every_arch(tmp_path, arch, k):
    width = 16 if convert.ARCHS[arch][0] == "basic" else 64
    student, teacher = synthetic.random_state_dicts(k, width, arch, "pred", 3, seed=1)
    out = tmp_path / "m.safetensors"
    convert.convert(student, teacher, arch, k, "pred", out)
    entries, _ = sio.read_header(out)
    assert len(entries) == len(student) + len(teacher)


# ---------------------------------------------------------------- refusals

def _convert(student, teacher, tmp_path, arch="resnet18", k=2, task="pred", **kw):
    return convert.convert(student, teacher, arch, k, task, tmp_path / "out.safetensors", **kw)


def test_missing_tensor_named(synth, tmp_path):
    student, teacher, _, _ = synth
    s = OrderedDict(student)
    del s["decoder.up2.conv.conv.4.running_var"]
    with pytest.raises(ModelMismatchError, match="'decoder.up2.conv.conv.4.running_var' is missing"):
        _convert(s, teacher, tmp_path)
    t = OrderedDict(teacher)
    del t["layer2.0.downsample.1.weight"]
    with pytest.raises(ModelMismatchError, match="teacher.*'layer2.0.downsample.1.weight' is missing"):
        _convert(student, t, tmp_path)
    assert not (tmp_path / "out.safetensors").exists()


def test_wrong_shape_named(synth, tmp_path):
    student, teacher, _, _ = synth
    s = OrderedDict(student)
    s["encoder.down2.mpconv.1.conv.3.weight"] = np.zeros((64, 64, 1, 1), np.float32)
    with pytest.raises(ModelMismatchError,
                       match=r"'encoder.down2.mpconv.1.conv.3.weight' has shape \[64, 64, 1, 1\], "
                             r"expected \[64, 64, 3, 3\]"):
        _convert(s, teacher, tmp_path)


def test_extra_tensor_refused(synth, tmp_path):
    student, teacher, _, _ = synth
    s = OrderedDict(student)
    s["decoder.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ModelMismatchError, match="unexpected student tensor 'decoder.extra.weight'"):
        _convert(s, teacher, tmp_path)
    t = OrderedDict(teacher)
    t["avgpool.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ModelMismatchError, match="unexpected teacher.*'avgpool.weight'"):
        _convert(student, t, tmp_path)


def test_non_float_or_non_finite_refused(synth, tmp_path):
    student, teacher, _, _ = synth
    s = OrderedDict(student)
    s["decoder.outconv.conv.bias"] = np.zeros(3, np.int64)
    with pytest.raises(ModelMismatchError, match="outconv.conv.bias' has dtype int64"):
        _convert(s, teacher, tmp_path)
    s["decoder.outconv.conv.bias"] = np.array([0, np.nan, 0], np.float32)
    with pytest.raises(ModelMismatchError, match="non-finite"):
        _convert(s, teacher, tmp_path)


def test_k_mismatch(synth, tmp_path):
    student, teacher, _, _ = synth
    with pytest.raises(ModelMismatchError, match="k=1 given"):
        _convert(student, teacher, tmp_path, k=1)
    s1, t1 = synthetic.random_state_dicts(1, 16, "resnet18", "pred", 3)
    with pytest.raises(ModelMismatchError, match="k=2 given.*mpconv.0.weight"):
        _convert(s1, t1, tmp_path, k=2)


def test_task_and_channels_mismatch(synth, tmp_path):
    student, teacher, _, _ = synth
    with pytest.raises(ModelMismatchError, match="12 input channels.*'recon'.*looks like a 'pred'"):
        _convert(student, teacher, tmp_path, task="recon")
    with pytest.raises(ModelMismatchError, match="--channels 1 given.*12 input channels"):
        _convert(student, teacher, tmp_path, channels=1)
    sr, tr = synthetic.random_state_dicts(2, 16, "resnet18", "recon", 3)
    with pytest.raises(ModelMismatchError, match="3 input channels.*'pred'.*looks like a 'recon'"):
        _convert(sr, tr, tmp_path, task="pred")
    # A student whose outconv disagrees with its input channels.
    s = OrderedDict(student)
    s["decoder.outconv.conv.weight"] = np.zeros((1, 16, 1, 1), np.float32)
    s["decoder.outconv.conv.bias"] = np.zeros(1, np.float32)
    with pytest.raises(ModelMismatchError, match=r"outconv.conv.weight' has shape \[1, 16, 1, 1\]"):
        _convert(s, teacher, tmp_path)


def test_distilled_shape_mismatch(tmp_path):
    student, _ = synthetic.random_state_dicts(2, 16, "resnet18", "pred", 3)
    _, teacher50 = synthetic.random_state_dicts(2, 64, "resnet50", "pred", 3)
    with pytest.raises(ModelMismatchError,
                       match=r"student feature \[128, 4, 4\].*teacher resnet50 feature \[512, 4, 4\]"):
        _convert(student, teacher50, tmp_path, arch="resnet50")


def test_wrong_arch_for_file(synth, tmp_path):
    student, teacher, _, _ = synth
    with pytest.raises(ModelMismatchError, match="teacher \\(resnet34\\) tensor 'layer1.2.*is missing"
                                                 ".*look like a resnet18"):
        _convert(student, teacher, tmp_path, arch="resnet34")
    with pytest.raises(ModelMismatchError, match="teacher \\(resnet50\\) tensor 'layer1.0.conv3.weight'"
                                                 " is missing.*look like a resnet18"):
        _convert(student, teacher, tmp_path, arch="resnet50")
    _, t34 = synthetic.random_state_dicts(2, 16, "resnet34", "pred", 3)
    with pytest.raises(ModelMismatchError, match="unexpected teacher \\(resnet18\\) tensor "
                                                 "'layer1.2.*look like a resnet34"):
        _convert(student, t34, tmp_path, arch="resnet18")


@pytest.mark.parametrize("kw,msg", [
    ({"weights": [1.0, 2.0]}, "needs 3 values"),
    ({"weights": [1.0, float("nan"), 1.0]}, "finite"),
    ({"std": [1.0, 0.0, 1.0]}, "std must be positive"),
    ({"mean": [0.1, 0.2]}, "needs 3 values"),
    ({"sigma": [1.0, -1.0, 1.0]}, "sigma must be positive"),
    ({"input_order": "grb"}, "input order"),
    ({"dtype": "f64"}, "dtype"),
])
def test_bad_options(synth, tmp_path, kw, msg):
    student, teacher, _, _ = synth
    with pytest.raises(InvalidArgumentError, match=msg):
        _convert(student, teacher, tmp_path, **kw)


def test_bad_files(synth, tmp_path):
    student, teacher, s_path, t_path = synth
    with pytest.raises(FileError, match="absent.pt"):
        _convert(tmp_path / "absent.pt", t_path, tmp_path)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(s_path.read_bytes()[:5000])
    with pytest.raises(FormatError, match="cut.pt"):
        _convert(cut, t_path, tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage}")
    with pytest.raises(FormatError, match="bad.safetensors"):
        _convert(s_path, bad, tmp_path)


def test_cli_errors(synth, tmp_path, capsys):
    _, _, s_path, t_path = synth
    base = ["--student", str(s_path), "--k", "2", "--task", "pred", "-o", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as e:
        convert.main(base + ["--teacher", str(t_path)])
    assert e.value.code == 2 and "ARCH=PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        convert.main(base + ["--teacher", "resnet101=%s" % t_path])
    assert e.value.code == 2 and "unknown teacher arch 'resnet101'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        convert.main(base[:4] + ["--task", "detect", "--teacher", "resnet18=%s" % t_path])
    assert e.value.code == 2
    rc = convert.main(base + ["--teacher", "resnet18=%s" % (tmp_path / "missing.pth")])
    err = capsys.readouterr().err
    assert rc == 1 and "missing.pth" in err
    rc = convert.main(base + ["--teacher", "resnet18=%s" % t_path, "--weights", "1", "2"])
    assert rc == 1 and "needs 3 values" in capsys.readouterr().err
    rc = convert.main(base + ["--teacher", "resnet18=%s" % t_path, "--channels", "1"])
    assert rc == 1 and "--channels 1" in capsys.readouterr().err
