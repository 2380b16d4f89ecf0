"""The numpy reference against the golden PyTorch outputs.

This validates tests/reference.py itself (and the converter feeding it): with
the reference trusted, the engine's tests can compare against it on any model.
"""

import numpy as np
import pytest
from scipy import signal

import reference as ref
from pkgnet import safetensors_io as sio, synthetic
from support import GOLDEN_CASES, need_shared

FEATURE_RTOL = 1e-5  # max |diff| / max |golden| over a tensor
SCORE_RTOL = 1e-5


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def results(converted_golden):
    cache = {}

    def get(case):
        if case not in cache:
            io, meta = sio.read(need_shared("golden", case, "io.safetensors"))
            model = converted_golden(case)
            cache[case] = (io, meta, ref.reference_scores(model, io["cubes"]), model)
        return cache[case]

    return get


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_reference_reproduces_golden(results, case):
    k = GOLDEN_CASES[case][0]
    io, meta, r, _ = results(case)
    assert int(meta["k"]) == k and meta["teacher"] == GOLDEN_CASES[case][2]
    assert io["cubes"].shape == (4, 5, 32, 32, 3)
    assert r["prediction"].shape == io["prediction"].shape
    assert _rel(r["prediction"], io["prediction"]) < FEATURE_RTOL
    assert len(r["student_features"]) == len(r["teacher_features"]) == k
    for j in range(1, k + 1):
        s, t = io["student_feature_%d" % j], io["teacher_feature_%d" % j]
        assert r["student_features"][j - 1].shape == s.shape
        assert r["teacher_features"][j - 1].shape == t.shape
        assert _rel(r["student_features"][j - 1], s) < FEATURE_RTOL, j
        assert _rel(r["teacher_features"][j - 1], t) < FEATURE_RTOL, j
    np.testing.assert_allclose(r["prediction_error"], io["prediction_error"], rtol=SCORE_RTOL)
    assert r["inconsistency"].shape == io["inconsistency"].shape
    np.testing.assert_allclose(r["inconsistency"], io["inconsistency"], rtol=SCORE_RTOL)
    # Default scoring: weights 1, mu 0, sigma 1 -> the plain sum of components.
    np.testing.assert_allclose(
        r["combined"], io["prediction_error"] + io["inconsistency"].sum(axis=1), rtol=SCORE_RTOL)


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_maps_average_to_scores(results, case):
    _, _, r, _ = results(case)
    assert r["error_map"].shape == (4, 32, 32)
    np.testing.assert_allclose(r["error_map"].mean(axis=(1, 2)), r["prediction_error"], rtol=1e-12)
    for j, m in enumerate(r["inconsistency_maps"]):
        side = 4 if j == 0 else 8
        assert m.shape == (4, side, side)
        np.testing.assert_allclose(m.mean(axis=(1, 2)), r["inconsistency"][:, j], rtol=1e-12)


def test_float_layout_matches_u8(results):
    io, _, r, model = results("k2_w16_resnet18")
    cubes = io["cubes"]
    # [N,5,32,32,C] -> [N,5C,32,32], frame-major on channels.
    f32 = (cubes.astype(np.float32) / 255).transpose(0, 1, 4, 2, 3).reshape(4, 15, 32, 32)
    r2 = ref.reference_scores(model, f32)
    np.testing.assert_allclose(r2["combined"], r["combined"], rtol=1e-6)
    np.testing.assert_allclose(r2["prediction"], r["prediction"], rtol=1e-5, atol=1e-6)


# ------------------------------------ the reference's layers, on their own

def test_conv2d_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 9, 9))
    w = rng.normal(size=(6, 2, 3, 3))
    b = rng.normal(size=6)
    y = ref.conv2d(x, w, b, stride=2, pad=1, groups=2)
    want = np.zeros_like(y)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for n in range(2):
        for o in range(6):
            g = o // 3
            acc = sum(signal.correlate2d(xp[n, g * 2 + c], w[o, c], mode="valid") for c in range(2))
            want[n, o] = acc[::2, ::2] + b[o]
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


def test_conv_transpose_is_adjoint_of_conv():
    # ConvTranspose2d(stride 2, pad 1) is the adjoint of Conv2d(stride 2, pad 1)
    # with the same weights; output_padding 1 picks the even output size.
    rng = np.random.default_rng(1)
    w = rng.normal(size=(5, 3, 3, 3))  # transposed layout [in=5, out=3]
    x = rng.normal(size=(2, 5, 4, 4))
    y = rng.normal(size=(2, 3, 8, 8))
    zero = np.zeros(3)
    up = ref.conv_transpose2d(x, w, zero)
    assert up.shape == (2, 3, 8, 8)
    down = ref.conv2d(y, w, None, stride=2, pad=1)  # [out=5, in=3] as a conv weight
    assert down.shape == (2, 5, 4, 4)
    np.testing.assert_allclose(np.sum(up * y), np.sum(x * down), rtol=1e-12)


def test_maxpool_and_batchnorm():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    assert ref.maxpool(x, 2, 2, 0)[0, 0].tolist() == [[5, 7], [13, 15]]
    # Windows rows/cols {-1,0,1} and {1,2,3}; the -inf padding never wins.
    assert ref.maxpool(-x, 3, 2, 1)[0, 0].tolist() == [[0, -1], [-4, -5]]
    p = {"b.weight": np.array([2.0]), "b.bias": np.array([1.0]),
         "b.running_mean": np.array([3.0]), "b.running_var": np.array([4.0 - 1e-5])}
    assert np.allclose(ref.batchnorm(x, p, "b"), (x - 3) / 2 * 2 + 1)


def test_teacher_input_conventions(tmp_path):
    cubes = synthetic.random_cubes(2, seed=3)
    a = tmp_path / "a.safetensors"
    synthetic.random_model(a, seed=4)
    model = ref.Model(a)
    target = ref.frames_of(cubes, 3)[:, 4]
    assert np.array_equal(ref.teacher_input(model, target), target)
    model.meta["teacher"]["channel_order"] = "rgb"
    assert np.array_equal(ref.teacher_input(model, target), target[:, ::-1])
    model.meta["input"]["channel_order"] = "rgb"
    model.meta["teacher"]["mean"] = [0.1, 0.2, 0.3]
    model.meta["teacher"]["std"] = [0.5, 0.25, 2.0]
    got = ref.teacher_input(model, target)
    np.testing.assert_allclose(got[:, 1], (target[:, 1] - 0.2) / 0.25)
    g = tmp_path / "g.safetensors"
    synthetic.random_model(g, channels=1, seed=4)
    grey = ref.Model(g)
    t1 = ref.frames_of(synthetic.random_cubes(2, channels=1), 1)[:, 4]
    got = ref.teacher_input(grey, t1)
    assert got.shape == (2, 3, 32, 32) and np.array_equal(got[:, 2], t1[:, 0])
