"""The CIFAR ResNet and EfficientNet-Lite0 teachers, distilled pairs and
projections: converter output, and pkgnet's scores against the float64
reference (tests/reference.py), with real weights where they are available."""

import json
import os
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest

import pkgnet
from pkgnet import convert, safetensors_io as sio, synthetic, torch_checkpoint as tc
from pkgnet.errors import FileError, FormatError, InvalidArgumentError, ModelMismatchError
from reference import Model as ReferenceModel, reference_scores, teacher_forward, teacher_input
from support import BINDINGS, need_shared, require_library
from test_binding import assert_matches_reference

CIFAR_WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}
IMAGENET = {"mean": convert.IMAGENET_MEAN, "std": convert.IMAGENET_STD}


@pytest.fixture(scope="module")
def native_library():
    return require_library()


def _cifar_checkpoint(arch):
    return need_shared("weights", "cifar-resnet", CIFAR_WEIGHTS[arch])


def _lite0_checkpoint():
    try:
        return convert.lite0_checkpoint_path()
    except FileError as exc:
        pytest.skip("EfficientNet-Lite0 weights not installed (%s); scripts/install-deps.sh "
                    "installs them" % exc)


def _student(k, width, arch, pairs, seed):
    """A random student holding the projections ``pairs`` need."""
    student, _ = synthetic.random_state_dicts(k, width, arch, "pred", 3, seed=seed, pairs=pairs)
    return student


def _score_against_reference(path, n=5, seed=1):
    cubes = synthetic.random_cubes(n, seed=seed)
    with pkgnet.Model(path) as model:
        scores = model.score(cubes, maps=True, prediction=True)
        info = model.info
    ref = reference_scores(path, cubes)
    assert_matches_reference(scores, ref)
    assert info.pairs == len(ref["inconsistency_maps"])
    assert tuple(info.pair_size) == tuple(m.shape[1] for m in ref["inconsistency_maps"])
    # The pairs must disagree by varying amounts, or the maps test nothing.
    assert np.ptp(np.concatenate([m.ravel() for m in ref["inconsistency_maps"]])) > 0.05
    return scores, ref


# ------------------------------------------------------- real-weight teachers

@pytest.mark.parametrize("arch", sorted(CIFAR_WEIGHTS))
def test_cifar_teacher_file(arch, tmp_path):
    checkpoint = _cifar_checkpoint(arch)
    out = tmp_path / (arch + ".teacher.safetensors")
    rc = convert.main(["teacher", "--arch", arch, "--checkpoint", str(checkpoint), "-o", str(out)])
    assert rc == 0
    tensors, meta = sio.read(out)
    settings = json.loads(meta["pkgnet_teacher"])
    assert settings == {"format_version": 1, "arch": arch, "channel_order": "rgb", **IMAGENET}
    source = tc.load_state_dict(checkpoint)  # 'module.' stripped
    kept = [n for n in source if not n.startswith("linear.")]
    assert list(tensors) == ["teacher." + n for n in kept]
    for name in kept:
        assert np.array_equal(tensors["teacher." + name], source[name]), name


@pytest.mark.parametrize("arch,width,pairs", [
    # Channels equal on both sides: no projections.
    ("resnet20", 16, [("d8", "layer3"), ("d16", "layer2"), ("e32", "layer1")]),
    # Width 8: every pair projects onto the teacher's channels.
    ("resnet20", 8, [("e8", "layer3"), ("e16", "layer2"), ("d32", "layer1"), ("d8", "layer3")]),
    ("resnet56", 16, [("d8", "layer3"), ("e16", "layer2")]),
    ("resnet56", 8, [("d16", "layer2")]),
])
@pytest.mark.usefixtures("native_library")
def test_cifar_teacher_scores_match_reference(arch, width, pairs, tmp_path):
    teacher = tmp_path / "teacher.safetensors"
    convert.convert_teacher(_cifar_checkpoint(arch), arch, teacher)
    model = tmp_path / "model.safetensors"
    student = _student(2, width, arch, pairs, seed=width)
    meta = convert.convert(student, teacher, arch, 2, "pred", model, pairs=pairs,
                           weights=[1.0] + [0.5] * len(pairs))
    # The teacher file's normalisation became the model's.
    assert meta["teacher"] == {"arch": arch, "channel_order": "rgb", **IMAGENET}
    assert meta["pairs"] == [{"student": s, "teacher": t} for s, t in pairs]
    entries, _ = sio.read_header(model)
    projected = [j for j in range(len(pairs)) if "student.projection.%d.weight" % j in entries]
    assert projected == ([] if width == 16 else list(range(len(pairs))))
    _score_against_reference(model)


@pytest.mark.parametrize("k,width,pairs", [
    (2, 6, [("d8", "blocks.2"), ("e8", "blocks.1")]),  # 4w = 24: no projections
    (2, 16, [("bottleneck", "blocks.4"), ("d8", "blocks.2"), ("d16", "blocks.0")]),
    (1, 8, [("bottleneck", "blocks.3"), ("e8", "blocks.2")]),
])
@pytest.mark.usefixtures("native_library")
def test_efficientnet_lite0_scores_match_reference(k, width, pairs, tmp_path):
    checkpoint = _lite0_checkpoint()
    teacher = tmp_path / "lite0.teacher.safetensors"
    settings, count = convert.convert_teacher(None, "efficientnet_lite0", teacher)
    assert settings["arch"] == "efficientnet_lite0" and count == len(convert.teacher_shapes(
        "efficientnet_lite0"))
    tensors, _ = sio.read(teacher)
    source = tc.load_state_dict(checkpoint)
    assert not any(n.startswith(("teacher._fc.", "teacher._conv_head.", "teacher._bn1."))
                   for n in tensors)
    assert all(np.array_equal(v, source[n[len("teacher."):]]) for n, v in tensors.items())
    model = tmp_path / "model.safetensors"
    convert.convert(_student(k, width, "efficientnet_lite0", pairs, seed=k), teacher,
                    "efficientnet_lite0", k, "pred", model, pairs=pairs)
    _score_against_reference(model)


# ------------------------------------------------------ random-weight models

@pytest.mark.parametrize("arch,k,width,pairs", [
    ("resnet18", 2, 8, None),  # the published pairs, both projected
    ("resnet50", 1, 16, None),
    ("resnet34", 2, 16, [("e8", "layer1"), ("d8", "layer1"), ("bottleneck", "layer2")]),
    ("resnet20", 1, 12, [("d32", "layer1"), ("e8", "layer3")]),
    ("resnet56", 2, 16, [("d8", "layer3")]),
    ("efficientnet_lite0", 2, 16, [("d8", "blocks.1"), ("bottleneck", "blocks.3"),
                                   ("d16", "blocks.0"), ("e8", "blocks.2")]),
])
@pytest.mark.usefixtures("native_library")
def test_random_models_with_pairs_match_reference(arch, k, width, pairs, tmp_path):
    path = tmp_path / "m.safetensors"
    synthetic.random_model(path, k=k, width=width, arch=arch, seed=7, pairs=pairs,
                           weights=[0.5] + [1.5] * (len(pairs) if pairs else k))
    _score_against_reference(path)


def test_random_teacher_activations_stay_order_one(tmp_path):
    """Random teachers must give features of a useful scale, or the tests
    above compare near-zero maps."""
    for arch in ("resnet20", "resnet56", "efficientnet_lite0"):
        path = tmp_path / (arch + ".safetensors")
        blocks = list(convert.teacher_blocks(arch))
        eight = [b for b, (_, side) in convert.teacher_blocks(arch).items() if side == 8]
        synthetic.random_model(path, k=2, width=16, arch=arch, seed=3, pairs=[("d8", eight[-1])])
        model = ReferenceModel(path)
        x = synthetic.random_cubes(2, seed=4)[:, 4].transpose(0, 3, 1, 2) / 255.0
        for name, f in zip(blocks, teacher_forward(model.t, arch, teacher_input(model, x), blocks)):
            rms = float(np.sqrt(np.mean(f ** 2)))
            assert 0.05 < rms < 20, (arch, name, rms)


# ----------------------------------------------------------- the converter

def test_teacher_blocks_shapes():
    assert convert.teacher_blocks("resnet20") == OrderedDict(
        [("layer1", (16, 32)), ("layer2", (32, 16)), ("layer3", (64, 8))])
    lite = convert.teacher_blocks("efficientnet_lite0")
    assert list(lite) == ["blocks.%d" % i for i in range(16)]
    assert lite["blocks.2"] == (24, 8) and lite["blocks.4"] == (40, 4)
    assert lite["blocks.15"] == (320, 1)
    assert convert.teacher_blocks("resnet50") == OrderedDict([("layer1", (256, 8)),
                                                               ("layer2", (512, 4))])


def test_model_cli_with_pairs_and_teacher_file(tmp_path, capsys):
    teacher = tmp_path / "r20.safetensors"
    synthetic.random_teacher(teacher, "resnet20", seed=1)
    student = tmp_path / "student.safetensors"
    pairs = [("d8", "layer3"), ("e16", "layer2")]
    sio.write(student, _student(2, 8, "resnet20", pairs, seed=2))
    out = tmp_path / "model.safetensors"
    rc = convert.main(["--student", str(student), "--k", "2", "--task", "pred", "--teacher",
                       "resnet20=%s" % teacher, "--pairs", "d8:layer3,e16:layer2",
                       "--weights", "1", "2", "3", "-o", str(out)])
    assert rc == 0
    assert "pairs=d8:layer3,e16:layer2" in capsys.readouterr().out
    meta = json.loads(sio.read_header(out)[1]["pkgnet"])
    assert meta["pairs"] == [{"student": "d8", "teacher": "layer3"},
                             {"student": "e16", "teacher": "layer2"}]
    assert meta["scoring"]["weights"] == [1.0, 2.0, 3.0]
    # Explicit normalisation beats the teacher file's.
    rc = convert.main(["--student", str(student), "--k", "2", "--task", "pred", "--teacher",
                       "resnet20=%s" % teacher, "--pairs", "d8:layer3,e16:layer2",
                       "--teacher-order", "bgr", "--mean", "0", "0", "0", "-o", str(out)])
    assert rc == 0
    meta = json.loads(sio.read_header(out)[1]["pkgnet"])
    assert meta["teacher"] == {"arch": "resnet20", "channel_order": "bgr",
                               "mean": [0.0, 0.0, 0.0], "std": convert.IMAGENET_STD}


def test_cli_subprocess_teacher(tmp_path):
    checkpoint = tmp_path / "r20.safetensors"
    sio.write(checkpoint, synthetic.random_state_dicts(2, 16, "resnet20", seed=1)[1])
    out = tmp_path / "t.safetensors"
    env = dict(os.environ, PYTHONPATH=str(BINDINGS))
    proc = subprocess.run([sys.executable, "-m", "pkgnet.convert", "teacher", "--arch", "resnet20",
                           "--checkpoint", str(checkpoint), "--dtype", "f16", "-o", str(out)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "resnet20 teacher, 95 tensors" in proc.stdout
    entries, meta = sio.read_header(out)
    assert {e[0] for e in entries.values()} == {"F16"}
    assert json.loads(meta["pkgnet_teacher"])["arch"] == "resnet20"


def test_pair_errors(tmp_path):
    student, teacher = synthetic.random_state_dicts(2, 16, "resnet20", seed=1,
                                                    pairs=[("d8", "layer3")])
    out = tmp_path / "m.safetensors"
    with pytest.raises(InvalidArgumentError, match="no default pairs.*--pairs d8:layer3"):
        convert.convert(student, teacher, "resnet20", 2, "pred", out)
    with pytest.raises(InvalidArgumentError, match="unknown student feature 'd4'"):
        convert.convert(student, teacher, "resnet20", 2, "pred", out, pairs=[("d4", "layer3")])
    with pytest.raises(InvalidArgumentError, match="resnet20 has no block 'layer4'"):
        convert.convert(student, teacher, "resnet20", 2, "pred", out, pairs=[("d8", "layer4")])
    with pytest.raises(ModelMismatchError, match=r"is 4x4 but teacher resnet20 feature \[64, 8, 8\]"
                                                 r" is 8x8"):
        convert.convert(student, teacher, "resnet20", 2, "pred", out,
                        pairs=[("bottleneck", "layer3")])
    with pytest.raises(InvalidArgumentError, match="1 to 4 distilled pairs, not 5"):
        convert.convert(student, teacher, "resnet20", 2, "pred", out, pairs=[("d8", "layer3")] * 5)
    with pytest.raises(InvalidArgumentError, match="STUDENT:TEACHER"):
        convert.parse_pairs("d8-layer3")
    with pytest.raises(InvalidArgumentError, match="needs 2 values"):
        convert.convert(student, teacher, "resnet20", 2, "pred", out, pairs=[("d8", "layer3")],
                        weights=[1, 1, 1])
    assert not out.exists()


def test_projection_errors(tmp_path):
    out = tmp_path / "m.safetensors"
    student, teacher = synthetic.random_state_dicts(2, 8, "resnet20", seed=1,
                                                    pairs=[("d8", "layer3")])
    assert student["projection.0.weight"].shape == (64, 32, 1, 1)
    missing = OrderedDict((n, v) for n, v in student.items() if not n.startswith("projection."))
    with pytest.raises(ModelMismatchError, match=r"no 1x1 projection 'projection.0.weight' "
                                                 r"\[64, 32, 1, 1\]"):
        convert.convert(missing, teacher, "resnet20", 2, "pred", out, pairs=[("d8", "layer3")])
    bad = OrderedDict(student)
    bad["projection.0.bias"] = np.zeros(32, np.float32)
    with pytest.raises(ModelMismatchError, match=r"'projection.0.bias' has shape \[32\]"):
        convert.convert(bad, teacher, "resnet20", 2, "pred", out, pairs=[("d8", "layer3")])
    # At width 16, d8 and layer3 both have 64 channels: no projection allowed.
    plain, _ = synthetic.random_state_dicts(2, 16, "resnet20", seed=1, pairs=[("d8", "layer3")])
    plain["projection.0.weight"] = np.zeros((64, 64, 1, 1), np.float32)
    with pytest.raises(ModelMismatchError, match="unexpected student tensor 'projection.0.weight'"
                                                 ".*64 channels on both sides"):
        convert.convert(plain, teacher, "resnet20", 2, "pred", out, pairs=[("d8", "layer3")])
    assert not out.exists()


def test_teacher_file_errors(tmp_path):
    teacher = tmp_path / "r56.safetensors"
    synthetic.random_teacher(teacher, "resnet56", seed=1)
    student = _student(2, 16, "resnet20", [("d8", "layer3")], seed=1)
    out = tmp_path / "m.safetensors"
    with pytest.raises(ModelMismatchError, match="teacher file holds a resnet56, not a resnet20"):
        convert.convert(student, teacher, "resnet20", 2, "pred", out, pairs=[("d8", "layer3")])
    _, cifar = synthetic.random_state_dicts(2, 16, "resnet56", seed=1)
    with pytest.raises(ModelMismatchError, match="look like a resnet56"):
        convert.convert_teacher(cifar, "resnet20", out)
    with pytest.raises(InvalidArgumentError, match="needs a checkpoint"):
        convert.convert_teacher(None, "resnet20", out)
    model = tmp_path / "model.safetensors"
    synthetic.random_model(model, seed=1)
    with pytest.raises(FormatError, match="not a pkgnet teacher file"):
        convert.read_teacher(model)
    assert not out.exists()


def test_existing_model_files_unchanged(tmp_path):
    """Without pairs the converter writes exactly what it wrote before: no
    'pairs' key, the published code's normalisation."""
    student, teacher = synthetic.random_state_dicts(2, 16, "resnet18", seed=3)
    meta = convert.convert(student, teacher, "resnet18", 2, "pred", tmp_path / "m.safetensors")
    assert list(meta) == ["format_version", "student", "teacher", "input", "scoring"]
    assert meta["teacher"] == {"arch": "resnet18", "channel_order": "bgr", "mean": [0.0] * 3,
                               "std": [1.0] * 3}
