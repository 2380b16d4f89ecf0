"""An independent numpy reference of PKG-Net scoring (float64).

Written from the network spec, not from the engine: BatchNorm stays a
separate step (the engine folds it into the convolutions), convolutions are
sums over kernel offsets, the transposed convolution is its scatter
definition, and the model file is parsed here rather than with
pkgnet.safetensors_io. Slow but plain.

    out = reference_scores("model.safetensors", cubes)

``cubes``: uint8 [N,5,32,32,C] (frames oldest to newest, HWC) or float32
[N,5C,32,32] in [0,1] (frames stacked frame-major on channels).
"""

import json
import struct

import numpy as np

BN_EPS = 1e-5  # PyTorch's default: torchvision and CIFAR ResNets
LITE_BN_EPS = 1e-3  # efficientnet-lite-pytorch's batch_norm_epsilon (TensorFlow's)
COS_EPS = 1e-8

_ST_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8", "U8": "u1", "I64": "<i8"}

# torchvision: arch -> (block, blocks in layer1, blocks in layer2, groups)
ARCHS = {
    "resnet18": ("basic", 2, 2, 1),
    "resnet34": ("basic", 3, 4, 1),
    "resnet50": ("bottleneck", 3, 4, 1),
    "resnext50_32x4d": ("bottleneck", 3, 4, 32),
    "wide_resnet50_2": ("bottleneck", 3, 4, 1),
}
# CIFAR-10 ResNets (akamaster's resnet.py): BasicBlocks per stage.
CIFAR_ARCHS = {"resnet20": 3, "resnet56": 9}
# EfficientNet-Lite0, efficientnet-lite-pytorch's efficientnet_lite() block
# strings: (repeats, kernel, stride, expand ratio, in, out).
LITE0_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
                (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
                (1, 3, 1, 6, 192, 320)]


# ------------------------------------------------------------ model file

def read_safetensors(path):
    """(name -> float64 array (floats) or raw array, metadata) of a safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = np.frombuffer(blob[base + begin:base + end], dtype=_ST_DTYPES[info["dtype"]])
        if info["dtype"] == "BF16":
            arr = (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        elif info["dtype"] in ("F32", "F16", "F64"):
            arr = raw.astype(np.float64)
        else:
            arr = raw.copy()
        out[name] = arr.reshape(info["shape"])
    return out, meta


class Model:
    def __init__(self, path):
        tensors, meta = read_safetensors(path)
        self.meta = json.loads(meta["pkgnet"])
        self.s = {n[len("student."):]: v for n, v in tensors.items() if n.startswith("student.")}
        self.t = {n[len("teacher."):]: v for n, v in tensors.items() if n.startswith("teacher.")}
        st = self.meta["student"]
        self.k = st["k"]
        self.width = st["width"]
        self.task = st["task"]
        self.channels = st["channels"]
        self.arch = self.meta["teacher"]["arch"]
        if "pairs" in self.meta:
            self.pairs = [(p["student"], p["teacher"]) for p in self.meta["pairs"]]
        else:  # the published code's pairs (torchvision teachers only)
            assert self.arch in ARCHS, self.arch
            self.pairs = [("bottleneck", "layer2"), ("d8", "layer1")][:self.k]


# ---------------------------------------------------------------- layers

def conv2d(x, w, b=None, stride=1, pad=0, groups=1):
    """x [N,Cin,H,W], w [Cout,Cin/groups,kh,kw]: a sum over kernel offsets."""
    n, cin, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    assert cin == cg * groups and cout % groups == 0, (x.shape, w.shape, groups)
    og = cout // groups
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - kh) // stride + 1
    wo = (wd + 2 * pad - kw) // stride + 1
    y = np.zeros((n, cout, ho, wo))
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
                wk = w[g * og:(g + 1) * og, :, i, j]  # [og, cg]
                y[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, wk)
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv_transpose2d(x, w, b, stride=2, pad=1, output_padding=1):
    """x [N,Cin,H,W], w [Cin,Cout,kh,kw]: input pixel (i, j) adds w * x at
    output (i*stride - pad + ki, j*stride - pad + kj)."""
    n, cin, h, wd = x.shape
    cin2, cout, kh, kw = w.shape
    assert cin == cin2
    ho = (h - 1) * stride - 2 * pad + kh + output_padding
    wo = (wd - 1) * stride - 2 * pad + kw + output_padding
    # Uncropped canvas: index = output index + pad.
    full = np.zeros((n, cout, max((h - 1) * stride + kh, ho + pad), max((wd - 1) * stride + kw, wo + pad)))
    for i in range(kh):
        for j in range(kw):
            contrib = np.einsum("nchw,co->nohw", x, w[:, :, i, j])
            full[:, :, i:i + stride * (h - 1) + 1:stride, j:j + stride * (wd - 1) + 1:stride] += contrib
    return full[:, :, pad:pad + ho, pad:pad + wo] + b[None, :, None, None]


def depthwise_conv2d(x, w, stride=1):
    """x [N,C,H,W] (already padded), w [C,1,k,k]: each channel its own filter."""
    n, c, h, wd = x.shape
    k = w.shape[2]
    assert w.shape == (c, 1, k, k), (x.shape, w.shape)
    ho = (h - k) // stride + 1
    wo = (wd - k) // stride + 1
    y = np.zeros((n, c, ho, wo))
    for i in range(k):
        for j in range(k):
            patch = x[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            y += patch * w[None, :, 0, i, j, None, None]
    return y


def pad_same(x, kernel, stride):
    """TensorFlow "same" padding as efficientnet-lite-pytorch's Conv2d*SamePadding:
    output side ceil(h/stride), the odd row of padding below and right."""
    h = x.shape[2]
    assert x.shape[3] == h
    out = -(-h // stride)
    total = max((out - 1) * stride + kernel - h, 0)
    before = total // 2
    return np.pad(x, ((0, 0), (0, 0), (before, total - before), (before, total - before)))


def batchnorm(x, p, prefix, eps=BN_EPS):
    mean = p[prefix + ".running_mean"][None, :, None, None]
    var = p[prefix + ".running_var"][None, :, None, None]
    gamma = p[prefix + ".weight"][None, :, None, None]
    beta = p[prefix + ".bias"][None, :, None, None]
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def relu(x):
    return np.maximum(x, 0.0)


def relu6(x):
    return np.clip(x, 0.0, 6.0)


def maxpool(x, kernel, stride, pad):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    ho = (h + 2 * pad - kernel) // stride + 1
    wo = (w + 2 * pad - kernel) // stride + 1
    y = np.full((n, c, ho, wo), -np.inf)
    for i in range(kernel):
        for j in range(kernel):
            y = np.maximum(y, xp[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride])
    return y


# --------------------------------------------------------------- student

def double_conv(x, p, prefix):
    x = relu(batchnorm(conv2d(x, p[prefix + ".0.weight"], p[prefix + ".0.bias"], 1, 1), p, prefix + ".1"))
    x = relu(batchnorm(conv2d(x, p[prefix + ".3.weight"], p[prefix + ".3.bias"], 1, 1), p, prefix + ".4"))
    return x


def student_forward(p, k, x):
    """(prediction [N,C,32,32], {feature name: map}) with the features pairs
    may name: encoder outputs e32, e16, e8, the bottleneck, decoder outputs
    d8 (up1), d16, d32."""
    x32 = double_conv(x, p, "encoder.in_conv.conv.conv")
    skips = [x32]
    h = x32
    for n in (1, 2, 3):
        pre = "encoder.down%d.mpconv" % n
        if k == 2:
            h = double_conv(maxpool(h, 2, 2, 0), p, pre + ".1.conv")
        else:
            h = conv2d(h, p[pre + ".0.weight"], p[pre + ".0.bias"], 2, 1)
            h = double_conv(h, p, pre + ".1.conv")
        skips.append(h)
    x32, x16, x8, x4 = skips
    bottleneck = x4
    up = conv_transpose2d(x4, p["decoder.up1.up.weight"], p["decoder.up1.up.bias"])
    if k == 1:
        up = np.concatenate([x8, up], axis=1)
    d8 = double_conv(up, p, "decoder.up1.conv.conv")
    up = conv_transpose2d(d8, p["decoder.up2.up.weight"], p["decoder.up2.up.bias"])
    d16 = double_conv(np.concatenate([x16, up], axis=1), p, "decoder.up2.conv.conv")
    up = conv_transpose2d(d16, p["decoder.up3.up.weight"], p["decoder.up3.up.bias"])
    d32 = double_conv(np.concatenate([x32, up], axis=1), p, "decoder.up3.conv.conv")
    pred = conv2d(d32, p["decoder.outconv.conv.weight"], p["decoder.outconv.conv.bias"])
    feats = {"e32": x32, "e16": x16, "e8": x8, "bottleneck": bottleneck,
             "d8": d8, "d16": d16, "d32": d32}
    return pred, feats


# --------------------------------------------------------------- teacher

def basic_block(x, p, prefix, stride):
    out = relu(batchnorm(conv2d(x, p[prefix + ".conv1.weight"], None, stride, 1), p, prefix + ".bn1"))
    out = batchnorm(conv2d(out, p[prefix + ".conv2.weight"], None, 1, 1), p, prefix + ".bn2")
    return relu(out + shortcut(x, p, prefix, stride, out.shape[1]))


def bottleneck_block(x, p, prefix, stride, groups):
    out = relu(batchnorm(conv2d(x, p[prefix + ".conv1.weight"]), p, prefix + ".bn1"))
    out = relu(batchnorm(conv2d(out, p[prefix + ".conv2.weight"], None, stride, 1, groups), p, prefix + ".bn2"))
    out = batchnorm(conv2d(out, p[prefix + ".conv3.weight"]), p, prefix + ".bn3")
    return relu(out + shortcut(x, p, prefix, stride, out.shape[1]))


def shortcut(x, p, prefix, stride, out_channels):
    if stride != 1 or x.shape[1] != out_channels:
        ds = prefix + ".downsample"
        return batchnorm(conv2d(x, p[ds + ".0.weight"], None, stride, 0), p, ds + ".1")
    assert prefix + ".downsample.0.weight" not in p, prefix
    return x


def torchvision_forward(p, arch, x):
    """{"layer1": stem + maxpool + layer1, "layer2": layer2} of a 3x32x32 input."""
    kind, n1, n2, groups = ARCHS[arch]
    h = relu(batchnorm(conv2d(x, p["conv1.weight"], None, 2, 3), p, "bn1"))
    h = maxpool(h, 3, 2, 1)
    outs = {}
    for layer, (nblocks, stride) in ((1, (n1, 1)), (2, (n2, 2))):
        for i in range(nblocks):
            prefix = "layer%d.%d" % (layer, i)
            s = stride if i == 0 else 1
            if kind == "basic":
                h = basic_block(h, p, prefix, s)
            else:
                h = bottleneck_block(h, p, prefix, s, groups)
        outs["layer%d" % layer] = h
    return outs


def cifar_block(x, p, prefix, stride, planes):
    """akamaster's BasicBlock with option A: the shortcut takes every second
    row and column and zero-pads planes//4 channels on each side."""
    out = relu(batchnorm(conv2d(x, p[prefix + ".conv1.weight"], None, stride, 1), p, prefix + ".bn1"))
    out = batchnorm(conv2d(out, p[prefix + ".conv2.weight"], None, 1, 1), p, prefix + ".bn2")
    if stride != 1 or x.shape[1] != planes:
        pad = planes // 4
        short = np.pad(x[:, :, ::2, ::2], ((0, 0), (pad, pad), (0, 0), (0, 0)))
    else:
        short = x
    return relu(out + short)


def cifar_forward(p, arch, x):
    """{"layer1", "layer2", "layer3"} of a CIFAR ResNet on a 3x32x32 input."""
    h = relu(batchnorm(conv2d(x, p["conv1.weight"], None, 1, 1), p, "bn1"))
    outs = {}
    for layer, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2)), 1):
        for i in range(CIFAR_ARCHS[arch]):
            h = cifar_block(h, p, "layer%d.%d" % (layer, i), stride if i == 0 else 1, planes)
        outs["layer%d" % layer] = h
    return outs


def lite0_forward(p, x):
    """{"blocks.N": output of _blocks.N} of EfficientNet-Lite0: stem, then
    MBConv blocks without squeeze-excitation, ReLU6, BatchNorm eps 1e-3."""
    def bn(h, prefix):
        return batchnorm(h, p, prefix, LITE_BN_EPS)

    h = relu6(bn(conv2d(pad_same(x, 3, 2), p["_conv_stem.weight"], None, 2), "_bn0"))
    outs = {}
    index = 0
    for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES:
        for r in range(repeats):
            pre = "_blocks.%d." % index
            s = stride if r == 0 else 1
            block_in = h
            if expand != 1:
                h = relu6(bn(conv2d(h, p[pre + "_expand_conv.weight"]), pre + "_bn0"))
            h = relu6(bn(depthwise_conv2d(pad_same(h, kernel, s), p[pre + "_depthwise_conv.weight"], s),
                         pre + "_bn1"))
            h = bn(conv2d(h, p[pre + "_project_conv.weight"]), pre + "_bn2")
            if s == 1 and block_in.shape[1] == h.shape[1]:
                h = h + block_in
            outs["blocks.%d" % index] = h
            index += 1
    return outs


def teacher_forward(p, arch, x, blocks):
    """The outputs of the named teacher blocks, in the order given."""
    if arch in ARCHS:
        outs = torchvision_forward(p, arch, x)
    elif arch in CIFAR_ARCHS:
        outs = cifar_forward(p, arch, x)
    else:
        assert arch == "efficientnet_lite0", arch
        outs = lite0_forward(p, x)
    return [outs[b] for b in blocks]


# ----------------------------------------------------------------- scores

def frames_of(cubes, channels):
    """[N,5,C,32,32] float64 in [0,1] from either input layout."""
    cubes = np.asarray(cubes)
    if cubes.dtype == np.uint8:
        assert cubes.shape[1:] == (5, 32, 32, channels), cubes.shape
        return cubes.astype(np.float64).transpose(0, 1, 4, 2, 3) / 255.0
    assert cubes.shape[1:] == (5 * channels, 32, 32), cubes.shape
    return cubes.astype(np.float64).reshape(cubes.shape[0], 5, channels, 32, 32)


def teacher_input(model, target):
    """The teacher's 3-channel input from the target frame [N,C,32,32] in [0,1]."""
    meta = model.meta
    if model.channels == 1:
        x = np.repeat(target, 3, axis=1)
    elif meta["teacher"]["channel_order"] != meta["input"]["channel_order"]:
        x = target[:, ::-1]
    else:
        x = target
    mean = np.asarray(meta["teacher"]["mean"], dtype=np.float64)[None, :, None, None]
    std = np.asarray(meta["teacher"]["std"], dtype=np.float64)[None, :, None, None]
    return (x - mean) / std


def inconsistency_map(s, t):
    dot = np.sum(s * t, axis=1)
    ns = np.sqrt(np.sum(s * s, axis=1))
    nt = np.sqrt(np.sum(t * t, axis=1))
    return 1.0 - dot / (np.maximum(ns, COS_EPS) * np.maximum(nt, COS_EPS))


def reference_scores(model_path, cubes):
    model = model_path if isinstance(model_path, Model) else Model(model_path)
    frames = frames_of(cubes, model.channels)
    n = frames.shape[0]
    target = frames[:, 4]
    if model.task == "pred":
        x = frames[:, :4].reshape(n, 4 * model.channels, 32, 32)
    else:
        x = target
    pred, named = student_forward(model.s, model.k, x)
    sfeat = []
    for j, (student, _) in enumerate(model.pairs):
        f = named[student]
        proj = "projection.%d." % j
        if proj + "weight" in model.s:  # a 1x1 conv onto the teacher's channels
            f = conv2d(f, model.s[proj + "weight"], model.s[proj + "bias"])
        sfeat.append(f)
    tfeat = teacher_forward(model.t, model.arch, teacher_input(model, target),
                            [t for _, t in model.pairs])
    sq = (pred - target) ** 2
    error = sq.mean(axis=(1, 2, 3))
    maps = [inconsistency_map(s, t) for s, t in zip(sfeat, tfeat)]
    inconsistency = np.stack([m.mean(axis=(1, 2)) for m in maps], axis=1)
    comps = np.concatenate([error[:, None], inconsistency], axis=1)
    sc = model.meta["scoring"]
    w = np.asarray(sc["weights"], dtype=np.float64)
    mu = np.asarray(sc["mu"], dtype=np.float64)
    sigma = np.asarray(sc["sigma"], dtype=np.float64)
    combined = ((comps - mu) / sigma * w).sum(axis=1)
    return {
        "prediction": pred,
        "student_features": sfeat,
        "teacher_features": tfeat,
        "prediction_error": error,
        "inconsistency": inconsistency,
        "combined": combined,
        "error_map": sq.mean(axis=1),
        "inconsistency_maps": maps,
    }
