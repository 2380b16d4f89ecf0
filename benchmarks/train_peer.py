"""Training throughput: pkgnet against PyTorch eager on the same network and cubes.

    python3 benchmarks/train_peer.py [--configs a b] [--steps 20] [--rounds 3]
                                     [--threads 2] [--batch 128] [--data ../shared/data/ped2]

Configurations (student k=2, the published loss and Adam settings):
  a  w=16, the CIFAR ResNet20 teacher (../shared/weights/cifar-resnet, random
     weights where absent), pairs d8:layer3,d16:layer2
  b  w=64, a resnet50 teacher with random weights (speed does not depend on
     them), the published pairs bottleneck:layer2,d8:layer1

Cubes: --steps x --batch training cubes of UCSD Ped2 (--data; frames decoded
with OpenCV, every box of every frame with 4 frames before it, as `pkgnet
train` takes them), or random cubes where the data or cv2 is missing.

Engines, each in its own process with --threads threads (so no OpenMP
runtime or thread pool is shared):
  pkgnet          pkgnet.train.Trainer, teacher features of all cubes computed
                  once (its default; the teacher is frozen)
  pkgnet-nocache  the same with teacher_cache_bytes=0: the teacher runs at
                  every step, as in the PyTorch loop
  torch           the published training loop in eager mode: the student in
                  eval mode (fixed BatchNorm statistics), the teacher under
                  no_grad at every step, Adam(lr 1e-4, eps 1e-7); uint8 to
                  float conversion per batch (pkgnet converts too)
Both start from the same initial student (pkgnet's, written before training).
bindings/python/tests/test_train_torch.py checks that the two compute the
same step. A round is one epoch (--steps Adam steps) per engine, engines in
rotated order with a pause between them (one engine's spinning OpenMP
threads must not eat the next one's time), after one warm-up epoch each
(which also fills pkgnet's teacher cache). Figures are medians over rounds;
the ratio is the median of the per-round pkgnet/torch ratios (paired, so
slow phases of a busy machine cancel).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "bindings" / "python"))

from pkgnet import convert, synthetic  # noqa: E402  (neither loads libpkgnet)

CIFAR_CHECKPOINT = ROOT.parent / "shared" / "weights" / "cifar-resnet" / "resnet20-12fca82f.th"
CONFIGS = {
    "a": {"width": 16, "arch": "resnet20", "pairs": [["d8", "layer3"], ["d16", "layer2"]]},
    "b": {"width": 64, "arch": "resnet50", "pairs": [["bottleneck", "layer2"], ["d8", "layer1"]]},
}
ENGINES = ("pkgnet", "pkgnet-nocache", "torch")
LOSS_WEIGHTS = (0.8, 0.1, 0.2)
GRADIENT_POWER = 3.0


# ------------------------------------------------------------------ cubes

def ped2_cubes(folder, count):
    """Up to ``count`` training cubes of the data set in ``folder`` (None if
    it or cv2 is missing)."""
    try:
        import cv2
    except ImportError:
        return None
    training = Path(folder) / "training"
    if not (training / "boxes").is_dir():
        return None
    import pkgnet

    out = []
    total = 0
    for csv in sorted((training / "boxes").glob("*.csv")):
        rows = np.loadtxt(csv, delimiter=",", skiprows=1, ndmin=2)
        frames = sorted((training / "frames" / csv.stem).glob("*.jpg"))
        recent = []
        for t, path in enumerate(frames):
            recent = (recent + [cv2.imread(str(path), cv2.IMREAD_COLOR)])[-5:]
            boxes = rows[rows[:, 0] == t, 1:5] if len(rows) else np.zeros((0, 4))
            if len(recent) < 5 or not len(boxes):
                continue
            cubes, problems = pkgnet.cubes(recent, boxes, return_problems=True)
            out.append(cubes[problems == 0])
            total += int((problems == 0).sum())
            if total >= count:
                return np.concatenate(out)[:count]
    return np.concatenate(out) if out else None


# ------------------------------------------------------------- the engines

class PkgnetEngine:
    def __init__(self, spec, cache):
        from pkgnet.train import Trainer

        cubes = np.load(spec["cubes"])
        options = {} if cache else {"teacher_cache_bytes": 0}
        self.trainer = Trainer(spec["teacher"], cubes, k=2, width=spec["width"],
                               pairs=[tuple(p) for p in spec["pairs"]], batch_size=spec["batch"],
                               epochs=100000, threads=spec["threads"], **options)
        if cache:
            # The torch engine starts from this student too.
            self.trainer.write_model(spec["initial"], calibrate=False)

    def epoch(self):
        return self.trainer.run_epoch().loss


class TorchEngine:
    def __init__(self, spec):
        import torch

        torch.set_num_threads(spec["threads"])
        self.torch = torch
        self.net = _torch_network(spec)
        self.batch = spec["batch"]
        self.cubes = torch.from_numpy(np.load(spec["cubes"]))
        self.rng = np.random.default_rng(spec.get("seed", 0))

    def epoch(self):
        torch = self.torch
        net = self.net
        order = torch.from_numpy(self.rng.permutation(len(self.cubes)))
        losses = []
        for start in range(0, len(order), self.batch):
            cubes = self.cubes[order[start:start + self.batch]]
            n = len(cubes)
            frames = cubes.permute(0, 1, 4, 2, 3).float().div_(255.0)  # [n, 5, C, 32, 32]
            x = frames[:, :4].reshape(n, -1, 32, 32)
            target = frames[:, 4]
            with torch.no_grad():
                teacher = net.teacher(target)
            prediction, features = net.student(x)
            loss = net.loss(prediction, target, [features[s] for s, _ in net.pairs], teacher)
            net.optimizer.zero_grad()
            loss.backward()
            net.optimizer.step()
            losses.append(loss.item())
        return float(np.mean(losses))


def _torch_network(spec):
    """The student (from pkgnet's initial model file), the teacher (from the
    teacher file), the loss and Adam, in plain PyTorch."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from pkgnet import safetensors_io

    class DoubleConv(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                      nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        def forward(self, x):
            return self.conv(x)

    class InConv(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = DoubleConv(cin, cout)

        def forward(self, x):
            return self.conv(x)

    class Down(nn.Module):  # k = 2: maxpool, then a double conv
        def __init__(self, cin, cout):
            super().__init__()
            self.mpconv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(cin, cout))

        def forward(self, x):
            return self.mpconv(x)

    class Up(nn.Module):
        def __init__(self, cin, cout, concatenated):
            super().__init__()
            self.up = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
            self.conv = DoubleConv(concatenated, cout)

        def forward(self, x, skip=None):
            x = self.up(x)
            return self.conv(x if skip is None else torch.cat([skip, x], 1))

    class OutConv(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 1)

        def forward(self, x):
            return self.conv(x)

    class Student(nn.Module):
        def __init__(self, w, channels):
            super().__init__()
            self.encoder = nn.Module()
            self.encoder.in_conv = InConv(4 * channels, w)
            self.encoder.down1, self.encoder.down2, self.encoder.down3 = Down(w, 2 * w), Down(2 * w, 4 * w), \
                Down(4 * w, 8 * w)
            self.decoder = nn.Module()
            self.decoder.up1, self.decoder.up2, self.decoder.up3 = Up(8 * w, 4 * w, 4 * w), Up(4 * w, 2 * w, 4 * w), \
                Up(2 * w, w, 2 * w)
            self.decoder.outconv = OutConv(w, channels)

        def forward(self, x):
            e, d = self.encoder, self.decoder
            x32 = e.in_conv(x)
            x16 = e.down1(x32)
            x8 = e.down2(x16)
            x4 = e.down3(x8)
            d8 = d.up1(x4)
            d16 = d.up2(d8, x16)
            d32 = d.up3(d16, x32)
            features = {"e32": x32, "e16": x16, "e8": x8, "bottleneck": x4, "d8": d8, "d16": d16, "d32": d32}
            return d.outconv(d32), features

    tensors, _ = safetensors_io.read(spec["initial"])
    student = Student(spec["width"], 3)
    state = {n[len("student."):]: torch.from_numpy(np.asarray(v, np.float32)) for n, v in tensors.items()
             if n.startswith("student.")}
    missing, unexpected = student.load_state_dict(state, strict=False)
    assert not unexpected and all(n.endswith("num_batches_tracked") for n in missing), (missing, unexpected)
    student.eval()  # the published training: fixed BatchNorm statistics

    teacher_tensors, settings = convert.read_teacher(spec["teacher"])
    p = {n: torch.from_numpy(np.asarray(v, np.float32)) for n, v in teacher_tensors.items()}
    arch = settings["arch"]
    swap = settings["channel_order"] != "bgr"  # the cubes are BGR
    mean = torch.tensor(settings["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(settings["std"]).view(1, 3, 1, 1)

    def bn(x, name):
        return F.batch_norm(x, p[name + ".running_mean"], p[name + ".running_var"], p[name + ".weight"],
                            p[name + ".bias"], False, 0.0, 1e-5)

    def conv(x, name, stride=1, pad=0, groups=1):
        return F.conv2d(x, p[name + ".weight"], None, stride, pad, 1, groups)

    def teacher(target):
        x = ((target.flip(1) if swap else target) - mean) / std
        outs = {}
        if arch in convert.CIFAR_ARCHS:
            h = F.relu(bn(conv(x, "conv1", 1, 1), "bn1"))
            for layer, planes in enumerate((16, 32, 64), 1):
                for i in range(convert.CIFAR_ARCHS[arch]):
                    name = "layer%d.%d" % (layer, i)
                    s = 2 if i == 0 and layer > 1 else 1
                    out = F.relu(bn(conv(h, name + ".conv1", s, 1), name + ".bn1"))
                    out = bn(conv(out, name + ".conv2", 1, 1), name + ".bn2")
                    if s != 1:  # option A: subsample, zero-pad the new channels
                        h = F.pad(h[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))
                    h = F.relu(out + h)
                outs["layer%d" % layer] = h
        else:
            kind, blocks, groups, _ = convert.ARCHS[arch]
            h = F.max_pool2d(F.relu(bn(conv(x, "conv1", 2, 3), "bn1")), 3, 2, 1)
            for layer, nblocks in enumerate(blocks, 1):
                for i in range(nblocks):
                    name = "layer%d.%d" % (layer, i)
                    s = 2 if i == 0 and layer == 2 else 1
                    if kind == "basic":
                        out = F.relu(bn(conv(h, name + ".conv1", s, 1), name + ".bn1"))
                        out = bn(conv(out, name + ".conv2", 1, 1), name + ".bn2")
                    else:
                        out = F.relu(bn(conv(h, name + ".conv1"), name + ".bn1"))
                        out = F.relu(bn(conv(out, name + ".conv2", s, 1, groups), name + ".bn2"))
                        out = bn(conv(out, name + ".conv3"), name + ".bn3")
                    if name + ".downsample.0.weight" in p:
                        h = bn(conv(h, name + ".downsample.0", s), name + ".downsample.1")
                    h = F.relu(out + h)
                outs["layer%d" % layer] = h
        return [outs[t] for _, t in spec["pairs"]]

    taps = torch.tensor([[-1.0, 1.0]])
    filter_x = taps.view(1, 1, 1, 2).repeat(1, 3, 1, 1)
    filter_y = taps.view(1, 1, 2, 1).repeat(1, 3, 1, 1)

    def loss(prediction, target, student_features, teacher_features):
        def differences(x):
            return F.conv2d(F.pad(x, (1, 0, 0, 0)), filter_x), F.conv2d(F.pad(x, (0, 0, 1, 0)), filter_y)

        (pdx, pdy), (tdx, tdy) = differences(prediction), differences(target)
        gradient = torch.mean((tdx - pdx).abs() ** GRADIENT_POWER + (tdy - pdy).abs() ** GRADIENT_POWER)
        distillation = torch.stack([torch.mean(1 - F.cosine_similarity(s, t, dim=1, eps=1e-8))
                                    for s, t in zip(student_features, teacher_features)]).mean()
        le, lg, lc = LOSS_WEIGHTS
        return le * F.mse_loss(prediction, target) + lg * gradient + lc * distillation

    net = types.SimpleNamespace(student=student, teacher=teacher, loss=loss, pairs=spec["pairs"])
    net.optimizer = torch.optim.Adam(student.parameters(), lr=spec.get("lr", 1e-4), betas=(0.9, 0.999), eps=1e-7)
    return net


def worker(engine, spec_path):
    """One engine in its own process, driven by lines on stdin: each runs an
    epoch and answers its seconds and mean loss."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # native libraries' chatter goes to stderr, not into the protocol
    with open(spec_path) as f:
        spec = json.load(f)
    trainer = TorchEngine(spec) if engine == "torch" else PkgnetEngine(spec, cache=engine == "pkgnet")
    proto.write(json.dumps({"ready": True}) + "\n")
    for _ in sys.stdin:
        t0 = time.perf_counter()
        loss = trainer.epoch()
        proto.write(json.dumps({"seconds": time.perf_counter() - t0, "loss": loss}) + "\n")


class Worker:
    def __init__(self, engine, spec_path):
        self.engine = engine
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", engine,
                                      "--spec", spec_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the %s worker died (see its messages above)" % self.engine)
        return json.loads(line)

    def epoch(self):
        self.proc.stdin.write("epoch\n")
        return self._read()

    def close(self):
        try:
            if self.proc.poll() is None:
                self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):  # a worker that died or hangs: ours, end it
            self.proc.kill()
            self.proc.wait()


# -------------------------------------------------------------------- main

def teacher_file(arch, folder):
    path = Path(folder) / (arch + ".teacher.safetensors")
    if arch == "resnet20" and CIFAR_CHECKPOINT.exists():
        convert.convert_teacher(str(CIFAR_CHECKPOINT), arch, str(path))
        return path, "trained (%s)" % CIFAR_CHECKPOINT.name
    synthetic.random_teacher(path, arch=arch, seed=1)
    return path, "random weights"


def run_config(name, args, cubes_path, folder):
    config = CONFIGS[name]
    teacher, origin = teacher_file(config["arch"], folder)
    spec = dict(config, teacher=str(teacher), cubes=cubes_path, batch=args.batch, threads=args.threads,
                initial=str(Path(folder) / ("initial-%s.safetensors" % name)))
    spec_path = str(Path(folder) / ("spec-%s.json" % name))
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    pairs = ",".join("%s:%s" % tuple(p) for p in config["pairs"])
    print("\nconfig %s: k=2 w=%d, teacher %s (%s), pairs %s" % (name, config["width"], config["arch"], origin, pairs))
    workers = {}
    try:
        for engine in ENGINES:  # pkgnet first: it writes the initial student the others load
            workers[engine] = Worker(engine, spec_path)
        warm = {engine: w.epoch() for engine, w in workers.items()}
        print("  warm-up epoch: " + ", ".join("%s %.1f s (loss %.4f)" % (e, r["seconds"], r["loss"])
                                              for e, r in warm.items()))
        rates = {engine: [] for engine in ENGINES}
        cubes = args.steps * args.batch
        for r in range(args.rounds):
            order = ENGINES[r % len(ENGINES):] + ENGINES[:r % len(ENGINES)]
            for engine in order:
                time.sleep(args.gap)
                rates[engine].append(cubes / workers[engine].epoch()["seconds"])
            print("  round %d: " % (r + 1) + ", ".join("%s %.0f" % (e, rates[e][-1]) for e in ENGINES) + " cubes/s")
    finally:
        for w in workers.values():
            w.close()
    print("  median cubes/s over %d rounds of %d steps x %d cubes:" % (args.rounds, args.steps, args.batch))
    for engine in ENGINES:
        print("    %-15s %8.1f" % (engine, statistics.median(rates[engine])))
    for engine in ("pkgnet", "pkgnet-nocache"):
        ratio = statistics.median(p / t for p, t in zip(rates[engine], rates["torch"]))
        print("    %s / torch: %.2f" % (engine, ratio))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=20, help="Adam steps per epoch (one round)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--gap", type=float, default=1.0, help="seconds of pause between engines")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ped2"))
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.spec)
        return
    try:
        import torch  # noqa: F401  (only the workers use it)
    except ImportError:
        sys.exit("train_peer.py needs PyTorch: python3 -m pip install torch")

    count = args.steps * args.batch
    with tempfile.TemporaryDirectory() as folder:
        cubes = ped2_cubes(args.data, count)
        if cubes is not None and len(cubes) == count:
            origin = "UCSD Ped2 training cubes from %s" % args.data
        else:
            cubes = synthetic.random_cubes(count, seed=0)
            origin = "random cubes (no Ped2 data or no cv2)"
        cubes_path = str(Path(folder) / "cubes.npy")
        np.save(cubes_path, cubes)
        cpu = open("/proc/loadavg").read().split()[:3]
        print("%d cubes: %s; %d threads per engine; %d CPUs, load average %s"
              % (count, origin, args.threads, os.cpu_count(), " ".join(cpu)))
        for name in args.configs:
            run_config(name, args, cubes_path, folder)


if __name__ == "__main__":
    main()
