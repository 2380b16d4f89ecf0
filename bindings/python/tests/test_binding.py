"""The Python binding and libpkgnet against the float64 numpy reference.

The engine computes in float32; the reference (tests/reference.py) is written
from the network spec in float64, so agreement to ~1e-5 relative on scores
checks layout, folding and arithmetic of the whole pipeline at once.
"""

import gc
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import pkgnet
from pkgnet import synthetic
from reference import reference_scores
from support import require_library

TESTS = Path(__file__).resolve().parent
BINDINGS = TESTS.parent

SCORE_RTOL = 1e-5  # per-cube scores vs the float64 reference
MAP_RTOL = 1e-5  # maps and prediction, relative to the array's largest value

# width per teacher: the student bottleneck (8w) must match layer2, and for
# k=2 the 8x8 decoder feature (4w) must match layer1.
ARCH_WIDTH = {
    "resnet18": 16,
    "resnet34": 16,
    "resnet50": 64,
    "resnext50_32x4d": 64,
    "wide_resnet50_2": 64,
}


@pytest.fixture(scope="module", autouse=True)
def native_library():
    return require_library()


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    """A function making (once) a random model file for some parameters."""
    cache = {}
    folder = tmp_path_factory.mktemp("models")

    def get(k=2, arch="resnet18", task="pred", channels=3, dtype="f32", seed=0, **meta):
        key = (k, arch, task, channels, dtype, seed, tuple(sorted((n, tuple(v)) for n, v in meta.items())))
        if key not in cache:
            name = f"k{k}_{arch}_{task}_c{channels}_{dtype}_s{seed}_{len(cache)}.safetensors"
            path = folder / name
            synthetic.random_model(path, k=k, width=ARCH_WIDTH[arch], arch=arch, task=task,
                                   channels=channels, seed=seed, dtype=dtype, **meta)
            cache[key] = path
        return cache[key]

    return get


def to_float_layout(cubes):
    """uint8 [N,5,32,32,C] -> float32 [N,5C,32,32] in [0,1], frame-major channels."""
    n, t, h, w, c = cubes.shape
    return np.ascontiguousarray(
        (cubes.astype(np.float32) / np.float32(255)).transpose(0, 1, 4, 2, 3).reshape(n, t * c, h, w)
    )


def assert_scores_close(actual, expected, what, rtol=SCORE_RTOL):
    expected = np.asarray(expected, dtype=np.float64)
    atol = 1e-3 * rtol * float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol, err_msg=what)


def assert_map_close(actual, expected, what, rtol=MAP_RTOL):
    # Map entries near zero carry the absolute error of their neighbours, so
    # the tolerance scales with the array, not the entry.
    expected = np.asarray(expected, dtype=np.float64)
    atol = rtol * float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol, err_msg=what)


def assert_matches_reference(scores, ref, rtol=SCORE_RTOL, map_rtol=MAP_RTOL):
    assert_scores_close(scores.prediction_error, ref["prediction_error"], "prediction_error", rtol)
    assert_scores_close(scores.inconsistency, ref["inconsistency"], "inconsistency", rtol)
    assert_scores_close(scores.combined, ref["combined"], "combined", rtol)
    if scores.prediction is not None:
        assert_map_close(scores.prediction, ref["prediction"], "prediction", map_rtol)
    if scores.error_map is not None:
        assert_map_close(scores.error_map, ref["error_map"], "error_map", map_rtol)
        assert len(scores.inconsistency_maps) == len(ref["inconsistency_maps"])
        for j, (a, b) in enumerate(zip(scores.inconsistency_maps, ref["inconsistency_maps"])):
            assert_map_close(a, b, f"inconsistency_maps[{j}]", map_rtol)


def assert_same_scores(a, b):
    """Bitwise equality of every output two Scores both have."""
    for name in ("prediction_error", "inconsistency", "combined", "error_map", "prediction"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert np.array_equal(x, y), name
    if a.inconsistency_maps is not None:
        for x, y in zip(a.inconsistency_maps, b.inconsistency_maps):
            assert np.array_equal(x, y)


# ---------------------------------------------------------------- numerics

@pytest.mark.parametrize("arch", list(ARCH_WIDTH))
@pytest.mark.parametrize("k", [1, 2])
def test_scores_match_reference(model_file, k, arch):
    path = model_file(k=k, arch=arch)
    cubes = synthetic.random_cubes(3, channels=3, seed=10 + k)
    with pkgnet.Model(path) as model:
        info = model.info
        assert (info.k, info.width, info.teacher, info.pairs) == (k, ARCH_WIDTH[arch], arch, k)
        assert info.pair_size == ((4,) if k == 1 else (4, 8))
        scores = model.score(cubes, maps=True, prediction=True)
    n = len(cubes)
    assert scores.prediction_error.shape == (n,) and scores.prediction_error.dtype == np.float32
    assert scores.inconsistency.shape == (n, k)
    assert scores.combined.shape == (n,)
    assert scores.error_map.shape == (n, 32, 32)
    assert [m.shape for m in scores.inconsistency_maps] == [(n, s, s) for s in info.pair_size]
    assert scores.prediction.shape == (n, 3, 32, 32)
    assert_matches_reference(scores, reference_scores(path, cubes))


def test_outputs_not_asked_for_are_none(model_file):
    with pkgnet.Model(model_file()) as model:
        cubes = synthetic.random_cubes(2, seed=3)
        plain = model.score(cubes)
        full = model.score(cubes, maps=True, prediction=True)
    assert plain.error_map is None and plain.inconsistency_maps is None and plain.prediction is None
    # Asking for more outputs must not change the scores.
    assert np.array_equal(plain.prediction_error, full.prediction_error)
    assert np.array_equal(plain.inconsistency, full.inconsistency)
    assert np.array_equal(plain.combined, full.combined)


@pytest.mark.parametrize("k", [1, 2])
def test_uint8_and_float32_inputs_agree(model_file, k):
    with pkgnet.Model(model_file(k=k)) as model:
        cubes = synthetic.random_cubes(4, seed=4)
        u8 = model.score(cubes, maps=True, prediction=True)
        f32 = model.score(to_float_layout(cubes), maps=True, prediction=True)
    assert_scores_close(f32.prediction_error, u8.prediction_error, "prediction_error", 1e-6)
    assert_scores_close(f32.inconsistency, u8.inconsistency, "inconsistency", 1e-6)
    assert_scores_close(f32.combined, u8.combined, "combined", 1e-6)
    assert_map_close(f32.prediction, u8.prediction, "prediction", 1e-6)
    assert_map_close(f32.error_map, u8.error_map, "error_map", 1e-6)
    for a, b in zip(f32.inconsistency_maps, u8.inconsistency_maps):
        assert_map_close(a, b, "inconsistency_maps", 1e-6)


@pytest.mark.parametrize(
    "k,task,channels",
    [(2, "pred", 1), (1, "pred", 1), (2, "recon", 3), (1, "recon", 3), (2, "recon", 1)],
)
def test_grey_and_recon_models(model_file, k, task, channels):
    path = model_file(k=k, task=task, channels=channels)
    cubes = synthetic.random_cubes(3, channels=channels, seed=5)
    with pkgnet.Model(path) as model:
        info = model.info
        assert info.channels == channels
        assert info.task == task
        assert info.input_frames == (4 if task == "pred" else 1)
        scores = model.score(cubes, maps=True, prediction=True)
        f32 = model.score(to_float_layout(cubes))
    assert scores.prediction.shape == (3, channels, 32, 32)
    ref = reference_scores(path, cubes)
    assert_matches_reference(scores, ref)
    assert_scores_close(f32.combined, ref["combined"], "combined (float input)")


def test_scoring_settings_of_the_model_file(model_file):
    """weights, mu and sigma of the metadata shape `combined`."""
    path = model_file(k=2, weights=[0.5, 2.0, 3.0], mu=[1.0, 0.5, 0.25], sigma=[2.0, 0.1, 0.3])
    cubes = synthetic.random_cubes(3, seed=6)
    with pkgnet.Model(path) as model:
        scores = model.score(cubes)
        info = model.info
    np.testing.assert_allclose(info.weights, [0.5, 2.0, 3.0], rtol=1e-7)
    np.testing.assert_allclose(info.mu, [1.0, 0.5, 0.25], rtol=1e-7)
    np.testing.assert_allclose(info.sigma, [2.0, 0.1, 0.3], rtol=1e-7)
    assert (info.teacher_mean, info.teacher_std, info.teacher_channel_order) == ((0, 0, 0), (1, 1, 1), "bgr")
    ref = reference_scores(path, cubes)
    comps = np.concatenate([scores.prediction_error[:, None], scores.inconsistency], axis=1).astype(np.float64)
    manual = ((comps - [1.0, 0.5, 0.25]) / [2.0, 0.1, 0.3] * [0.5, 2.0, 3.0]).sum(axis=1)
    np.testing.assert_allclose(scores.combined, manual, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores.combined, ref["combined"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_half_precision_model_files(model_file, dtype):
    cubes = synthetic.random_cubes(3, seed=7)
    half = model_file(k=2, dtype=dtype)
    with pkgnet.Model(half) as model:
        scores = model.score(cubes, maps=True, prediction=True)
    # Same rounded weights on both sides: the usual tolerance holds.
    assert_matches_reference(scores, reference_scores(half, cubes))
    # Against the float32 weights they were rounded from: only roughly.
    full_ref = reference_scores(model_file(k=2, dtype="f32"), cubes)
    loose = 2e-2 if dtype == "f16" else 1e-1
    assert_scores_close(scores.prediction_error, full_ref["prediction_error"], "prediction_error", loose)
    assert_scores_close(scores.inconsistency, full_ref["inconsistency"], "inconsistency", loose)


@pytest.mark.parametrize("k", [1, 2])
def test_batch_larger_than_micro_batch(model_file, k):
    path = model_file(k=k)
    cubes = synthetic.random_cubes(37, seed=8)
    with pkgnet.Model(path) as model:
        whole = model.score(cubes, maps=True, prediction=True)
        # Cube i's scores do not depend on what else is in the batch, beyond
        # rounding: a 3x3 convolution with fewer than 4 output tiles in the
        # batch (4x4 maps, 1 to 3 cubes) runs direct instead of Winograd, so
        # the tail part's maps may differ from the whole's by ~1e-5 relative;
        # and passes of 16 cubes or more run the 16- and 32-wide maps as 2-D
        # Winograd, smaller ones as 1-D (scores apart by about 1e-6).
        parts = [model.score(cubes[i:i + 5], maps=True) for i in range(0, 37, 5)]
    assert_matches_reference(whole, reference_scores(path, cubes))
    joined_pe = np.concatenate([p.prediction_error for p in parts])
    joined_inc = np.concatenate([p.inconsistency for p in parts])
    joined_map = np.concatenate([p.error_map for p in parts])
    np.testing.assert_allclose(joined_pe, whole.prediction_error, rtol=5e-6)
    np.testing.assert_allclose(joined_inc, whole.inconsistency, rtol=5e-6)
    np.testing.assert_allclose(joined_map, whole.error_map, rtol=1e-4, atol=1e-6 * whole.error_map.max())


@pytest.mark.parametrize("layout", ["uint8", "float32"])
def test_empty_batch(model_file, layout):
    with pkgnet.Model(model_file(k=2)) as model:
        cubes = synthetic.random_cubes(0)
        if layout == "float32":
            cubes = to_float_layout(cubes)
        scores = model.score(cubes, maps=True, prediction=True)
    assert len(scores) == 0
    assert scores.prediction_error.shape == (0,)
    assert scores.inconsistency.shape == (0, 2)
    assert scores.combined.shape == (0,)
    assert scores.error_map.shape == (0, 32, 32)
    assert [m.shape for m in scores.inconsistency_maps] == [(0, 4, 4), (0, 8, 8)]
    assert scores.prediction.shape == (0, 3, 32, 32)


def test_non_contiguous_inputs(model_file):
    with pkgnet.Model(model_file()) as model:
        cubes = synthetic.random_cubes(6, seed=9)
        expected = model.score(cubes[::2].copy())
        strided = model.score(cubes[::2])
        fortran = model.score(np.asfortranarray(cubes[::2]))
        f32 = to_float_layout(cubes)
        f_expected = model.score(f32[1::2].copy())
        f_strided = model.score(f32[1::2])
        swapped = model.score(f32[1::2].astype(">f4"))
    assert_same_scores(strided, expected)
    assert_same_scores(fortran, expected)
    assert_same_scores(f_strided, f_expected)
    assert_same_scores(swapped, f_expected)


def test_load_from_bytes_equals_load_from_path(model_file):
    path = model_file(k=1)
    data = Path(path).read_bytes()
    cubes = synthetic.random_cubes(3, seed=11)
    with pkgnet.Model(path) as a, pkgnet.Model(data) as b, pkgnet.Model(bytearray(data)) as c, \
            pkgnet.Model(memoryview(data)) as d:
        assert a.info == b.info == c.info == d.info
        sa = a.score(cubes, maps=True, prediction=True)
        for m in (b, c, d):
            assert_same_scores(m.score(cubes, maps=True, prediction=True), sa)
    with pkgnet.Model(str(path)) as e:
        assert_same_scores(e.score(cubes, maps=True, prediction=True), sa)


def test_thread_count_does_not_change_scores(model_file):
    path = model_file()
    cubes = synthetic.random_cubes(9, seed=12)
    with pkgnet.Model(path, threads=1) as one, pkgnet.Model(path) as default:
        assert one.threads == 1
        a = one.score(cubes)
        b = default.score(cubes)
    np.testing.assert_allclose(a.prediction_error, b.prediction_error, rtol=1e-6)
    np.testing.assert_allclose(a.inconsistency, b.inconsistency, rtol=1e-6)


def test_version_and_system_info():
    assert pkgnet.version() == "0.1.0" == pkgnet.__version__
    info = pkgnet.system_info()
    assert isinstance(info, str) and info.strip()


def test_info_is_a_mapping_too(model_file):
    with pkgnet.Model(model_file(k=1, arch="resnet34")) as model:
        assert model.info["teacher"] == "resnet34"
        assert model.info["channel_order"] == "bgr"
        assert "k=1" in repr(model)


# ------------------------------------------------------------------ errors

def test_missing_file_is_a_file_error(tmp_path):
    with pytest.raises(pkgnet.FileError) as err:
        pkgnet.Model(tmp_path / "absent.safetensors")
    assert "absent.safetensors" in str(err.value)
    assert isinstance(err.value, OSError)  # callers may catch it as one


def test_garbage_and_truncated_files_are_format_errors(model_file, tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"definitely not a model" * 10)
    with pytest.raises(pkgnet.FormatError):
        pkgnet.Model(garbage)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(pkgnet.FormatError):
        pkgnet.Model(empty)
    data = Path(model_file()).read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(pkgnet.FormatError):
        pkgnet.Model(truncated)
    with pytest.raises(pkgnet.FormatError):
        pkgnet.Model(data[:-1])
    with pytest.raises(pkgnet.FormatError):
        pkgnet.Model(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}")


def test_bad_model_argument(model_file):
    with pytest.raises(pkgnet.InvalidArgumentError):
        pkgnet.Model(12345)
    with pytest.raises(pkgnet.InvalidArgumentError):
        pkgnet.Model(b"x" * 100, threads=-1)
    # The engine's limit on threads shows at construction, not at first use.
    with pytest.raises(pkgnet.InvalidArgumentError):
        pkgnet.Model(model_file(), threads=1 << 20)


def test_other_bytes_like_images(model_file):
    data = Path(model_file()).read_bytes()
    padded = np.zeros(2 * len(data), np.uint8)
    padded[::2] = np.frombuffer(data, np.uint8)
    # A strided view is copied to contiguous bytes first.
    with pkgnet.Model(padded[::2]) as a, pkgnet.Model(memoryview(padded)[::2]) as b:
        assert a.info == b.info
    with pytest.raises(pkgnet.FormatError):
        pkgnet.Model(b"")


@pytest.mark.parametrize(
    "make",
    [
        lambda c: c.astype(np.float64),  # right shape, wrong dtype
        lambda c: c.astype(np.int16),
        lambda c: to_float_layout(c).astype(np.float64),
        lambda c: c[..., :1],  # grey cubes for a colour model
        lambda c: c[:, :4],  # 4 frames
        lambda c: c[0],  # no batch dimension
        lambda c: c[:, :, :31],
        lambda c: to_float_layout(c)[:, :12],
        lambda c: to_float_layout(c).reshape(2, 5, 3, 32, 32),
        lambda c: c.transpose(0, 1, 4, 2, 3),  # CHW uint8
        lambda c: [[1, 2], [3]],  # ragged
    ],
    ids=["f64", "i16", "f64-float-layout", "grey", "4-frames", "no-batch", "31-rows", "12-channels",
         "5d-float", "uint8-chw", "ragged"],
)
def test_wrong_dtype_or_shape_is_invalid_argument(model_file, make):
    with pkgnet.Model(model_file()) as model:
        bad = make(synthetic.random_cubes(2, seed=13))
        with pytest.raises(pkgnet.InvalidArgumentError) as err:
            model.score(bad)
    message = str(err.value)
    assert "[N, 5, 32, 32, 3]" in message or "[N, 15, 32, 32]" in message


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_float_input_is_invalid_argument(model_file, value):
    with pkgnet.Model(model_file()) as model:
        cubes = to_float_layout(synthetic.random_cubes(3, seed=14))
        cubes[1, 7, 3, 4] = value
        with pytest.raises(pkgnet.InvalidArgumentError) as err:
            model.score(cubes)
        assert str(err.value)  # the engine's message comes through
        # The model and this thread's session still work afterwards.
        cubes[1, 7, 3, 4] = 0.5
        assert len(model.score(cubes)) == 3


def test_errors_are_one_hierarchy():
    for cls in (pkgnet.InvalidArgumentError, pkgnet.FileError, pkgnet.FormatError, pkgnet.UnsupportedError,
                pkgnet.ModelMismatchError, pkgnet.OutOfMemoryError, pkgnet.BackendError, pkgnet.BusyError,
                pkgnet.InternalError):
        assert issubclass(cls, pkgnet.Error)
    from pkgnet import _native

    for status in range(1, 10):
        assert _native.error_class(status).status == status
    assert _native.error_class(77) is pkgnet.Error


def test_check_uses_the_library_message():
    from pkgnet import _native

    lib = _native.lib()
    out = _native.ctypes.c_void_p()
    status = lib.pkgnet_model_load(b"/nonexistent/dir/m.safetensors", _native.ctypes.byref(out))
    assert status == 2 and out.value is None
    with pytest.raises(pkgnet.FileError) as err:
        _native.check(status)
    assert str(err.value) == lib.pkgnet_last_error().decode()
    assert lib.pkgnet_status_name(status) == b"PKGNET_ERR_IO"


# -------------------------------------------------------- lifetime, threads

def test_close_and_context_manager(model_file):
    model = pkgnet.Model(model_file())
    cubes = synthetic.random_cubes(2, seed=15)
    model.score(cubes)
    model.close()
    model.close()  # idempotent
    assert model.closed
    with pytest.raises(pkgnet.Error):
        model.score(cubes)
    with pkgnet.Model(model_file()) as m:
        m.score(cubes)
    assert m.closed
    # Dropping an unclosed model frees it through its finalizer.
    m = pkgnet.Model(model_file())
    m.score(cubes)
    del m
    gc.collect()


def test_concurrent_threads_match_single_threaded_run(model_file):
    path = model_file(k=2)
    nthreads, rounds = 8, 3
    chunks = [synthetic.random_cubes(3 + (i % 3), seed=100 + i) for i in range(nthreads)]
    with pkgnet.Model(path) as model:
        expected = [model.score(c, maps=True, prediction=True) for c in chunks]
        barrier = threading.Barrier(nthreads)
        results = [[] for _ in range(nthreads)]
        failures = []

        def work(i):
            try:
                barrier.wait()
                for r in range(rounds):
                    # Alternate layouts so u8 and f32 calls overlap too.
                    cubes = chunks[i] if (i + r) % 2 == 0 else to_float_layout(chunks[i])
                    results[i].append((cubes.dtype, model.score(cubes, maps=True, prediction=True)))
            except BaseException as exc:  # reported below, not lost in the thread
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(nthreads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, failures
    for i in range(nthreads):
        assert len(results[i]) == rounds
        for dtype, scores in results[i]:
            if dtype == np.uint8:
                assert_same_scores(scores, expected[i])
            else:
                assert_scores_close(scores.prediction_error, expected[i].prediction_error, "f32", 1e-6)


def test_sessions_of_finished_threads_are_freed(model_file):
    with pkgnet.Model(model_file()) as model:
        cubes = synthetic.random_cubes(1, seed=16)
        model.score(cubes)
        for _ in range(5):
            t = threading.Thread(target=model.score, args=(cubes,))
            t.start()
            t.join()
        gc.collect()
        # The main thread's session stays; the finished threads' are gone.
        assert len(model._sessions) == 1


def test_close_while_other_threads_score(model_file):
    model = pkgnet.Model(model_file())
    cubes = synthetic.random_cubes(16, seed=17)
    started = threading.Event()
    outcomes = []

    def work():
        try:
            while True:
                model.score(cubes)
                started.set()
        except pkgnet.Error as exc:
            outcomes.append(exc)
        except BaseException as exc:
            outcomes.append(exc)
            started.set()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    assert started.wait(60)
    model.close()
    for t in threads:
        t.join(60)
    assert len(outcomes) == 3 and all(type(e) is pkgnet.Error for e in outcomes), outcomes
    gc.collect()


# ------------------------------------------------------------ lazy loading

def _run(code, env_extra, unset=()):
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(PYTHONPATH=str(BINDINGS), **env_extra)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_import_does_not_need_the_library():
    code = (
        "import pkgnet, pkgnet.convert, pkgnet.synthetic\n"
        "try:\n"
        "    pkgnet.version()\n"
        "except pkgnet.BackendError as e:\n"
        "    print('BackendError:', e)\n"
    )
    proc = _run(code, {"PKGNET_LIBRARY": "/nonexistent/libpkgnet.so"})
    assert proc.returncode == 0, proc.stderr
    assert "BackendError:" in proc.stdout
    assert "PKGNET_LIBRARY" in proc.stdout and "/nonexistent/libpkgnet.so" in proc.stdout


def test_pkgnet_library_variable_selects_the_library():
    from pkgnet import _native

    path = _native.lib()._name
    proc = _run("import pkgnet; print(pkgnet._native.lib()._name, pkgnet.version())", {"PKGNET_LIBRARY": path})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [path, "0.1.0"]


def test_repository_build_loads_without_searching_the_system():
    """find_library (ldconfig and the compiler in subprocesses, 8-10 ms) runs
    only when the libraries tried before it failed, not on every first load."""
    from pkgnet import _native

    if not _native._repo_library().exists():
        pytest.skip("no repository build (.build/release/libpkgnet.so): run `make build`")
    code = (
        "import ctypes.util\n"
        "def refuse(name):\n"
        "    raise AssertionError('find_library(%r) was called' % name)\n"
        "ctypes.util.find_library = refuse\n"
        "import pkgnet\n"
        "print(pkgnet._native.lib()._name)\n"
    )
    proc = _run(code, {}, unset=("PKGNET_LIBRARY",))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(_native._repo_library())


# ------------------------------------------------------------ golden cases

def test_golden_cases(golden_case, converted_golden):
    """The engine on converted PyTorch checkpoints vs PyTorch's own outputs."""
    from pkgnet import safetensors_io

    name, folder, k, width, arch, _teacher = golden_case
    io, _meta = safetensors_io.read(folder / "io.safetensors")
    with pkgnet.Model(converted_golden(name)) as model:
        assert (model.info.k, model.info.width, model.info.teacher) == (k, width, arch)
        scores = model.score(io["cubes"], prediction=True)
    assert_scores_close(scores.prediction_error, io["prediction_error"], f"{name}: prediction_error")
    assert_scores_close(scores.inconsistency, io["inconsistency"], f"{name}: inconsistency")
    assert_map_close(scores.prediction, io["prediction"], f"{name}: prediction")
