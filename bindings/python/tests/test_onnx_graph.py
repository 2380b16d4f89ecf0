"""The peers of benchmarks/peer.py compute PKG-Net's scores.

The ONNX graph of benchmarks/onnx_graph.py, run by ONNX Runtime, and the
PyTorch eager forward of benchmarks/torch_eager.py are checked against the
float64 numpy reference (tests/reference.py) on small random models, so that
a speed comparison with pkgnet compares the same computation. Skipped when
onnx/onnxruntime (or torch) are not installed.
"""

import sys

import numpy as np
import pytest

from pkgnet import convert, synthetic
from reference import reference_scores
from support import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

TOL = 1e-4

# (k, width, arch, task, channels, metadata options): between them every
# branch of the graph builders: k=1/2, pred/recon, grey/colour, basic and
# grouped bottleneck blocks, the teacher channel swap and mean/std, and
# scoring statistics that are not the identity.
CASES = {
    "k2_resnet18": (2, 16, "resnet18", "pred", 3, {}),
    "k1_resnet34_recon_grey": (1, 16, "resnet34", "recon", 1, {}),
    "k2_resnet18_rgb_teacher_meanstd": (2, 16, "resnet18", "pred", 3, {
        "teacher_order": "rgb", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "weights": [1.0, 0.5, 2.0], "mu": [0.01, 0.2, 0.3], "sigma": [0.02, 0.1, 0.05]}),
    "k2_resnext50": (2, 64, "resnext50_32x4d", "pred", 3, {}),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    """(model path, uint8 cubes, float32 cubes, reference scores) of one case."""
    k, width, arch, task, channels, opts = CASES[request.param]
    path = tmp_path_factory.mktemp("onnx") / (request.param + ".safetensors")
    student, teacher = synthetic.random_state_dicts(k, width, arch, task, channels, seed=7)
    meta = convert.build_metadata(k, width, task, channels, arch, **opts)
    tensors = {"student." + n: a for n, a in student.items()}
    tensors.update({"teacher." + n: a for n, a in teacher.items()})
    convert.write_model(str(path), tensors, meta)
    cubes = synthetic.random_cubes(3, channels, seed=11)
    x = np.ascontiguousarray(cubes.transpose(0, 1, 4, 2, 3).reshape(3, 5 * channels, 32, 32),
                             dtype=np.float32) / 255.0
    return str(path), x, reference_scores(str(path), cubes)


def _check(got, ref):
    for name, a in zip(("prediction_error", "inconsistency", "combined"), got):
        b = ref[name]
        assert np.shape(a) == b.shape, name
        rel = np.max(np.abs(np.asarray(a, np.float64) - b) / np.maximum(np.abs(b), 1e-6))
        assert rel < TOL, "%s: relative difference %.2e" % (name, rel)


def test_onnx_graph_matches_reference(case):
    onnx_graph = pytest.importorskip("onnx_graph")
    if onnx_graph.onnx is None:
        pytest.skip("onnx not installed: python3 -m pip install onnx onnxruntime")
    ort = pytest.importorskip("onnxruntime", reason="python3 -m pip install onnx onnxruntime")
    path, x, ref = case
    proto = onnx_graph.build_onnx(path)
    assert proto.opset_import[0].version == 17
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), sess_options=opts,
                                   providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["prediction_error", "inconsistency", "combined"]
    _check(session.run(None, {"cubes": x}), ref)


def test_torch_eager_matches_reference(case):
    pytest.importorskip("torch", reason="PyTorch not installed (optional peer)")
    from torch_eager import TorchScorer

    path, x, ref = case
    _check(TorchScorer(path)(x), ref)
