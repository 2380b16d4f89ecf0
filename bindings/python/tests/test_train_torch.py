"""One training step of pkgnet against the same step in PyTorch (float64).

The student below is written for this test in torch.nn with the published
code's module names, so its state_dict names are the model file's; the losses
follow the published code (the gradient loss as a [-1, 1] convolution over
the left/top zero-padded frame, summing the colour channels; the
distillation loss through F.cosine_similarity). Both sides start from the
initial student that write_model(calibrate=False) writes, take the same
batch (as many cubes as the batch size: one epoch is one step) and the same
teacher features (tests/reference.py's numpy teacher), and make one Adam step
with torch's semantics. Compared: the loss, every parameter's gradient (read
from the checkpoint's Adam moments), the updated parameters and, with batch
statistics, the BatchNorm running statistics.

float32 and float64 may put a ReLU input that is within rounding of 0 on
different sides, and one such input moves the gradients upstream of it by
far more than rounding. Either side is a right answer there, so the
reference takes the engine's: it computes what each such input adds to the
gradients and keeps the 0/1 choices that explain the engine's gradients
(the batch is small, so they are few); the comparison then stays at float32
rounding for every gradient.
"""

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the torch cross-check of training is skipped")
nn = torch.nn
F = torch.nn.functional

import pkgnet  # noqa: E402
from pkgnet import safetensors_io, synthetic  # noqa: E402
from pkgnet.convert import parse_pairs, student_feature_shape, teacher_blocks  # noqa: E402
from pkgnet.train import Trainer  # noqa: E402
from reference import Model, teacher_forward, teacher_input  # noqa: E402
from support import require_library

LEARNING_RATE = 1e-4
BETAS = (0.9, 0.999)
ADAM_EPS = 1e-7
BN_EPS = 1e-5


@pytest.fixture(scope="module", autouse=True)
def native_library():
    return require_library()


# ------------------------------------------------------------- the student

# Inputs of a ReLU closer to 0 than this may fall on either side of it in the
# engine's float32 forward pass (its pre-activations are within ~1e-6 of the
# float64 ones): their derivative, 0 or 1, is the engine's choice.
KINK = 1e-5


class Kinks:
    """The ReLU inputs within KINK of 0 in one forward pass, and the
    derivative each takes in the next backward pass (0 until set)."""

    def __init__(self):
        self.layers = []  # (ambiguous mask, derivative at the ambiguous elements)

    def elements(self):
        for ambiguous, derivative in self.layers:
            for index in ambiguous.nonzero():
                yield derivative, tuple(index.tolist())


class _ReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, ambiguous, derivative):
        ctx.save_for_backward(x, ambiguous)
        # Not saved for backward: it is set between backward passes, which
        # save_for_backward's version check would refuse.
        ctx.derivative = derivative
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        x, ambiguous = ctx.saved_tensors
        return grad * torch.where(ambiguous, ctx.derivative, (x > 0).to(grad.dtype)), None, None


class ReLU(nn.Module):
    """nn.ReLU that records its ambiguous inputs in ``kinks``."""

    def __init__(self, kinks):
        super().__init__()
        self.kinks = kinks

    def forward(self, x):
        ambiguous = x.detach().abs() < KINK
        derivative = torch.zeros_like(x)
        self.kinks.layers.append((ambiguous, derivative))
        return _ReLU.apply(x, ambiguous, derivative)


class DoubleConv(nn.Module):
    def __init__(self, cin, cout, kinks):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout, eps=BN_EPS), ReLU(kinks),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout, eps=BN_EPS), ReLU(kinks))

    def forward(self, x):
        return self.conv(x)


class InConv(nn.Module):
    def __init__(self, cin, cout, kinks):
        super().__init__()
        self.conv = DoubleConv(cin, cout, kinks)

    def forward(self, x):
        return self.conv(x)


class Down(nn.Module):
    """k=2: maxpool then double conv; k=1: a stride-2 conv then double conv."""

    def __init__(self, cin, cout, k, kinks):
        super().__init__()
        if k == 2:
            self.mpconv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(cin, cout, kinks))
        else:
            self.mpconv = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), DoubleConv(cout, cout, kinks))

    def forward(self, x):
        return self.mpconv(x)


class Up(nn.Module):
    def __init__(self, cin, cout, concatenated, kinks):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
        self.conv = DoubleConv(concatenated, cout, kinks)

    def forward(self, x, skip=None):
        x = self.up(x)
        if skip is not None:
            x = torch.cat([skip, x], dim=1)
        return self.conv(x)


class OutConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.conv(x)


class Encoder(nn.Module):
    def __init__(self, cin, w, k, kinks):
        super().__init__()
        self.in_conv = InConv(cin, w, kinks)
        self.down1 = Down(w, 2 * w, k, kinks)
        self.down2 = Down(2 * w, 4 * w, k, kinks)
        self.down3 = Down(4 * w, 8 * w, k, kinks)


class Decoder(nn.Module):
    def __init__(self, w, channels, k, kinks):
        super().__init__()
        self.up1 = Up(8 * w, 4 * w, 4 * w if k == 2 else 8 * w, kinks)  # k=2's up1 has no skip
        self.up2 = Up(4 * w, 2 * w, 4 * w, kinks)
        self.up3 = Up(2 * w, w, 2 * w, kinks)
        self.outconv = OutConv(w, channels)


class Student(nn.Module):
    """The PKG-Net student U-Net; ``projections`` {pair index: (student
    channels, teacher channels)} adds the pairs' 1x1 convs ``projection.j``.
    Its ReLUs record their ambiguous inputs in ``kinks``."""

    def __init__(self, k, w, channels, projections, kinks):
        super().__init__()
        self.k = k
        self.encoder = Encoder(4 * channels, w, k, kinks)
        self.decoder = Decoder(w, channels, k, kinks)
        self.projection = nn.ModuleDict({str(j): nn.Conv2d(sc, tc, 1) for j, (sc, tc) in projections.items()})

    def forward(self, x):
        e = self.encoder
        x32 = e.in_conv(x)
        x16 = e.down1(x32)
        x8 = e.down2(x16)
        x4 = e.down3(x8)
        d = self.decoder
        d8 = d.up1(x4, x8 if self.k == 1 else None)
        d16 = d.up2(d8, x16)
        d32 = d.up3(d16, x32)
        features = {"e32": x32, "e16": x16, "e8": x8, "bottleneck": x4, "d8": d8, "d16": d16, "d32": d32}
        return d.outconv(d32), features


# ------------------------------------------------------------- the losses

def gradient_loss(prediction, target, power, form):
    """The published code's gradient loss: a [-1, 1] filter over every colour
    channel (so the differences are summed over channels) of the frame padded
    with a zero column on the left (row on top)."""
    c = prediction.shape[1]
    taps = torch.tensor([[-1.0, 1.0]], dtype=prediction.dtype)
    fx = taps.view(1, 1, 1, 2).repeat(1, c, 1, 1)
    fy = taps.view(1, 1, 2, 1).repeat(1, c, 1, 1)

    def differences(x):
        return F.conv2d(F.pad(x, (1, 0, 0, 0)), fx), F.conv2d(F.pad(x, (0, 0, 1, 0)), fy)

    pdx, pdy = differences(prediction)
    tdx, tdy = differences(target)
    if form == "paper":
        ex, ey = tdx.abs() - pdx.abs(), tdy.abs() - pdy.abs()
    else:
        ex, ey = tdx - pdx, tdy - pdy
    return torch.mean(ex.abs() ** power + ey.abs() ** power)


def distillation_loss(student_features, teacher_features):
    return torch.stack([torch.mean(1 - F.cosine_similarity(s, t, dim=1, eps=1e-8))
                        for s, t in zip(student_features, teacher_features)]).mean()


# ------------------------------------------------------------------ runs

def torch_gradients(initial_path, cubes, k, width, pairs, batch_norm, form, power):
    """The model file's student and the forward and backward pass of one step
    on ``cubes``: (loss, the student, its gradients, their changes per
    ambiguous ReLU input).

    The gradients take derivative 0 at every ReLU input within KINK of 0; the
    i-th change is what taking derivative 1 at the i-th of them alone adds."""
    model = Model(initial_path)
    state = {n: torch.from_numpy(v.copy()) for n, v in model.s.items()}
    projections = {int(n.split(".")[1]): tuple(v.shape[1::-1]) for n, v in model.s.items()
                   if n.startswith("projection.") and n.endswith(".weight")}
    kinks = Kinks()
    student = Student(k, width, cubes.shape[4], projections, kinks).double()
    missing, unexpected = student.load_state_dict(state, strict=False)
    assert not unexpected and all(n.endswith("num_batches_tracked") for n in missing), (missing, unexpected)
    student.train(batch_norm == "batch")

    frames = cubes.astype(np.float64).transpose(0, 1, 4, 2, 3) / 255.0
    n = len(cubes)
    target_np = frames[:, 4]
    teacher = [torch.from_numpy(t) for t in
               teacher_forward(model.t, model.arch, teacher_input(model, target_np), [t for _, t in pairs])]
    x = torch.from_numpy(frames[:, :4].reshape(n, -1, 32, 32).copy())
    target = torch.from_numpy(target_np.copy())

    prediction, features = student(x)
    distilled = []
    for j, (name, _) in enumerate(pairs):
        f = features[name]
        distilled.append(student.projection[str(j)](f) if str(j) in student.projection else f)
    loss = (0.8 * F.mse_loss(prediction, target) + 0.1 * gradient_loss(prediction, target, power, form)
            + 0.2 * distillation_loss(distilled, teacher))

    parameters = dict(student.named_parameters())

    def backward():
        for p in parameters.values():
            p.grad = None
        loss.backward(retain_graph=True)
        return {name: p.grad.detach().numpy().copy() for name, p in parameters.items()}

    gradients = backward()
    ambiguous = list(kinks.elements())
    assert len(ambiguous) <= 40, f"{len(ambiguous)} ReLU inputs within {KINK} of 0: use a smaller batch"
    changes = []
    for derivative, index in ambiguous:
        derivative[index] = 1
        changes.append({name: g - gradients[name] for name, g in backward().items()})
        derivative[index] = 0
    return loss.item(), student, gradients, changes


def engine_choices(engine, gradients, changes):
    """The derivatives (0 or 1) at the ambiguous ReLU inputs whose changes
    best explain the engine's gradients (least squares over all gradients,
    each tensor scaled by its largest, rounded, then single flips while they
    help). Either derivative is right there: this picks the engine's."""
    scale = {name: max(np.abs(g).max(), 1e-30) for name, g in gradients.items()}

    def flat(tensors):
        return np.concatenate([(tensors[name] / scale[name]).ravel() for name in gradients])

    residual = flat(engine) - flat(gradients)
    if not changes:
        return np.zeros(0)
    basis = np.stack([flat(c) for c in changes], axis=1)
    choice = np.clip(np.round(np.linalg.lstsq(basis, residual, rcond=None)[0]), 0, 1)
    best = np.linalg.norm(residual - basis @ choice)
    improved = True
    while improved:
        improved = False
        for i in range(len(choice)):
            choice[i] = 1 - choice[i]
            trial = np.linalg.norm(residual - basis @ choice)
            if trial < best:
                best, improved = trial, True
            else:
                choice[i] = 1 - choice[i]
    return choice


CASES = [
    # arch, k, width, channels, pairs, batch_norm, gradient loss, power
    ("resnet20", 2, 16, 3, "d8:layer3,d16:layer2", "fixed", "published", 3.0),
    ("resnet20", 1, 8, 3, "d8:layer3,e32:layer1", "fixed", "paper", 3.0),
    ("resnet20", 2, 8, 3, "d16:layer2", "batch", "paper", 3.0),
    ("resnet20", 1, 16, 3, "d8:layer3,d16:layer2", "batch", "published", 2.0),
    ("resnet18", 2, 16, 1, None, "fixed", "published", 3.0),
]
IDS = ["k2-fixed-published", "k1-fixed-paper-projections", "k2-batch-paper-projection",
       "k1-batch-published-power2", "k2-grey-resnet18-default-pairs"]

# Convs followed by a BatchNorm (of a DoubleConv).
BIAS_BEFORE_BATCH_NORM = re.compile(r"\.conv\.[03]\.bias$")


@pytest.mark.parametrize("arch,k,width,channels,pairs,batch_norm,form,power", CASES, ids=IDS)
def test_one_adam_step_matches_torch(tmp_path, arch, k, width, channels, pairs, batch_norm, form, power):
    teacher = tmp_path / "teacher.safetensors"
    synthetic.random_teacher(teacher, arch=arch, seed=41)
    n = 6
    cubes = synthetic.random_cubes(n, channels=channels, seed=42)
    initial, checkpoint = tmp_path / "initial.safetensors", tmp_path / "step.ckpt"
    with Trainer(teacher, cubes, k=k, width=width, pairs=pairs, batch_size=n, epochs=1, batch_norm=batch_norm,
                 gradient_loss=form, gradient_power=power, learning_rate=LEARNING_RATE, seed=43,
                 threads=2) as trainer:
        trainer.write_model(initial, calibrate=False)
        report = trainer.run_epoch()
        trainer.save_checkpoint(checkpoint)
    resolved = parse_pairs(pairs) if pairs else [("bottleneck", "layer2"), ("d8", "layer1")]
    projected = [j for j, (s, t) in enumerate(resolved)
                 if student_feature_shape(s, width)[0] != teacher_blocks(arch)[t][0]]
    loss, student, gradients, changes = torch_gradients(initial, cubes, k, width, resolved, batch_norm, form,
                                                        power)
    assert sorted(student.projection) == [str(j) for j in projected]
    assert report.loss == pytest.approx(loss, rel=2e-6)

    after, _ = safetensors_io.read(checkpoint)
    before = {n[len("student."):]: v for n, v in safetensors_io.read(initial)[0].items() if n.startswith("student.")}
    # After one step Adam's first moment is (1 - beta1) g: the engine's gradient.
    engine = {name: after["adam.m." + name].astype(np.float64) / (1 - BETAS[0]) for name in gradients}
    # A conv followed by a BatchNorm with batch statistics: the normalisation
    # removes any constant, so the conv's bias has gradient 0 (up to rounding).
    zero = {name for name in gradients if batch_norm == "batch" and BIAS_BEFORE_BATCH_NORM.search(name)}
    fitted = [name for name in gradients if name not in zero]
    choices = engine_choices({n: engine[n] for n in fitted}, {n: gradients[n] for n in fitted},
                             [{n: c[n] for n in fitted} for c in changes])
    for choice, change in zip(choices, changes):
        for name in gradients:
            gradients[name] = gradients[name] + choice * change[name]

    optimizer = torch.optim.Adam(student.parameters(), lr=LEARNING_RATE, betas=BETAS, eps=ADAM_EPS)
    for name, parameter in student.named_parameters():
        parameter.grad = torch.from_numpy(gradients[name])
    optimizer.step()

    determined_count = total = 0
    for name, parameter in student.named_parameters():
        g, mine = gradients[name], engine[name]
        # Adam's second moment after one step is (1 - beta2) g^2 of the same gradient.
        np.testing.assert_allclose(after["adam.v." + name], (1 - BETAS[1]) * mine ** 2, rtol=1e-5, atol=1e-30,
                                   err_msg=f"Adam v of {name}")
        step = after["student." + name].astype(np.float64) - before[name]
        expected = parameter.detach().numpy() - before[name]
        # Adam's first step moves every element by lr * g / (|g| + eps): about
        # lr against the sign of g, whatever g's size.
        assert np.all(np.abs(step) <= LEARNING_RATE * (1 + 1e-3) + 1e-6), name
        if name in zero:
            # So its step is any size up to lr.
            weight = np.abs(gradients[name[:-len("bias")] + "weight"]).max()
            assert np.abs(mine).max() <= 1e-5 * weight, name
            continue
        # The engine runs in float32: each gradient element is a sum over the
        # batch and positions whose rounding is relative to the tensor's
        # largest gradients, not to the element (which may be near 0).
        # With batch statistics the BatchNorm backward subtracts the channel
        # means of dy and dy * x_hat, which cancel most of it: larger rounding.
        size = np.abs(g)
        band = 1e-5 * size + (6e-5 if batch_norm == "batch" else 2e-5) * size.max()
        np.testing.assert_array_less(np.abs(mine - g), band + 1e-30, err_msg=f"gradient of {name}")
        # A parameter's value says little (an rtol would hide the step), so the
        # step is compared. With g's sign settled (|g| > 2 band), gradients
        # g1, g2 within the band give steps differing by lr * eps * |g1 - g2|
        # / ((|g1| + eps)(|g2| + eps)); where that is below lr / 200 the steps
        # must agree to lr / 100 (rounding p + step to float32 adds at most an
        # ulp of |p| < 8, 5e-7). Elsewhere (g's sign, or its size next to eps,
        # open) the step is only bounded, above. That includes gradients that
        # are exactly 0 in torch: the engine's Winograd weight gradient sums
        # in the transformed domain, where a sum that is 0 in exact
        # arithmetic leaves a rounding residue within the band, and Adam's
        # first step makes any nonzero g a step of lr |g| / (|g| + eps). Those
        # (many: channels whose ReLU is off for the whole batch)
        # count as compared through the band.
        determined = (size > 2 * band) & (ADAM_EPS * band < 0.005 * (size - band + ADAM_EPS) * (size + ADAM_EPS))
        np.testing.assert_allclose(step[determined], expected[determined], rtol=0, atol=1e-6,
                                   err_msg=f"Adam step of {name}")
        determined_count += int(determined.sum()) + int((g == 0).sum())
        total += g.size
    assert determined_count > 0.95 * total, f"only {determined_count} of {total} steps compared"

    for name, buffer in student.named_buffers():
        if name.endswith("num_batches_tracked"):
            continue
        # Fixed statistics stay (0, 1); batch statistics move with momentum
        # 0.1 towards the batch's mean and unbiased variance.
        np.testing.assert_allclose(after["student." + name], buffer.numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=name)
        if batch_norm == "fixed":
            assert np.array_equal(after["student." + name], before[name]), name
