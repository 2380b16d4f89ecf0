import json

import numpy as np
import pytest

import reference as ref
from pkgnet import convert, safetensors_io as sio, synthetic
from pkgnet.errors import InvalidArgumentError


def test_random_model_file(tmp_path):
    path = tmp_path / "m.safetensors"
    meta = synthetic.random_model(path, k=2, width=16, arch="resnet18", seed=3,
                                  weights=[0.01, 0.65, 0.35], mu=[0.1, 0.2, 0.3],
                                  sigma=[2.0, 3.0, 4.0])
    tensors, md = sio.read(path)
    assert json.loads(md["pkgnet"]) == meta
    assert meta["scoring"] == {"weights": [0.01, 0.65, 0.35], "mu": [0.1, 0.2, 0.3],
                               "sigma": [2.0, 3.0, 4.0]}
    want = ({"student." + n for n in convert.student_shapes(2, 16, 3, "pred")}
            | {"teacher." + n for n in convert.teacher_shapes("resnet18")})
    assert set(tensors) == want
    rv = np.concatenate([v for n, v in tensors.items() if n.endswith("running_var")])
    rm = np.concatenate([v for n, v in tensors.items() if n.endswith("running_mean")])
    gamma = np.concatenate([v for n, v in tensors.items()
                            if n.endswith(".weight") and v.ndim == 1])
    assert rv.min() >= 0.5 and rv.max() <= 2.0 and rv.std() > 0.3
    assert abs(rm.std() - 0.1) < 0.02
    assert gamma.min() >= 0.5 and gamma.max() <= 1.5
    # Same seed, same file; another seed, other weights.
    again = tmp_path / "again.safetensors"
    synthetic.random_model(again, k=2, width=16, arch="resnet18", seed=3,
                           weights=[0.01, 0.65, 0.35], mu=[0.1, 0.2, 0.3], sigma=[2.0, 3.0, 4.0])
    assert again.read_bytes() == path.read_bytes()
    other = tmp_path / "other.safetensors"
    synthetic.random_model(other, seed=4)
    assert other.read_bytes() != path.read_bytes()


def test_random_model_projects_where_channels_differ(tmp_path):
    path = tmp_path / "m.safetensors"
    synthetic.random_model(path, k=2, width=16, arch="resnet50")
    entries, _ = sio.read_header(path)
    assert tuple(entries["student.projection.0.weight"][1]) == (512, 128, 1, 1)
    assert tuple(entries["student.projection.1.weight"][1]) == (256, 64, 1, 1)
    with pytest.raises(InvalidArgumentError, match="no default pairs"):
        synthetic.random_model(path, arch="resnet20")
    with pytest.raises(InvalidArgumentError, match="unknown teacher arch"):
        synthetic.random_model(path, arch="resnet101")


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_random_model_dtypes(tmp_path, dtype):
    path = tmp_path / "m.safetensors"
    synthetic.random_model(path, k=1, dtype=dtype)
    entries, _ = sio.read_header(path)
    assert {e[0] for e in entries.values()} == {dtype.upper()}


@pytest.mark.parametrize("k,width,arch,task,channels", [
    (2, 16, "resnet18", "pred", 3),
    (1, 16, "resnet34", "recon", 1),
    (2, 64, "resnext50_32x4d", "pred", 3),
])
def test_activations_stay_order_one(tmp_path, k, width, arch, task, channels):
    path = tmp_path / "m.safetensors"
    synthetic.random_model(path, k=k, width=width, arch=arch, task=task, channels=channels, seed=1)
    r = ref.reference_scores(path, synthetic.random_cubes(3, channels=channels, seed=2))
    for f in r["student_features"] + r["teacher_features"] + [r["prediction"]]:
        rms = float(np.sqrt(np.mean(f ** 2)))
        assert 0.05 < rms < 10, rms
    assert np.all((r["inconsistency"] > 0.05) & (r["inconsistency"] < 1.95))
    assert np.all(np.isfinite(r["combined"]))


@pytest.mark.parametrize("channels", [3, 1])
def test_random_cubes(channels):
    c = synthetic.random_cubes(6, channels=channels, seed=1)
    assert c.shape == (6, 5, 32, 32, channels) and c.dtype == np.uint8
    assert np.array_equal(c, synthetic.random_cubes(6, channels=channels, seed=1))
    assert not np.array_equal(c, synthetic.random_cubes(6, channels=channels, seed=2))
    f = c.astype(np.float64)
    assert f.std() > 10  # not flat
    # Temporal structure: a frame resembles its neighbour far more than another cube's frame.
    step = np.abs(f[:, 1:] - f[:, :-1]).mean()
    across = np.abs(f[1:, 0] - f[:-1, 0]).mean()
    assert step < 0.6 * across, (step, across)
    assert synthetic.random_cubes(0, channels=channels).shape == (0, 5, 32, 32, channels)


def test_random_cubes_bad_args():
    with pytest.raises(InvalidArgumentError):
        synthetic.random_cubes(2, channels=2)
    with pytest.raises(InvalidArgumentError):
        synthetic.random_cubes(-1)
