"""The ONNX Runtime peer graph (benchmarks/onnx_graph.py) with the CIFAR and
EfficientNet-Lite0 teachers, explicit pairs and projections, against the
float64 numpy reference. Skipped when onnx/onnxruntime are not installed."""

import sys

import numpy as np
import pytest

from pkgnet import synthetic
from reference import reference_scores
from support import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

TOL = 1e-4

# (arch, k, width, pairs): option-A shortcuts, TensorFlow "same" padding and
# ReLU6, projections on some pairs, a teacher cut at a shallow block.
CASES = {
    "resnet20_projected": ("resnet20", 2, 8,
                           [("d8", "layer3"), ("e16", "layer2"), ("d32", "layer1")]),
    "resnet56_shallow": ("resnet56", 1, 16, [("e16", "layer2")]),
    "lite0": ("efficientnet_lite0", 2, 16, [("bottleneck", "blocks.4"), ("d8", "blocks.2"),
                                            ("d16", "blocks.0")]),
    "resnet18_default_projected": ("resnet18", 2, 8, None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_graph_matches_reference(name, tmp_path):
    onnx_graph = pytest.importorskip("onnx_graph")
    if onnx_graph.onnx is None:
        pytest.skip("onnx not installed: python3 -m pip install onnx onnxruntime")
    ort = pytest.importorskip("onnxruntime", reason="python3 -m pip install onnx onnxruntime")
    arch, k, width, pairs = CASES[name]
    path = str(tmp_path / (name + ".safetensors"))
    synthetic.random_model(path, k=k, width=width, arch=arch, seed=9, pairs=pairs)
    cubes = synthetic.random_cubes(3, seed=12)
    x = np.ascontiguousarray(cubes.transpose(0, 1, 4, 2, 3).reshape(3, 15, 32, 32),
                             dtype=np.float32) / 255.0
    ref = reference_scores(path, cubes)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx_graph.build_onnx(path).SerializeToString(),
                                   sess_options=opts, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"cubes": x})
    for key, got in zip(("prediction_error", "inconsistency", "combined"), outputs):
        want = ref[key]
        assert np.shape(got) == want.shape, key
        rel = np.max(np.abs(np.asarray(got, np.float64) - want) / np.maximum(np.abs(want), 1e-6))
        assert rel < TOL, "%s: relative difference %.2e" % (key, rel)
