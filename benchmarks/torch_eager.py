"""PyTorch eager scoring of a pkgnet model file (benchmarks/peer.py's third engine).

    from torch_eager import TorchScorer
    scorer = TorchScorer("model.safetensors")
    prediction_error, inconsistency, combined = scorer(cubes_f32)   # numpy in, numpy out

The forward is the published network in eager mode, as a user of the PyTorch
code runs it: torch.nn.functional calls, BatchNorm unfolded (F.batch_norm in
eval mode), no torch.compile or TorchScript. Same input layout and scores as
benchmarks/onnx_graph.py.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bindings" / "python"))

from pkgnet import safetensors_io  # noqa: E402
from pkgnet.convert import ARCHS  # noqa: E402  (block kind, blocks per layer, groups, width per group)

BN_EPS = 1e-5
COS_EPS = 1e-8


class TorchScorer:
    def __init__(self, path):
        tensors, metadata = safetensors_io.read(path)
        self.p = {n: torch.from_numpy(np.asarray(a, np.float32).copy()) for n, a in tensors.items()}
        self.meta = json.loads(metadata["pkgnet"])
        st = self.meta["student"]
        self.k, self.c, self.task = st["k"], st.get("channels", 3), st.get("task", "pred")
        self.arch = self.meta["teacher"]["arch"]
        t = self.meta["teacher"]
        self.swap = self.c == 3 and t.get("channel_order", "bgr") != self.meta["input"].get("channel_order", "bgr")
        self.mean = torch.tensor(t.get("mean", [0.0] * 3), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(t.get("std", [1.0] * 3), dtype=torch.float32).view(1, 3, 1, 1)
        sc = self.meta["scoring"]
        self.w, self.mu, self.sigma = (torch.tensor(sc[key], dtype=torch.float32) for key in ("weights", "mu", "sigma"))

    # -- layers -----------------------------------------------------------

    def conv(self, x, name, stride=1, pad=0, groups=1, bias=True):
        return F.conv2d(x, self.p[name + ".weight"], self.p[name + ".bias"] if bias else None, stride, pad, 1, groups)

    def bn(self, x, name):
        p = self.p
        return F.batch_norm(x, p[name + ".running_mean"], p[name + ".running_var"], p[name + ".weight"],
                            p[name + ".bias"], False, 0.0, BN_EPS)

    def double_conv(self, x, name):
        x = F.relu(self.bn(self.conv(x, name + ".0", 1, 1), name + ".1"))
        return F.relu(self.bn(self.conv(x, name + ".3", 1, 1), name + ".4"))

    def up(self, x, name):
        return F.conv_transpose2d(x, self.p[name + ".weight"], self.p[name + ".bias"], 2, 1, 1)

    # -- networks ---------------------------------------------------------

    def student(self, x):
        s = "student."
        x32 = self.double_conv(x, s + "encoder.in_conv.conv.conv")
        skips, h = [x32], x32
        for n in (1, 2, 3):
            pre = "%sencoder.down%d.mpconv" % (s, n)
            if self.k == 2:
                h = self.double_conv(F.max_pool2d(h, 2), pre + ".1.conv")
            else:
                h = self.double_conv(self.conv(h, pre + ".0", 2, 1), pre + ".1.conv")
            skips.append(h)
        x32, x16, x8, x4 = skips
        up = self.up(x4, s + "decoder.up1.up")
        if self.k == 1:
            up = torch.cat([x8, up], 1)
        d8 = self.double_conv(up, s + "decoder.up1.conv.conv")
        d16 = self.double_conv(torch.cat([x16, self.up(d8, s + "decoder.up2.up")], 1), s + "decoder.up2.conv.conv")
        d32 = self.double_conv(torch.cat([x32, self.up(d16, s + "decoder.up3.up")], 1), s + "decoder.up3.conv.conv")
        pred = self.conv(d32, s + "decoder.outconv.conv")
        return pred, ([x4, d8] if self.k == 2 else [x4])

    def teacher(self, x):
        kind, (n1, n2), groups, _ = ARCHS[self.arch]
        h = F.relu(self.bn(self.conv(x, "teacher.conv1", 2, 3, bias=False), "teacher.bn1"))
        h = F.max_pool2d(h, 3, 2, 1)
        outs = []
        for layer, nblocks, stride in ((1, n1, 1), (2, n2, 2)):
            for i in range(nblocks):
                p = "teacher.layer%d.%d" % (layer, i)
                s = stride if i == 0 else 1
                if kind == "basic":
                    out = F.relu(self.bn(self.conv(h, p + ".conv1", s, 1, bias=False), p + ".bn1"))
                    out = self.bn(self.conv(out, p + ".conv2", 1, 1, bias=False), p + ".bn2")
                else:
                    out = F.relu(self.bn(self.conv(h, p + ".conv1", bias=False), p + ".bn1"))
                    out = F.relu(self.bn(self.conv(out, p + ".conv2", s, 1, groups, bias=False), p + ".bn2"))
                    out = self.bn(self.conv(out, p + ".conv3", bias=False), p + ".bn3")
                if p + ".downsample.0.weight" in self.p:
                    h = self.bn(self.conv(h, p + ".downsample.0", s, 0, bias=False), p + ".downsample.1")
                h = F.relu(out + h)
            outs.append(h)
        return [outs[1], outs[0]]

    # -- scores -----------------------------------------------------------

    @torch.inference_mode()
    def __call__(self, cubes):
        x = torch.from_numpy(np.ascontiguousarray(cubes, dtype=np.float32))
        c = self.c
        target = x[:, 4 * c:5 * c]
        pred, sfeat = self.student(x[:, :4 * c] if self.task == "pred" else target)
        if c == 1:
            tin = target.expand(-1, 3, -1, -1)
        else:
            tin = target.flip(1) if self.swap else target
        tfeat = self.teacher((tin - self.mean) / self.std)[:len(sfeat)]
        err = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        incs = []
        for s, t in zip(sfeat, tfeat):
            ns = s.pow(2).sum(1).sqrt().clamp_min(COS_EPS)
            nt = t.pow(2).sum(1).sqrt().clamp_min(COS_EPS)
            incs.append((1.0 - (s * t).sum(1) / (ns * nt)).mean(dim=(1, 2)))
        inc = torch.stack(incs, 1)
        comps = torch.cat([err[:, None], inc], 1)
        combined = ((comps - self.mu) / self.sigma * self.w).sum(1)
        return err.numpy(), inc.numpy(), combined.numpy()
