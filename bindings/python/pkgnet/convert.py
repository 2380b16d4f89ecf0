"""Convert a PKG-Net student and its torchvision teacher into a pkgnet model file.

    python -m pkgnet.convert --student student.pt --k 2 --task pred \\
        --teacher resnet50=resnet50.pth -o model.safetensors

The checkpoints are read without torch (``pkgnet.torch_checkpoint``); either
may also be a .safetensors file. The student's width and channel count are
read from its tensors; every expected tensor is checked by name and shape, and
the distilled student/teacher feature shapes must agree. The output follows
docs/model-format.md.
"""

import argparse
import json
import math
import os
import sys
from collections import OrderedDict

import numpy as np

from . import safetensors_io, torch_checkpoint
from .errors import Error, FileError, InvalidArgumentError, ModelMismatchError

__all__ = [
    "ARCHS",
    "FORMAT_VERSION",
    "student_shapes",
    "teacher_shapes",
    "distilled_shapes",
    "build_metadata",
    "build_model",
    "write_model",
    "load_tensors",
    "convert",
    "main",
]

FORMAT_VERSION = 1

# arch -> (block kind, blocks in layer1 and layer2, groups, width per group)
ARCHS = {
    "resnet18": ("basic", (2, 2), 1, 64),
    "resnet34": ("basic", (3, 4), 1, 64),
    "resnet50": ("bottleneck", (3, 4), 1, 64),
    "resnext50_32x4d": ("bottleneck", (3, 4), 32, 4),
    "wide_resnet50_2": ("bottleneck", (3, 4), 1, 128),
}

_DTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
_ORDERS = ("bgr", "rgb")
_TASKS = ("pred", "recon")
# Teacher parts past the distilled blocks, present in full torchvision checkpoints.
_TEACHER_TAIL = ("layer3.", "layer4.", "fc.")


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
    """Name -> shape of every teacher tensor kept (stem, layer1, layer2)."""
    if arch not in ARCHS:
        raise InvalidArgumentError("unknown teacher arch %r (one of %s)"
                                   % (arch, ", ".join(ARCHS)))
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


def _teacher_channels(arch):
    kind = ARCHS[arch][0]
    return (64, 128) if kind == "basic" else (256, 512)


def distilled_shapes(k, width, arch):
    """[(student shape, teacher shape, description)] per pair j = 1..K."""
    c1, c2 = _teacher_channels(arch)
    pairs = [((8 * width, 4, 4), (c2, 4, 4), "student bottleneck (8w@4x4) vs teacher layer2")]
    if k == 2:
        pairs.append(((4 * width, 8, 8), (c1, 8, 8),
                      "student up1 output (4w@8x8) vs teacher block1 (stem+layer1)"))
    return pairs


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


def _teacher_names(tensors):
    return {n for n in tensors
            if not n.endswith("num_batches_tracked") and not n.startswith(_TEACHER_TAIL)}


def _guess_arch(tensors):
    """The archs whose tensor table the teacher's tensors match exactly."""
    names = _teacher_names(tensors)
    found = []
    for arch in ARCHS:
        shapes = teacher_shapes(arch)
        if set(shapes) == names and all(
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


def build_metadata(k, width, task, channels, arch, weights=None, mean=None, std=None,
                   input_order="bgr", teacher_order="bgr", mu=None, sigma=None):
    """The ``pkgnet`` metadata document (a dict) of docs/model-format.md."""
    _check_student_settings(k, task, channels)
    if arch not in ARCHS:
        raise InvalidArgumentError("unknown teacher arch %r (one of %s)" % (arch, ", ".join(ARCHS)))
    for what, order in (("input order", input_order), ("teacher order", teacher_order)):
        if order not in _ORDERS:
            raise InvalidArgumentError("%s must be 'bgr' or 'rgb', not %r" % (what, order))
    n = 1 + k
    weights = _finite_list([1.0] * n if weights is None else weights, n,
                           "scoring weights [w_e, w_c1%s]" % (", w_c2" if k == 2 else ""))
    mu = _finite_list([0.0] * n if mu is None else mu, n, "scoring mu")
    sigma = _finite_list([1.0] * n if sigma is None else sigma, n, "scoring sigma")
    if not all(s > 0 for s in sigma):
        raise InvalidArgumentError("scoring sigma must be positive, got %s" % sigma)
    mean = _finite_list([0.0] * 3 if mean is None else mean, 3, "teacher mean")
    std = _finite_list([1.0] * 3 if std is None else std, 3, "teacher std")
    if not all(s > 0 for s in std):
        raise InvalidArgumentError("teacher std must be positive, got %s" % std)
    return {
        "format_version": FORMAT_VERSION,
        "student": {"k": int(k), "width": int(width), "task": task, "channels": int(channels)},
        "teacher": {"arch": arch, "channel_order": teacher_order, "mean": mean, "std": std},
        "input": {"channel_order": input_order},
        "scoring": {"weights": weights, "mu": mu, "sigma": sigma},
    }


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


def build_model(student, teacher, arch, k, task, channels=None, weights=None, mean=None,
                std=None, input_order="bgr", teacher_order="bgr", mu=None, sigma=None,
                student_source=None, teacher_source=None):
    """(tensors, metadata dict) of a model file from two state_dicts (name -> array).

    ``*_source``: the file each came from, named in error messages.
    """
    if k not in (1, 2):
        raise InvalidArgumentError("k must be 1 or 2, not %r" % (k,))
    if task not in _TASKS:
        raise InvalidArgumentError("task must be 'pred' or 'recon', not %r" % (task,))
    if arch not in ARCHS:
        raise InvalidArgumentError("unknown teacher arch %r (one of %s)" % (arch, ", ".join(ARCHS)))
    student = _strip_prefix(student, "student.")
    teacher = _strip_prefix(teacher, "teacher.")
    width, c = _infer_student(student, k, task, channels, student_source)
    s = _check(student, student_shapes(k, width, c, task), "student", student_source)
    expected = teacher_shapes(arch)
    hint = ""
    if _teacher_names(teacher) != set(expected):
        guess = _guess_arch(teacher)
        if guess:
            hint = " (the tensors look like a %s)" % " or ".join(guess)
    t = _check(teacher, expected, "teacher (%s)" % arch, teacher_source, ignore=_TEACHER_TAIL,
               hint=hint)
    for j, (ss, ts, what) in enumerate(distilled_shapes(k, width, arch), 1):
        if ss != ts:
            raise ModelMismatchError(
                "distilled pair %d (%s): student feature %s (width %d) does not match teacher %s "
                "feature %s" % (j, what, list(ss), width, arch, list(ts)))
    meta = build_metadata(k, width, task, c, arch, weights, mean, std, input_order, teacher_order,
                          mu, sigma)
    tensors = OrderedDict()
    for name, arr in s.items():
        tensors["student." + name] = arr
    for name, arr in t.items():
        tensors["teacher." + name] = arr
    return tensors, meta


def write_model(path, tensors, meta, dtype="f32"):
    """Writes a model file; ``dtype`` (f32, f16, bf16) is the storage type of every tensor."""
    if dtype not in _DTYPES:
        raise InvalidArgumentError("dtype must be one of f32, f16, bf16, not %r" % (dtype,))
    st = _DTYPES[dtype]
    if st == "F16":
        big = max((float(np.max(np.abs(a))) for a in tensors.values() if a.size), default=0.0)
        if big > 65504.0:
            raise InvalidArgumentError("a tensor holds %g, beyond float16's range: use f32 or bf16"
                                       % big)
    metadata = {"pkgnet": json.dumps(meta, sort_keys=False)}
    return safetensors_io.write(path, tensors, metadata, dtypes={n: st for n in tensors})


def _load_side(obj):
    if isinstance(obj, dict):
        return obj, None
    return load_tensors(obj), os.fspath(obj)


def convert(student, teacher, arch, k, task, output, channels=None, weights=None, mean=None,
            std=None, input_order="bgr", teacher_order="bgr", dtype="f32", mu=None, sigma=None):
    """Converts a student and teacher (paths or name -> array dicts) into ``output``.

    Returns the metadata document written.
    """
    s, s_src = _load_side(student)
    t, t_src = _load_side(teacher)
    tensors, meta = build_model(s, t, arch, k, task, channels, weights, mean, std, input_order,
                                teacher_order, mu, sigma, s_src, t_src)
    write_model(output, tensors, meta, dtype)
    return meta


# ------------------------------------------------------------------- CLI

def _parser():
    p = argparse.ArgumentParser(
        prog="python -m pkgnet.convert",
        description="Convert a PKG-Net student and its torchvision teacher into a pkgnet model "
                    "file (safetensors).")
    p.add_argument("--student", required=True, metavar="STUDENT.pt",
                   help="the student's state_dict (torch.save file or .safetensors)")
    p.add_argument("--k", required=True, type=int, choices=(1, 2),
                   help="student downsampling: 1 strided conv (1 distilled pair), "
                        "2 maxpool (2 pairs)")
    p.add_argument("--task", required=True, choices=_TASKS,
                   help="pred: 4 past frames in; recon: the current frame in")
    p.add_argument("--teacher", required=True, metavar="ARCH=TEACHER.pth",
                   help="teacher arch (%s) and its torchvision state_dict; layer3, layer4 and "
                        "fc are dropped" % ", ".join(ARCHS))
    p.add_argument("--weights", nargs="+", type=float, metavar="W",
                   help="score weights w_e w_c1 [w_c2] (default all 1)")
    p.add_argument("--mean", nargs=3, type=float, metavar="M",
                   help="teacher input mean per channel, teacher order (default 0 0 0)")
    p.add_argument("--std", nargs=3, type=float, metavar="S",
                   help="teacher input std per channel, teacher order (default 1 1 1)")
    p.add_argument("--channels", type=int, choices=(1, 3),
                   help="3 colour or 1 grey (default: read from the student)")
    p.add_argument("--input-order", choices=_ORDERS, default="bgr",
                   help="channel order of the cubes users pass (default bgr)")
    p.add_argument("--teacher-order", choices=_ORDERS, default="bgr",
                   help="channel order the teacher was trained on (default bgr: the published "
                        "code feeds frames as OpenCV reads them)")
    p.add_argument("--dtype", choices=tuple(_DTYPES), default="f32",
                   help="storage type of the tensors (default f32)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.safetensors")
    return p


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    arch, sep, teacher_path = args.teacher.partition("=")
    if not sep or not teacher_path:
        parser.error("--teacher takes ARCH=PATH, e.g. resnet50=resnet50.pth")
    if arch not in ARCHS:
        parser.error("unknown teacher arch '%s' (one of %s)" % (arch, ", ".join(ARCHS)))
    try:
        meta = convert(args.student, teacher_path, arch, args.k, args.task, args.output,
                       channels=args.channels, weights=args.weights, mean=args.mean,
                       std=args.std, input_order=args.input_order,
                       teacher_order=args.teacher_order, dtype=args.dtype)
    except Error as e:
        print("%s: error: %s" % (parser.prog, e), file=sys.stderr)
        return 1
    st = meta["student"]
    print("wrote %s: k=%d width=%d task=%s channels=%d teacher=%s dtype=%s (%d bytes)"
          % (args.output, st["k"], st["width"], st["task"], st["channels"], arch, args.dtype,
             os.path.getsize(args.output)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
