"""An ONNX graph (opset 17) of a pkgnet model file: the peer that benchmarks/peer.py times.

    python3 benchmarks/onnx_graph.py model.safetensors -o model.onnx

    from onnx_graph import build_onnx
    proto = build_onnx("model.safetensors")   # onnx.ModelProto
    multiply_adds(proto)                      # per cube, of its convolutions

Input ``cubes``: float32 [N, 5C, 32, 32] in [0, 1], frames stacked frame-major
on channels (the layout pkgnet.Model.score takes as float32). Outputs
``prediction_error`` [N], ``inconsistency`` [N, K], ``combined`` [N], the
same definitions as docs/model-format.md and tests/reference.py. Every
teacher arch of the model format is built (torchvision and CIFAR ResNets,
EfficientNet-Lite0), with the file's distilled pairs and their projections;
the teacher stops at the deepest block the pairs name.

The graph is written as the published PyTorch network would export: every
BatchNorm is its own BatchNormalization node, the teacher's channel swap and
mean/std are explicit ops, the scores are computed in the graph. Nothing is
pre-folded here, so that ONNX Runtime's own optimiser (Conv+BN, Conv+Relu
fusion, NCHWc layouts at level ALL) decides how to run it, as it would for a
user's exported model. Weights are stored as float32 whatever the file holds
(F16/BF16 are widened exactly).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bindings" / "python"))

from pkgnet import safetensors_io  # noqa: E402
from pkgnet.convert import (ARCHS, CIFAR_ARCHS, default_pairs, lite_blocks,  # noqa: E402
                            teacher_blocks)

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:  # peer.py reports the missing package with the install command
    onnx = None

OPSET = 17
BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, as the published code uses
LITE_BN_EPS = 1e-3  # efficientnet-lite-pytorch's BatchNorms
COS_EPS = 1e-8  # torch.nn.functional.cosine_similarity's eps



class _Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, tensors):
        self.tensors = tensors  # name -> numpy array from the model file
        self.nodes = []
        self.inits = []
        self._stored = set()
        self._n = 0

    def name(self, hint):
        self._n += 1
        return "%s_%d" % (hint, self._n)

    def const(self, value, hint="c", dtype=np.float32):
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def weight(self, key):
        """An initializer holding the model file's tensor ``key`` (as float32)."""
        if key not in self._stored:  # the model file's names are unique; store each once
            self._stored.add(key)
            self.inits.append(numpy_helper.from_array(np.asarray(self.tensors[key], dtype=np.float32), key))
        return key

    def op(self, op_type, inputs, hint=None, **attrs):
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    # -- layers ---------------------------------------------------------

    def conv(self, x, prefix, stride=1, pad=0, groups=1, bias=True, pads=None):
        """``pads``: [top, left, bottom, right] when the sides differ, else ``pad`` on all."""
        w = self.tensors[prefix + ".weight"]
        k = w.shape[2]
        inputs = [x, self.weight(prefix + ".weight")]
        if bias:
            inputs.append(self.weight(prefix + ".bias"))
        return self.op("Conv", inputs, hint=prefix, kernel_shape=[k, k], strides=[stride, stride],
                       pads=pads or [pad] * 4, group=groups)

    def bn(self, x, prefix, eps=BN_EPS):
        inputs = [x] + [self.weight(prefix + "." + t) for t in ("weight", "bias", "running_mean", "running_var")]
        return self.op("BatchNormalization", inputs, hint=prefix, epsilon=eps)

    def relu(self, x):
        return self.op("Relu", [x])

    def relu6(self, x):
        return self.op("Clip", [x, self.const(0.0, "zero"), self.const(6.0, "six")])

    def maxpool(self, x, kernel, stride, pad):
        return self.op("MaxPool", [x], kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)

    def conv_transpose(self, x, prefix):
        # ConvTranspose2d(in, out, 3, stride=2, padding=1, output_padding=1): doubles the side.
        return self.op("ConvTranspose", [x, self.weight(prefix + ".weight"), self.weight(prefix + ".bias")],
                       hint=prefix, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                       output_padding=[1, 1])

    def slice_channels(self, x, begin, end):
        return self.op("Slice", [x, self.const([begin], "starts", np.int64), self.const([end], "ends", np.int64),
                                 self.const([1], "axes", np.int64)])


# ---------------------------------------------------------------- networks

def _double_conv(g, x, prefix):
    x = g.relu(g.bn(g.conv(x, prefix + ".0", 1, 1), prefix + ".1"))
    return g.relu(g.bn(g.conv(x, prefix + ".3", 1, 1), prefix + ".4"))


def _student(g, x, k):
    """(prediction [N,C,32,32], {feature name: output}) with the features
    pairs may name (docs/model-format.md)."""
    x32 = _double_conv(g, x, "student.encoder.in_conv.conv.conv")
    skips = [x32]
    h = x32
    for n in (1, 2, 3):
        pre = "student.encoder.down%d.mpconv" % n
        if k == 2:
            h = _double_conv(g, g.maxpool(h, 2, 2, 0), pre + ".1.conv")
        else:
            h = _double_conv(g, g.conv(h, pre + ".0", 2, 1), pre + ".1.conv")
        skips.append(h)
    x32, x16, x8, x4 = skips
    up = g.conv_transpose(x4, "student.decoder.up1.up")
    if k == 1:
        up = g.op("Concat", [x8, up], axis=1)
    d8 = _double_conv(g, up, "student.decoder.up1.conv.conv")
    up = g.conv_transpose(d8, "student.decoder.up2.up")
    d16 = _double_conv(g, g.op("Concat", [x16, up], axis=1), "student.decoder.up2.conv.conv")
    up = g.conv_transpose(d16, "student.decoder.up3.up")
    d32 = _double_conv(g, g.op("Concat", [x32, up], axis=1), "student.decoder.up3.conv.conv")
    pred = g.conv(d32, "student.decoder.outconv.conv")
    return pred, {"e32": x32, "e16": x16, "e8": x8, "bottleneck": x4, "d8": d8, "d16": d16, "d32": d32}


def _shortcut(g, x, prefix, stride):
    if prefix + ".downsample.0.weight" in g.tensors:
        return g.bn(g.conv(x, prefix + ".downsample.0", stride, 0, bias=False), prefix + ".downsample.1")
    return x


def _torchvision_teacher(g, x, arch, depth):
    """{"layer1": stem + maxpool + layer1, "layer2": layer2}, up to layer ``depth``."""
    kind, (n1, n2), groups, _ = ARCHS[arch]
    t = "teacher."
    h = g.relu(g.bn(g.conv(x, t + "conv1", 2, 3, bias=False), t + "bn1"))
    h = g.maxpool(h, 3, 2, 1)
    outs = {}
    for layer, nblocks, stride in ((1, n1, 1), (2, n2, 2))[:depth]:
        for i in range(nblocks):
            p = "%slayer%d.%d" % (t, layer, i)
            s = stride if i == 0 else 1
            if kind == "basic":
                out = g.relu(g.bn(g.conv(h, p + ".conv1", s, 1, bias=False), p + ".bn1"))
                out = g.bn(g.conv(out, p + ".conv2", 1, 1, bias=False), p + ".bn2")
            else:  # torchvision's Bottleneck strides in its 3x3 conv
                out = g.relu(g.bn(g.conv(h, p + ".conv1", 1, 0, bias=False), p + ".bn1"))
                out = g.relu(g.bn(g.conv(out, p + ".conv2", s, 1, groups, bias=False), p + ".bn2"))
                out = g.bn(g.conv(out, p + ".conv3", 1, 0, bias=False), p + ".bn3")
            h = g.relu(g.op("Add", [out, _shortcut(g, h, p, s)]))
        outs["layer%d" % layer] = h
    return outs


def _cifar_teacher(g, x, arch, depth):
    """{"layer1", "layer2", "layer3"} of a CIFAR ResNet, up to layer ``depth``."""
    t = "teacher."
    h = g.relu(g.bn(g.conv(x, t + "conv1", 1, 1, bias=False), t + "bn1"))
    outs = {}
    for layer, planes, stride in ((1, 16, 1), (2, 32, 2), (3, 64, 2))[:depth]:
        for i in range(CIFAR_ARCHS[arch]):
            p = "%slayer%d.%d" % (t, layer, i)
            s = stride if i == 0 else 1
            out = g.relu(g.bn(g.conv(h, p + ".conv1", s, 1, bias=False), p + ".bn1"))
            out = g.bn(g.conv(out, p + ".conv2", 1, 1, bias=False), p + ".bn2")
            if s != 1:  # the channels change only where the stride is 2
                # Option A: every second row and column, planes/4 zero channels each side.
                two = g.const([2, 2], "steps", np.int64)
                sub = g.op("Slice", [h, g.const([0, 0], "starts", np.int64),
                                     g.const([1 << 30, 1 << 30], "ends", np.int64),
                                     g.const([2, 3], "axes", np.int64), two])
                q = planes // 4
                h = g.op("Pad", [sub, g.const([0, q, 0, 0, 0, q, 0, 0], "pads", np.int64)])
            h = g.relu(g.op("Add", [out, h]))
        outs["layer%d" % layer] = h
    return outs


def _same_pads(side, kernel, stride):
    """TensorFlow "same" padding [top, left, bottom, right]: the odd row below and right."""
    out = -(-side // stride)
    total = max((out - 1) * stride + kernel - side, 0)
    return [total // 2, total // 2, total - total // 2, total - total // 2]


def _lite_teacher(g, x, depth):
    """{"blocks.N"} of EfficientNet-Lite0, up to block ``depth`` - 1."""
    t = "teacher."
    h = g.relu6(g.bn(g.conv(x, t + "_conv_stem", 2, bias=False, pads=_same_pads(32, 3, 2)),
                     t + "_bn0", LITE_BN_EPS))
    side = 16
    outs = {}
    for i, cin, cout, kernel, stride, expand in lite_blocks()[:depth]:
        p = "%s_blocks.%d." % (t, i)
        out = h
        if expand != 1:
            out = g.relu6(g.bn(g.conv(out, p + "_expand_conv", bias=False), p + "_bn0", LITE_BN_EPS))
        out = g.relu6(g.bn(g.conv(out, p + "_depthwise_conv", stride, groups=cin * expand, bias=False,
                                  pads=_same_pads(side, kernel, stride)), p + "_bn1", LITE_BN_EPS))
        out = g.bn(g.conv(out, p + "_project_conv", bias=False), p + "_bn2", LITE_BN_EPS)
        h = g.op("Add", [out, h]) if stride == 1 and cin == cout else out
        side = -(-side // stride)
        outs["blocks.%d" % i] = h
    return outs


def _teacher(g, x, arch, blocks):
    """The named blocks' outputs, in that order; the graph stops at the deepest."""
    names = list(teacher_blocks(arch))
    depth = max(names.index(b) for b in blocks) + 1
    if arch in ARCHS:
        outs = _torchvision_teacher(g, x, arch, depth)
    elif arch in CIFAR_ARCHS:
        outs = _cifar_teacher(g, x, arch, depth)
    else:
        outs = _lite_teacher(g, x, depth)
    return [outs[b] for b in blocks]


def _teacher_input(g, target, meta, channels):
    """(x/255 - mean)/std in the teacher's channel order; target is already x/255."""
    if channels == 1:
        x = g.op("Concat", [target, target, target], axis=1)
    elif meta["teacher"].get("channel_order", "bgr") != meta["input"].get("channel_order", "bgr"):
        x = g.op("Gather", [target, g.const([2, 1, 0], "swap", np.int64)], axis=1)
    else:
        x = target
    mean = np.asarray(meta["teacher"].get("mean", [0.0] * 3), np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(meta["teacher"].get("std", [1.0] * 3), np.float32).reshape(1, 3, 1, 1)
    if np.any(mean != 0):
        x = g.op("Sub", [x, g.const(mean, "mean")])
    if np.any(std != 1):
        x = g.op("Div", [x, g.const(std, "std")])
    return x


def _inconsistency(g, s, t):
    """[N, 1]: mean over positions of 1 - cosine(s, t) along channels, norms clamped at 1e-8."""
    axes = g.const([1], "axes", np.int64)

    def sum_c(a, b):
        return g.op("ReduceSum", [g.op("Mul", [a, b]), axes], keepdims=0)

    eps = g.const(COS_EPS, "eps")
    ns = g.op("Max", [g.op("Sqrt", [sum_c(s, s)]), eps])
    nt = g.op("Max", [g.op("Sqrt", [sum_c(t, t)]), eps])
    cos = g.op("Div", [sum_c(s, t), g.op("Mul", [ns, nt])])
    one_minus = g.op("Sub", [g.const(1.0, "one"), cos])
    return g.op("ReduceMean", [one_minus], axes=[1, 2], keepdims=0)  # opset 17: axes is an attribute


def build_onnx(path):
    """The onnx.ModelProto scoring the model file at ``path`` (see the module doc)."""
    if onnx is None:
        raise ImportError("the onnx package is missing: python3 -m pip install onnx onnxruntime")
    tensors, metadata = safetensors_io.read(path)
    meta = json.loads(metadata["pkgnet"])
    st = meta["student"]
    k, channels, task = st["k"], st.get("channels", 3), st.get("task", "pred")
    arch = meta["teacher"]["arch"]
    if "pairs" in meta:
        pairs = [(p["student"], p["teacher"]) for p in meta["pairs"]]
    else:
        pairs = default_pairs(k, arch)
    g = _Graph(tensors)

    c = channels
    target = g.slice_channels("cubes", 4 * c, 5 * c)
    x = g.slice_channels("cubes", 0, 4 * c) if task == "pred" else target
    pred, named = _student(g, x, k)
    sfeat = []
    for j, (student, _) in enumerate(pairs):
        proj = "student.projection.%d" % j
        sfeat.append(g.conv(named[student], proj) if proj + ".weight" in tensors else named[student])
    tfeat = _teacher(g, _teacher_input(g, target, meta, channels), arch, [t for _, t in pairs])

    diff = g.op("Sub", [pred, target])
    err = g.op("ReduceMean", [g.op("Mul", [diff, diff])], axes=[1, 2, 3], keepdims=0)
    g.nodes.append(helper.make_node("Identity", [err], ["prediction_error"]))
    incs = [g.op("Unsqueeze", [_inconsistency(g, s, t), g.const([1], "axes", np.int64)])
            for s, t in zip(sfeat, tfeat)]
    inc = g.op("Concat", incs, axis=1) if len(incs) > 1 else incs[0]
    g.nodes.append(helper.make_node("Identity", [inc], ["inconsistency"]))

    sc = meta["scoring"]
    comps = g.op("Concat", [g.op("Unsqueeze", [err, g.const([1], "axes", np.int64)]), inc], axis=1)
    z = g.op("Div", [g.op("Sub", [comps, g.const(sc["mu"], "mu")]), g.const(sc["sigma"], "sigma")])
    z = g.op("Mul", [z, g.const(sc["weights"], "weights")])
    g.nodes.append(helper.make_node("ReduceSum", [z, g.const([1], "axes", np.int64)], ["combined"], keepdims=0))

    graph = helper.make_graph(
        g.nodes, "pkgnet_%s_k%d_w%d" % (arch, k, st["width"]),
        [helper.make_tensor_value_info("cubes", TensorProto.FLOAT, ["N", 5 * c, 32, 32])],
        [helper.make_tensor_value_info("prediction_error", TensorProto.FLOAT, ["N"]),
         helper.make_tensor_value_info("inconsistency", TensorProto.FLOAT, ["N", len(sfeat)]),
         helper.make_tensor_value_info("combined", TensorProto.FLOAT, ["N"])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="pkgnet-benchmarks")
    model.ir_version = 8  # opset 17's IR; accepted by every onnxruntime that runs opset 17
    onnx.checker.check_model(model)
    return model


def multiply_adds(proto):
    """Multiply-adds per cube of the graph's Conv and ConvTranspose nodes as
    direct convolutions compute them: every output element of a Conv costs
    (input channels per group) x kernel taps, every input element of a
    ConvTranspose (output channels per group) x taps. The sides come from
    ONNX shape inference, independently of pkgnet's own count (pkgnet bench).
    """
    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]  # N (symbolic) -> 1
              for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    weights = {t.name: list(t.dims) for t in proto.graph.initializer}
    total = 0
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        w = weights[node.input[1]]  # Conv [out, in/g, k, k]; ConvTranspose [in, out/g, k, k]
        grid = shapes[node.output[0] if node.op_type == "Conv" else node.input[0]]
        total += w[0] * w[1] * w[2] * w[3] * grid[2] * grid[3]
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    onnx.save(build_onnx(args.model), args.output)


if __name__ == "__main__":
    main()
