"""Random models and cubes for tests, benchmarks and the demo.

The weights are random but shaped like trained ones where it matters for
testing: He-scaled convolutions keep activations O(1) through the whole
network, and BatchNorm statistics are far from the identity so that an engine
that folds them wrongly cannot pass.
"""

import math
from collections import OrderedDict

import numpy as np

from .convert import (ARCHS, CIFAR_ARCHS, TEACHER_ARCHS, build_metadata, projection_shapes,
                      student_shapes, teacher_shapes, write_model, write_teacher)
from .errors import InvalidArgumentError

__all__ = ["random_state_dicts", "random_model", "random_teacher", "random_cubes"]


def _fill(shapes, rng, transposed=()):
    out = OrderedDict()
    for name, shape in shapes.items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "weight" and len(shape) == 4:
            if name in transposed:
                # A stride-2 transposed 3x3 conv sums about in*9/4 terms per output.
                fan_in = shape[0] * shape[2] * shape[3] / 4.0
            else:
                fan_in = shape[1] * shape[2] * shape[3]
            arr = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
        elif leaf == "weight":  # BatchNorm scale
            arr = rng.uniform(0.5, 1.5, shape)
        elif leaf == "running_mean":
            arr = rng.normal(0.0, 0.1, shape)
        elif leaf == "running_var":
            arr = rng.uniform(0.5, 2.0, shape)
        elif leaf == "bias":
            arr = rng.normal(0.0, 0.1, shape)
        else:
            raise AssertionError(name)
        out[name] = arr.astype(np.float32)
    return out


def _random_teacher(arch, rng):
    teacher = _fill(teacher_shapes(arch), rng)
    # Each residual block adds its branch to the identity; damping the
    # branch's last conv keeps the deeper teachers' outputs O(1) too.
    if arch in ARCHS:
        last = ".conv2.weight" if ARCHS[arch][0] == "basic" else ".conv3.weight"
    elif arch in CIFAR_ARCHS:
        last = ".conv2.weight"
    else:
        last = "._project_conv.weight"
    for name in teacher:
        if name.startswith(("layer", "_blocks.")) and name.endswith(last):
            teacher[name] *= np.float32(0.5)
    return teacher


def random_state_dicts(k=2, width=16, arch="resnet18", task="pred", channels=3, seed=0,
                       pairs=None):
    """(student, teacher) state_dicts (name -> float32 array) with random weights.

    The student holds the 1x1 projections (``projection.J.*``) of the pairs
    whose channels differ: ``pairs`` [(student feature, teacher block)], None
    for the published code's (torchvision teachers; other teachers then get
    no projections).
    """
    if arch not in TEACHER_ARCHS:
        raise InvalidArgumentError("unknown teacher arch %r (one of %s)"
                                   % (arch, ", ".join(TEACHER_ARCHS)))
    rng = np.random.default_rng(seed)
    sshapes = student_shapes(k, width, channels, task)
    transposed = {n for n in sshapes if n.endswith(".up.weight")}
    student = _fill(sshapes, rng, transposed)
    teacher = _random_teacher(arch, rng)
    if pairs is not None or arch in ARCHS:
        student.update(_fill(projection_shapes(k, width, arch, pairs), rng))
    return student, teacher


def random_model(path, k=2, width=16, arch="resnet18", task="pred", channels=3, seed=0,
                 dtype="f32", weights=None, mu=None, sigma=None, pairs=None):
    """Writes a model file with random weights; returns its metadata document.

    ``pairs``: [(student feature, teacher block)], None for the published
    code's (torchvision teachers only). Pairs whose channels differ get a
    random projection; the torchvision default pairs need none at width 16
    (resnet18/34) or 64 (the resnet50 family).
    """
    student, teacher = random_state_dicts(k, width, arch, task, channels, seed, pairs)
    meta = build_metadata(k, width, task, channels, arch, weights=weights, mu=mu, sigma=sigma,
                          pairs=pairs)
    tensors = OrderedDict()
    for name, arr in student.items():
        tensors["student." + name] = arr
    for name, arr in teacher.items():
        tensors["teacher." + name] = arr
    write_model(path, tensors, meta, dtype)
    return meta


def random_teacher(path, arch="resnet20", seed=0, dtype="f32", mean=None, std=None,
                   channel_order=None):
    """Writes a teacher file with random weights; returns its settings."""
    if arch not in TEACHER_ARCHS:
        raise InvalidArgumentError("unknown teacher arch %r (one of %s)"
                                   % (arch, ", ".join(TEACHER_ARCHS)))
    teacher = _random_teacher(arch, np.random.default_rng(seed))
    return write_teacher(path, teacher, arch, mean, std, channel_order, dtype)


def _smooth_texture(rng, size, channels, octaves=3):
    """Low-pass noise in [0,1]: bilinear upsampling of coarse random grids."""
    tex = np.zeros((size, size, channels))
    for o in range(octaves):
        cells = 2 ** (o + 2)
        grid = rng.uniform(0, 1, (cells + 1, cells + 1, channels))
        u = np.linspace(0, cells, size, endpoint=False)
        i = u.astype(int)
        f = (u - i)[:, None]
        rows = grid[i] * (1 - f[..., None]) + grid[i + 1] * f[..., None]
        cols = rows[:, i] * (1 - f.T[..., None]) + rows[:, i + 1] * f.T[..., None]
        tex += cols / 2 ** o
    tex -= tex.min()
    return tex / max(tex.max(), 1e-9)


def random_cubes(n, channels=3, seed=0):
    """uint8 [n,5,32,32,C] cubes: a blob moving over a drifting texture.

    Consecutive frames are related (the background drifts by whole pixels,
    the blob moves along a line), so a predicting student has something to
    predict, unlike pure noise.
    """
    if channels not in (1, 3):
        raise InvalidArgumentError("channels must be 1 or 3, not %r" % (channels,))
    n = int(n)
    if n < 0:
        raise InvalidArgumentError("n must be non-negative, not %r" % (n,))
    rng = np.random.default_rng(seed)
    out = np.empty((n, 5, 32, 32, channels), dtype=np.uint8)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float64)
    for c in range(n):
        tex = _smooth_texture(rng, 48, channels)
        drift = rng.integers(-2, 3, size=2)
        start = rng.uniform(8, 24, size=2)
        velocity = rng.uniform(-3, 3, size=2)
        radius = rng.uniform(3, 7)
        colour = rng.uniform(0, 1, size=channels)
        contrast = rng.uniform(0.3, 0.8)
        for t in range(5):
            oy = 8 + drift[0] * t // 2
            ox = 8 + drift[1] * t // 2
            frame = tex[oy:oy + 32, ox:ox + 32] * contrast + (1 - contrast) * 0.5
            cy, cx = start + velocity * t
            mask = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius ** 2))[..., None]
            frame = frame * (1 - mask) + colour * mask
            frame = frame + rng.normal(0, 0.01, frame.shape)
            out[c, t] = np.clip(np.rint(frame * 255), 0, 255).astype(np.uint8)
    return out
