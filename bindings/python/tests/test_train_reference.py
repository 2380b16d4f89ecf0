"""Training (pkgnet.train over pkgnet_trainer_*) against float64 numpy references.

With as many cubes as the batch size, the first epoch is one step whose
losses are those of the initial student, which write_model(calibrate=False)
writes before training: tests/reference.py gives that student's prediction
and features and the teacher's features, and the loss formulas below (written
from the published recipe, not from the engine) give the expected losses.
Calibration is checked the same way on the trained model. The rest checks
what the header promises: determinism, checkpoints, errors.
"""

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pkgnet
from pkgnet import _native, safetensors_io, synthetic
from pkgnet.convert import parse_pairs, projection_shapes, student_shapes
from pkgnet.train import EpochReport, Trainer, default_options
from reference import inconsistency_map, reference_scores
from support import require_library

REPO = Path(__file__).resolve().parents[3]

# Losses are means of float32 terms the engine sums in double: they agree
# with the float64 reference to float32 rounding of the forward pass (4e-7
# at worst over the cases below).
LOSS_RTOL = 2e-6
CIFAR_PAIRS = "d8:layer3,d16:layer2"


@pytest.fixture(scope="module", autouse=True)
def native_library():
    return require_library()


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """arch -> a random teacher file (ImageNet normalisation of RGB, so the
    engine must swap the BGR cubes' channels and normalise)."""
    folder = tmp_path_factory.mktemp("teachers")
    out = {}
    for arch in ("resnet20", "resnet18"):
        out[arch] = folder / f"{arch}.teacher.safetensors"
        synthetic.random_teacher(out[arch], arch=arch, seed=11)
    return out


# ------------------------------------------------------------ numpy losses

def channel_sum_differences(x):
    """(dx, dy) of [N,C,H,W]: the colour channels' sum of x[i,j] - x[i,j-1]
    (resp. x[i,j] - x[i-1,j]), with a zero column (row) padded before the first."""
    s = x.sum(axis=1)
    dx = s - np.pad(s, ((0, 0), (0, 0), (1, 0)))[:, :, :-1]
    dy = s - np.pad(s, ((0, 0), (1, 0), (0, 0)))[:, :-1, :]
    return dx, dy


def gradient_loss(prediction, target, power, form):
    pdx, pdy = channel_sum_differences(prediction)
    tdx, tdy = channel_sum_differences(target)
    if form == "paper":
        ex, ey = np.abs(tdx) - np.abs(pdx), np.abs(tdy) - np.abs(pdy)
    else:
        ex, ey = tdx - pdx, tdy - pdy
    return np.mean(np.abs(ex) ** power + np.abs(ey) ** power)


def distillation_loss(student_features, teacher_features):
    return np.mean([inconsistency_map(s, t).mean() for s, t in zip(student_features, teacher_features)])


def reference_losses(model_path, cubes, power=3.0, form="published", weights=(0.8, 0.1, 0.2)):
    """The losses of one step on ``cubes`` for the student of a model file."""
    ref = reference_scores(model_path, cubes)
    frames = cubes.astype(np.float64).transpose(0, 1, 4, 2, 3) / 255.0
    target = frames[:, 4]
    mse = np.mean((ref["prediction"] - target) ** 2)
    gradient = gradient_loss(ref["prediction"], target, power, form)
    distillation = distillation_loss(ref["student_features"], ref["teacher_features"])
    # The engine's lambdas are float32.
    le, lg, lc = (float(np.float32(w)) for w in weights)
    return {"loss": le * mse + lg * gradient + lc * distillation, "prediction_loss": mse,
            "gradient_loss": gradient, "distillation_loss": distillation}


def metadata(path):
    return json.loads(safetensors_io.read(path)[1]["pkgnet"])


def tensors(path):
    return safetensors_io.read(path)[0]


# ------------------------------------------------------------------ tests

def test_options_struct_matches_the_header(tmp_path):
    """Sizes and offsets of the ctypes mirrors equal the C compiler's."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc})")
    structs = {"pkgnet_train_options": _native.TrainOptions, "pkgnet_epoch_report": _native.EpochReport}
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <pkgnet.h>", "int main(void) {"]
    for struct, cls in structs.items():
        lines.append(f'printf("{struct} sizeof %zu\\n", sizeof({struct}));')
        for name, _ in cls._fields_:
            lines.append(f'printf("{struct} {name} %zu\\n", offsetof({struct}, {name}));')
    lines += ["return 0;", "}"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines) + "\n")
    exe = tmp_path / "layout"
    proc = subprocess.run([cc, "-std=c11", "-I", str(REPO / "include"), str(src), "-o", str(exe)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in subprocess.run([str(exe)], capture_output=True, text=True).stdout.splitlines()]
    assert len(rows) == sum(len(cls._fields_) + 1 for cls in structs.values())
    for struct, name, value in rows:
        cls = structs[struct]
        mine = ctypes.sizeof(cls) if name == "sizeof" else getattr(cls, name).offset
        assert mine == int(value), f"{struct}.{name}: ctypes {mine}, C {value}"


def test_default_options_are_the_published_recipe():
    d = default_options()
    assert (d["k"], d["width"], d["epochs"], d["batch_size"]) == (2, 16, 120, 128)
    assert (d["learning_rate"], d["milestone_epoch"], d["learning_rate_decay"]) == (1e-4, 60, 0.8)
    np.testing.assert_array_equal(d["loss_weights"], np.float32([0.8, 0.1, 0.2]))
    assert (d["gradient_power"], d["gradient_loss"], d["batch_norm"]) == (3.0, "published", "fixed")
    assert (d["seed"], d["threads"], d["top_k"], d["median_window"]) == (0, 0, 3, 19)
    assert (d["pairs"], d["scene"], d["input_channel_order"]) == (None, None, "bgr")
    assert d["teacher_cache_bytes"] == 2 << 30


@pytest.mark.parametrize("arch,k,width,channels,pairs,form,power", [
    ("resnet20", 2, 16, 3, CIFAR_PAIRS, "published", 3.0),
    ("resnet20", 2, 16, 3, CIFAR_PAIRS, "paper", 3.0),
    # width 8: both pairs need a 1x1 projection onto the teacher's channels.
    ("resnet20", 1, 8, 1, "e32:layer1,d8:layer3", "paper", 2.0),
    ("resnet18", 2, 16, 3, None, "published", 3.0),  # the published pairs
], ids=["k2-published", "k2-paper", "k1-grey-projections-power2", "resnet18-default-pairs"])
def test_first_epoch_losses_match_numpy(teachers, tmp_path, arch, k, width, channels, pairs, form, power):
    n = 6
    cubes = synthetic.random_cubes(n, channels=channels, seed=21)
    initial = tmp_path / "initial.safetensors"
    with Trainer(teachers[arch], cubes, k=k, width=width, pairs=pairs, batch_size=n, epochs=1,
                 gradient_loss=form, gradient_power=power, seed=3, threads=2) as trainer:
        trainer.write_model(initial, calibrate=False)
        report = trainer.run_epoch()
    assert isinstance(report, EpochReport) and report.epoch == 1 and report.learning_rate == 1e-4
    expected = reference_losses(initial, cubes, power=power, form=form)
    for name, value in expected.items():
        assert getattr(report, name) == pytest.approx(value, rel=LOSS_RTOL), name
    # Not vacuous: each term is well away from 0, and the two forms differ.
    assert min(expected.values()) > 1e-3
    other = reference_losses(initial, cubes, power=power, form="published" if form == "paper" else "paper")
    assert abs(other["gradient_loss"] - report.gradient_loss) > 100 * LOSS_RTOL * report.gradient_loss


def test_initial_model_file(teachers, tmp_path):
    """The uncalibrated model: settings, the teacher copied, mu 0 and sigma 1,
    and the published code's initialisation (Kaiming-normal a=0.1 fan-in
    convs, BatchNorm weight N(1, 0.02), bias 0, running statistics (0, 1))."""
    cubes = synthetic.random_cubes(4, seed=22)
    path = tmp_path / "initial.safetensors"
    with Trainer(teachers["resnet20"], cubes, pairs=CIFAR_PAIRS, width=32, seed=9) as trainer:
        trainer.write_model(path, calibrate=False)
    meta = metadata(path)
    assert meta["student"] == {"k": 2, "width": 32, "task": "pred", "channels": 3}
    assert meta["teacher"]["arch"] == "resnet20"
    assert [(p["student"], p["teacher"]) for p in meta["pairs"]] == [("d8", "layer3"), ("d16", "layer2")]
    assert meta["scoring"]["mu"] == [0, 0, 0] and meta["scoring"]["sigma"] == [1, 1, 1]
    np.testing.assert_allclose(meta["scoring"]["weights"], [0.01, 0.65, 0.35], rtol=1e-6)
    assert meta["frame"]["top_k"] == 3 and meta["frame"]["median_window"] == 19
    written = tensors(path)
    teacher, _ = safetensors_io.read(teachers["resnet20"])
    assert {n for n in written if n.startswith("teacher.")} == set(teacher)
    for name, value in teacher.items():
        np.testing.assert_array_equal(written[name], value)
    student = {n[len("student."):]: v for n, v in written.items() if n.startswith("student.")}
    expected = student_shapes(2, 32, 3, "pred")
    expected.update(projection_shapes(2, 32, "resnet20", parse_pairs(CIFAR_PAIRS)))  # width 32: both pairs
    assert {n: tuple(v.shape) for n, v in student.items()} == dict(expected)
    conv = student["decoder.up3.conv.conv.0.weight"]  # [32, 64, 3, 3], fan-in 576
    assert conv.std() == pytest.approx(np.sqrt(2 / 1.01) / np.sqrt(576), rel=0.03)
    batch_norm = re.compile(r"\.conv\.[14]\.(weight|bias|running_mean|running_var)$")
    bn = np.concatenate([v for n, v in student.items() if batch_norm.search(n) and n.endswith(".weight")])
    assert bn.mean() == pytest.approx(1, abs=0.01) and bn.std() == pytest.approx(0.02, rel=0.15)
    for name, value in student.items():
        if batch_norm.search(name) and name.endswith(("running_mean", ".bias")):
            assert not value.any(), name
        if name.endswith("running_var"):
            assert (value == 1).all(), name


def test_calibration_matches_numpy_scores(teachers, tmp_path):
    n = 10
    cubes = synthetic.random_cubes(n, seed=23)
    calibrated, plain = tmp_path / "calibrated.safetensors", tmp_path / "plain.safetensors"
    with Trainer(teachers["resnet20"], cubes, pairs=CIFAR_PAIRS, batch_size=5, epochs=2,
                 learning_rate=1e-3, seed=4, threads=2) as trainer:
        trainer.run_epoch()
        trainer.run_epoch()
        trainer.write_model(calibrated)
        trainer.write_model(plain, calibrate=False)
    ref = reference_scores(plain, cubes)
    components = np.concatenate([ref["prediction_error"][:, None], ref["inconsistency"]], axis=1)
    scoring = metadata(calibrated)["scoring"]
    # The statistics are float32 of float32 scores (scores agree with the
    # reference to ~1e-5 relative; sigma is a difference of them, so looser).
    np.testing.assert_allclose(scoring["mu"], components.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(scoring["sigma"], components.std(axis=0), rtol=1e-4)
    assert (components.std(axis=0) > 1e-3 * np.abs(components.mean(axis=0))).all()  # not a constant
    # Calibration changes the statistics only: the tensors stay bit for bit.
    a, b = tensors(calibrated), tensors(plain)
    assert a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)
    with pkgnet.Model(calibrated) as model:
        combined = model.score(cubes).combined
    # Normalised components of the training cubes average to zero.
    assert abs(float(np.mean(combined))) < 1e-4


def _trained_bytes(teacher, cubes, path, **options):
    with Trainer(teacher, cubes, pairs=CIFAR_PAIRS, batch_size=4, epochs=2, threads=2, **options) as trainer:
        trainer.run_epoch()
        trainer.run_epoch()
        trainer.write_model(path, calibrate=False)
    return path.read_bytes()


def test_same_seed_same_model_other_seed_other_model(teachers, tmp_path):
    cubes = synthetic.random_cubes(10, seed=24)  # 3 steps per epoch, the last one short
    a = _trained_bytes(teachers["resnet20"], cubes, tmp_path / "a.safetensors", seed=7)
    b = _trained_bytes(teachers["resnet20"], cubes, tmp_path / "b.safetensors", seed=7)
    c = _trained_bytes(teachers["resnet20"], cubes, tmp_path / "c.safetensors", seed=8)
    assert a == b
    assert a != c
    # The teacher cache is a speed-up only. Without it the teacher runs on
    # the shuffled batches, and a cube's place in the GEMM's columns, and
    # the call's tile count (which picks Winograd or the packed GEMM for the
    # 8x8 maps: pkk_winograd_min_tiles), change the rounding of its teacher
    # features by float32 ulps. Adam divides each gradient by its own
    # running magnitude, so where a gradient is near zero such a rounding
    # can flip a step (the first is +-lr exactly): each weight within two
    # steps per update of the other run, and per tensor far closer to it
    # than the model of another seed.
    _trained_bytes(teachers["resnet20"], cubes, tmp_path / "d.safetensors", seed=7, teacher_cache_bytes=0)
    cached = tensors(tmp_path / "a.safetensors")
    uncached, other_seed = tensors(tmp_path / "d.safetensors"), tensors(tmp_path / "c.safetensors")
    updates, lr = 2 * 3, 1e-4
    for name, value in cached.items():
        diff = uncached[name].astype(np.float64) - value
        seed_diff = other_seed[name].astype(np.float64) - value
        assert np.abs(diff).max() <= 2 * lr * updates, name
        # measured: at most 0.0015 of the other seed's root-mean-square difference
        assert np.sqrt(np.mean(diff ** 2)) <= 0.01 * np.sqrt(np.mean(seed_diff ** 2)), name  # 0 for fixed tensors


def test_first_training_in_a_process_equals_the_next(teachers, tmp_path):
    """A process's first BLAS call switches OpenBLAS to one thread, and the
    OpenMP build's switch also sets the caller's OpenMP thread count: that
    once left the first training of each process on one thread, rounding
    as a 1-thread run and unlike a second run with the same seed."""
    code = (
        "import sys\n"
        "from pkgnet import synthetic\n"
        "from pkgnet.train import Trainer\n"
        "teacher, folder = sys.argv[1], sys.argv[2]\n"
        "cubes = synthetic.random_cubes(10, seed=24)\n"
        "for run in 'ab':\n"
        "    with Trainer(teacher, cubes, pairs='%s', width=16, batch_size=4, epochs=1, threads=2, seed=7) as t:\n"
        "        t.run_epoch()\n"
        "        t.write_model(folder + '/' + run + '.safetensors', calibrate=False)\n" % CIFAR_PAIRS
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", code, str(teachers["resnet20"]), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


@pytest.mark.parametrize("batch_norm", ["fixed", "batch"])
def test_checkpoint_resume_equals_an_uninterrupted_run(teachers, tmp_path, batch_norm):
    cubes = synthetic.random_cubes(12, seed=25)
    options = dict(pairs=CIFAR_PAIRS, batch_size=4, epochs=3, threads=2, seed=5, batch_norm=batch_norm)
    teacher = teachers["resnet20"]
    straight = tmp_path / "straight.safetensors"
    with Trainer(teacher, cubes, **options) as trainer:
        reports = [trainer.run_epoch() for _ in range(2)]
        trainer.write_model(straight, calibrate=False)

    checkpoint = tmp_path / "run.ckpt"
    with Trainer(teacher, cubes, **options) as trainer:
        first = trainer.run_epoch()
        trainer.save_checkpoint(checkpoint)
    assert first.loss == reports[0].loss
    resumed = tmp_path / "resumed.safetensors"
    with Trainer(teacher, cubes, **options) as trainer:
        assert trainer.epochs_done == 0
        trainer.resume(checkpoint)
        assert trainer.epochs_done == 1
        second = trainer.run_epoch()
        trainer.write_model(resumed, calibrate=False)
    assert second.epoch == 2 and second.loss == reports[1].loss
    assert resumed.read_bytes() == straight.read_bytes()


def test_progress_reports_steps_and_errors_propagate(teachers):
    cubes = synthetic.random_cubes(10, seed=26)
    calls = []
    with Trainer(teachers["resnet20"], cubes, pairs=CIFAR_PAIRS, batch_size=4, epochs=2) as trainer:
        report = trainer.run_epoch(lambda *args: calls.append(args))
        teacher_calls = [c for c in calls if c[0] == 0]
        steps = [c for c in calls if c[0] == 1]
        assert teacher_calls and teacher_calls[-1][1:3] == (10, 10) and np.isnan(teacher_calls[-1][3])
        assert [c[1:3] for c in steps] == [(1, 3), (2, 3), (3, 3)]
        assert steps[-1][3] == pytest.approx(report.loss, rel=1e-12)

        def fail(*_):
            raise KeyError("from the callback")

        with pytest.raises(KeyError, match="from the callback"):
            trainer.run_epoch(fail)
        assert trainer.epochs_done == 2  # the epoch itself ran to its end
        with pytest.raises(pkgnet.InvalidArgumentError, match="all 2 epochs are done"):
            trainer.run_epoch()


def test_progress_callback_may_only_read(teachers, tmp_path):
    """The callback runs inside run_epoch: epochs_done answers, anything that
    would need the trainer raises BusyError (and close must not free it)."""
    seen = []
    with Trainer(teachers["resnet20"], synthetic.random_cubes(4, seed=34), pairs=CIFAR_PAIRS, batch_size=2,
                 epochs=2) as trainer:
        def progress(epoch, done, total, loss):
            if (epoch, done) == (1, 1):
                seen.append(trainer.epochs_done)
                for call in (lambda: trainer.save_checkpoint(tmp_path / "x.ckpt"), trainer.close, trainer.run_epoch,
                             lambda: trainer.write_model(tmp_path / "x.safetensors")):
                    with pytest.raises(pkgnet.BusyError):
                        call()

        trainer.run_epoch(progress)
        assert seen == [0] and not trainer.closed and trainer.epochs_done == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


BAD_PAIRS = [
    ("x9:layer3", pkgnet.InvalidArgumentError, "no feature 'x9'"),
    ("d8:layer9", pkgnet.ModelMismatchError, "no block 'layer9'"),
    ("d16:layer3", pkgnet.ModelMismatchError, "differ in size"),
    ("d8-layer3", pkgnet.InvalidArgumentError, "student:teacher"),
    ([("d8", "layer3", "x")], pkgnet.InvalidArgumentError, "pair must be"),
]


@pytest.mark.parametrize("pairs,error,message", BAD_PAIRS, ids=[str(p[0]) for p in BAD_PAIRS])
def test_bad_pairs(teachers, pairs, error, message):
    with pytest.raises(error, match=message):
        Trainer(teachers["resnet20"], synthetic.random_cubes(2, seed=27), pairs=pairs)


def test_bad_cubes(teachers):
    teacher = teachers["resnet20"]
    cubes = synthetic.random_cubes(2, seed=28)
    with pytest.raises(pkgnet.InvalidArgumentError, match="n is 0"):
        Trainer(teacher, cubes[:0], pairs=CIFAR_PAIRS)
    for bad, what in [(np.zeros((2, 5, 32, 32, 2), np.uint8), r"shape \[2, 5, 32, 32, 2\]"),
                      (cubes[:, :4], r"shape \[2, 4, 32, 32, 3\]"),
                      (cubes.astype(np.float32), "dtype float32"),
                      (cubes[0], r"shape \[5, 32, 32, 3\]")]:
        with pytest.raises(pkgnet.InvalidArgumentError, match=what):
            Trainer(teacher, bad, pairs=CIFAR_PAIRS)


def test_bad_options(teachers):
    teacher = teachers["resnet20"]
    cubes = synthetic.random_cubes(2, seed=29)
    for options, error, message in [
        (dict(pairs=None), pkgnet.InvalidArgumentError, "no published pairing"),  # a CIFAR teacher needs pairs
        (dict(k=3), pkgnet.InvalidArgumentError, "k must be 1 or 2"),
        (dict(learning_rate=float("nan")), pkgnet.InvalidArgumentError, "learning rate"),
        (dict(batch_norm="batch", batch_size=1), pkgnet.InvalidArgumentError, "batch size of at least 2"),
        (dict(gradient_loss="eq2"), pkgnet.InvalidArgumentError, "gradient_loss must be one of"),
        (dict(loss_weights=(1, 2)), pkgnet.InvalidArgumentError, "loss_weights takes 3"),
        (dict(seed=-1), pkgnet.InvalidArgumentError, "seed must be in"),
        (dict(width=True), pkgnet.InvalidArgumentError, "width must be an int"),
        (dict(scene="mall"), pkgnet.InvalidArgumentError, "scene must be one of"),
    ]:
        with pytest.raises(error, match=message):
            Trainer(teacher, cubes, **{"pairs": CIFAR_PAIRS, **options})


def test_not_a_teacher_file(teachers, tmp_path):
    cubes = synthetic.random_cubes(2, seed=30)
    model = tmp_path / "model.safetensors"
    synthetic.random_model(model)
    with pytest.raises(pkgnet.FormatError, match="model file, not a teacher file"):
        Trainer(model, cubes, pairs=CIFAR_PAIRS)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file" * 10)
    with pytest.raises(pkgnet.FormatError, match="garbage.safetensors"):
        Trainer(garbage, cubes, pairs=CIFAR_PAIRS)
    with pytest.raises(pkgnet.FileError, match="absent.safetensors"):
        Trainer(tmp_path / "absent.safetensors", cubes, pairs=CIFAR_PAIRS)


def test_resume_refuses_other_runs_and_other_files(teachers, tmp_path):
    cubes = synthetic.random_cubes(4, seed=31)
    checkpoint = tmp_path / "seed1.ckpt"
    with Trainer(teachers["resnet20"], cubes, pairs=CIFAR_PAIRS, batch_size=4, epochs=3, seed=1) as trainer:
        trainer.run_epoch()
        trainer.save_checkpoint(checkpoint)
        model = tmp_path / "model.safetensors"
        trainer.write_model(model, calibrate=False)
    with Trainer(teachers["resnet20"], cubes, pairs=CIFAR_PAIRS, batch_size=4, epochs=3, seed=2) as trainer:
        with pytest.raises(pkgnet.InvalidArgumentError, match="written by a different run"):
            trainer.resume(checkpoint)
        with pytest.raises(pkgnet.FormatError, match="not a pkgnet training checkpoint"):
            trainer.resume(model)
        with pytest.raises(pkgnet.FileError, match="absent.ckpt"):
            trainer.resume(tmp_path / "absent.ckpt")
        assert trainer.epochs_done == 0  # still usable
        assert trainer.run_epoch().epoch == 1
    # Other data of the same size, another learning rate: refused, naming what differs.
    with Trainer(teachers["resnet20"], synthetic.random_cubes(4, seed=32), pairs=CIFAR_PAIRS, batch_size=4,
                 epochs=3, seed=1) as trainer:
        with pytest.raises(pkgnet.InvalidArgumentError, match="cubes 4 cubes, fingerprint"):
            trainer.resume(checkpoint)
    with Trainer(teachers["resnet20"], cubes, pairs=CIFAR_PAIRS, batch_size=4, epochs=3, seed=1,
                 learning_rate=1e-3) as trainer:
        with pytest.raises(pkgnet.InvalidArgumentError, match="learning_rate"):
            trainer.resume(checkpoint)
    # As many epochs as the checkpoint holds: nothing left to train, the model
    # can still be written (a run that died while calibrating loses nothing).
    with Trainer(teachers["resnet20"], cubes, pairs=CIFAR_PAIRS, batch_size=4, epochs=1, seed=1) as trainer:
        trainer.resume(checkpoint)
        assert trainer.epochs_done == 1
        with pytest.raises(pkgnet.InvalidArgumentError, match="all 1 epochs are done"):
            trainer.run_epoch()
        trainer.write_model(tmp_path / "resumed.safetensors", calibrate=False)
    assert (tmp_path / "resumed.safetensors").read_bytes() == model.read_bytes()


def test_closed_trainer_and_unwritable_paths(teachers, tmp_path):
    trainer = Trainer(teachers["resnet20"], synthetic.random_cubes(2, seed=32), pairs=CIFAR_PAIRS, batch_size=2)
    with pytest.raises(pkgnet.FileError, match="absent_folder"):
        trainer.write_model(tmp_path / "absent_folder" / "model.safetensors")
    with pytest.raises(pkgnet.InvalidArgumentError, match="NUL"):
        trainer.save_checkpoint("a\0b")
    trainer.close()
    trainer.close()
    assert trainer.closed
    for call in (trainer.run_epoch, lambda: trainer.epochs_done, lambda: trainer.save_checkpoint(tmp_path / "x")):
        with pytest.raises(pkgnet.InvalidArgumentError, match="closed"):
            call()


def test_c_api_contracts_of_a_live_trainer(teachers, tmp_path):
    """Tests/capi/test_capi.c with a teacher file: its training checks on a
    live trainer (NULL paths, I/O errors, BUSY from a second thread) run too."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc})")
    real = Path(_native.lib()._name).resolve()
    for name in ("libpkgnet.so", "libpkgnet.so.0"):  # the SONAME programs ask for
        (tmp_path / name).symlink_to(real)
    exe = tmp_path / "test_capi"
    proc = subprocess.run([cc, "-std=c11", "-O1", "-pthread", "-I", str(REPO / "include"),
                           str(REPO / "Tests" / "capi" / "test_capi.c"), "-o", str(exe), "-L", str(tmp_path),
                           "-lpkgnet", f"-Wl,-rpath,{tmp_path}", "-lm"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    model = tmp_path / "model.safetensors"
    synthetic.random_model(model, seed=33)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch), PKGNET_TEST_TEACHER=str(teachers["resnet20"]))
    proc = subprocess.run([str(exe), str(model)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith(" 0 failed"), proc.stdout + proc.stderr
    assert "concurrent epochs on one trainer" in proc.stdout
