"""pkgnet against ONNX Runtime (and PyTorch eager, where installed) on the same cubes and weights.

    python3 -m pip install onnx onnxruntime      # once; torch is optional
    python3 benchmarks/peer.py [--model M.safetensors | --edge [resnet18|resnet20]] [--threads 2 1]
                               [--batches 1 16 128] [--seconds 30]

Without --model: a random-weight model of the paper's size (k=2, w=64,
resnet50 teacher, 1.22 GFLOP per cube); --edge: an edge setting, k=2, w=16
with a resnet18 teacher (the default) or the CIFAR ResNet20 teacher of
docs/training.md (pairs d8:layer3, d16:layer2). The same model file feeds
every engine: ONNX Runtime runs the graph benchmarks/onnx_graph.py builds from its tensors, PyTorch the eager
forward of benchmarks/torch_eager.py.

What it does, in order:
1. Agreement: each engine scores the same 16 cubes; every score must match
   pkgnet's within --tolerance (1e-4) relative, or nothing is timed.
2. Throughput: per thread count, each engine runs in its own subprocess
   (ORT: intra_op_num_threads = threads, inter_op 1, sequential, graph
   optimisation ALL; torch: set_num_threads). The float32 [N,5C,32,32]
   input is made once, outside the timing, identical for all. Rounds
   alternate the engines (order rotated each round, a pause between slots
   so one engine's spinning OpenMP threads do not eat the next one's time)
   until --seconds have passed; figures are medians, the ratio is the median
   of the per-round pkgnet/ORT ratios (paired, so slow machine phases cancel).
3. Latency: one Ped2 frame, 17 uint8 cubes, end to end (ORT and torch pay
   the numpy uint8 -> float conversion, pkgnet takes uint8 itself).
4. Memory and load time: VmHWM of each engine's process (python + numpy +
   the cubes: the "base" column) after loading and after all the scoring;
   load = pkgnet.Model(), ORT InferenceSession() from the .onnx file,
   torch: reading the tensors.
5. F16: the model stored as F16, scored by pkgnet, against the F32 file.
GFLOP/s counts the direct convolutions' FLOPs (2 per multiply-add, counted
on the ONNX graph: onnx_graph.multiply_adds).
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "bindings" / "python"), str(HERE)]

from pkgnet import safetensors_io, synthetic  # noqa: E402  (neither loads libpkgnet)
from pkgnet.convert import ARCHS, default_pairs  # noqa: E402

FRAME_CUBES = 17  # objects in a typical UCSD Ped2 frame
CHECK_CUBES = 16
# An edge setting's distilled pairs; None: the published code's default pairs.
EDGE_PAIRS = {"resnet18": None, "resnet20": [("d8", "layer3"), ("d16", "layer2")]}
NAMES = {"pkgnet": "pkgnet", "ort": "ONNX Runtime", "torch": "PyTorch eager"}


def f32_layout(cubes):
    """uint8 [N,5,32,32,C] -> float32 [N,5C,32,32] in [0,1], as every engine's float input."""
    n, t, h, w, c = cubes.shape
    return np.ascontiguousarray(cubes.transpose(0, 1, 4, 2, 3).reshape(n, t * c, h, w), dtype=np.float32) / 255.0


def proc_status(pid="self"):
    """VmHWM and VmRSS in MiB."""
    out = {}
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(rest.split()[0]) / 1024.0
    return out


# ------------------------------------------------------------------ workers

class PkgnetEngine:
    def imports(self):
        import pkgnet
        pkgnet.version()  # loads libpkgnet.so and its BLAS, as importing onnxruntime loads its library

    def load(self, args):
        import pkgnet
        self.model = pkgnet.Model(args.model, threads=args.threads)
        self.info = pkgnet.system_info()

    def __call__(self, x):
        s = self.model.score(x)  # uint8 or float32, both native
        return s.prediction_error, s.inconsistency, s.combined


class OrtEngine:
    def imports(self):
        import onnxruntime  # noqa: F401

    def load(self, args):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(args.onnx, sess_options=opts, providers=["CPUExecutionProvider"])
        self.info = "onnxruntime %s" % ort.__version__

    def __call__(self, x):
        if x.dtype == np.uint8:
            x = f32_layout(x)
        return self.session.run(None, {"cubes": x})


class TorchEngine:
    def imports(self):
        import torch_eager  # noqa: F401  (imports torch)

    def load(self, args):
        import torch
        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(1)
        from torch_eager import TorchScorer
        self.scorer = TorchScorer(args.model)
        self.info = "torch %s" % torch.__version__

    def __call__(self, x):
        if x.dtype == np.uint8:
            x = f32_layout(x)
        return self.scorer(x)


ENGINES = {"pkgnet": PkgnetEngine, "ort": OrtEngine, "torch": TorchEngine}


def torch_eager_gap(meta):
    """What of this model TorchScorer does not write out, or None."""
    arch, k = meta["teacher"]["arch"], meta["student"]["k"]
    if arch not in ARCHS:
        return "the teacher " + arch
    pairs = [(p["student"], p["teacher"]) for p in meta.get("pairs", [])]
    if pairs and pairs != default_pairs(k, arch):
        return "the pairs " + ",".join("%s:%s" % p for p in pairs)
    return None


def worker(args):
    """One engine in its own process, driven by JSON lines on stdin."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # native libraries' chatter goes to stderr, not into the protocol

    def send(obj):
        proto.write(json.dumps(obj) + "\n")

    with np.load(args.data) as npz:
        data = {k: npz[k] for k in npz.files}
    base = proc_status()
    engine = ENGINES[args.worker]()
    t0 = time.perf_counter()
    engine.imports()
    t1 = time.perf_counter()
    engine.load(args)
    t2 = time.perf_counter()
    send({"import_s": t1 - t0, "load_s": t2 - t1, "base": base, "after_load": proc_status(), "info": engine.info})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "time":
            x = data[cmd["key"]]
            times = []
            start = time.perf_counter()
            while not times or time.perf_counter() - start < cmd["min_seconds"]:
                t0 = time.perf_counter()
                engine(x)
                times.append(time.perf_counter() - t0)
            send({"times": times})
        elif cmd["cmd"] == "scores":
            out = engine(data[cmd["key"]])
            send({"scores": [np.asarray(a, np.float64).tolist() for a in out]})
        elif cmd["cmd"] == "status":
            send(proc_status())
        else:
            break


class Worker:
    def __init__(self, engine, threads, model, onnx_path, data):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", engine, "--threads", str(threads),
               "--model", model, "--onnx", onnx_path or "", "--data", data]
        self.engine = engine
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.ready = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the %s worker died (see its messages above)" % self.engine)
        return json.loads(line)

    def ask(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        return self._read()

    def close(self):
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):  # a worker that died or hangs: ours, end it
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------- checks

def rel_diffs(got, ref, meta):
    """Largest relative difference of each score (prediction_error, inconsistency, combined).

    combined is a sum of normalised terms that may cancel; its difference is
    taken relative to the size of those terms rather than to the sum.
    """
    ge, gi, gc = (np.asarray(a, np.float64) for a in got)
    re_, ri, rc = (np.asarray(a, np.float64) for a in ref)
    sc = meta["scoring"]
    w, mu, sigma = (np.asarray(sc[k], np.float64) for k in ("weights", "mu", "sigma"))
    comps = np.concatenate([re_[:, None], ri], axis=1)
    scale = (np.abs(w) * (np.abs(comps) + np.abs(mu)) / sigma).sum(axis=1)
    return (float(np.max(np.abs(ge - re_) / np.maximum(np.abs(re_), 1e-6))),
            float(np.max(np.abs(gi - ri) / np.maximum(np.abs(ri), 1e-6))),
            float(np.max(np.abs(gc - rc) / np.maximum(scale, 1e-6))))


def missing_packages():
    return [p for p in ("onnx", "onnxruntime") if importlib.util.find_spec(p) is None]


def machine_line():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return "%s, %d CPUs, load average %s" % (model, os.cpu_count(), open("/proc/loadavg").read().split()[:3])


# --------------------------------------------------------------------- main

def time_threads(args, engines, threads, paths, meta, reference):
    """Agreement, throughput, latency and memory at one thread count; returns the results."""
    workers = {}
    try:
        for e in engines:  # one at a time, so load times are not contended by each other
            workers[e] = Worker(e, threads, paths["model"], paths["onnx"], paths["data"])

        # 1. agreement, before any timing
        scores = {e: w.ask(cmd="scores", key="check_f32")["scores"] for e, w in workers.items()}
        scores["pkgnet uint8"] = workers["pkgnet"].ask(cmd="scores", key="check_u8")["scores"]
        ref = scores["pkgnet"]
        agree = {e: rel_diffs(s, ref, meta) for e, s in scores.items() if e != "pkgnet"}
        for e in ("ort", "torch"):
            if e in scores:
                agree["%s vs pkgnet uint8" % e] = rel_diffs(scores[e], scores["pkgnet uint8"], meta)
        if reference is not None:
            reference.setdefault("pkgnet", ref)

        bad = {e: d for e, d in agree.items() if max(d) > args.tolerance}
        if bad:
            return {"agree": agree, "failed": bad}

        # 2-3. warm-up (workspaces and arenas grow to size), then alternating rounds
        slots = [("f32_%d" % n, n) for n in args.batches] + [("u8_%d" % FRAME_CUBES, FRAME_CUBES)]
        for w in workers.values():
            for key, _ in slots:
                w.ask(cmd="time", key=key, min_seconds=0)
        times = {(e, key): [] for e in engines for key, _ in slots}
        slot_rates = {(e, key): [] for e in engines for key, _ in slots}
        rounds = 0
        start = time.perf_counter()
        while rounds < args.min_rounds or time.perf_counter() - start < args.seconds:
            for i, (key, n) in enumerate(slots):
                order = engines[(rounds + i) % len(engines):] + engines[:(rounds + i) % len(engines)]
                for e in order:
                    time.sleep(args.gap)
                    t = workers[e].ask(cmd="time", key=key, min_seconds=args.slot_seconds)["times"]
                    times[(e, key)] += t
                    slot_rates[(e, key)].append(n / statistics.median(t))
            rounds += 1

        # 4. memory after all that scoring
        memory = {e: dict(w.ready, after_scoring=w.ask(cmd="status")) for e, w in workers.items()}
        return {"agree": agree, "slots": slots, "times": times, "slot_rates": slot_rates,
                "rounds": rounds, "memory": memory,
                "info": {e: w.ready["info"] for e, w in workers.items()}}
    finally:
        for w in workers.values():
            w.close()


def print_agreement(agree, tolerance):
    print("agreement with pkgnet on %d cubes (max relative difference; tolerance %.0e):" % (CHECK_CUBES, tolerance))
    for e, (de, di, dc) in agree.items():
        if e == "pkgnet uint8":
            label = "pkgnet, uint8 input vs float input"
        elif " vs " in e:
            label = "%s vs pkgnet fed uint8" % NAMES[e.split()[0]]
        else:
            label = "%s (same float input)" % NAMES[e]
        print("  %-36s prediction_error %.1e  inconsistency %.1e  combined %.1e" % (label, de, di, dc))


def print_results(res, engines, threads, gflop):
    slots, times, slot_rates = res["slots"], res["times"], res["slot_rates"]
    print("\nthreads %d: %d rounds, cubes/s (median)" % (threads, res["rounds"]))
    short = {"pkgnet": "pkgnet", "ort": "ORT", "torch": "torch"}
    print("  %5s  %s  %10s  |  GFLOP/s %s" % ("batch", "".join("%10s" % short[e] for e in engines), "pkgnet/ORT",
                                              "".join("%8s" % short[e] for e in engines)))
    for key, n in slots:
        if key.startswith("u8_"):
            continue
        rates = {e: n / statistics.median(times[(e, key)]) for e in engines}
        ratio = statistics.median(p / o for p, o in zip(slot_rates[("pkgnet", key)], slot_rates[("ort", key)]))
        print("  %5d  %s  %10.2f  |          %s" % (n, "".join("%10.1f" % rates[e] for e in engines), ratio,
                                                   "".join("%8.1f" % (rates[e] * gflop) for e in engines)))
    key = "u8_%d" % FRAME_CUBES
    lat = {e: 1000 * statistics.median(times[(e, key)]) for e in engines}
    print("  frame latency (%d uint8 cubes, end to end), ms: " % FRAME_CUBES
          + ", ".join("%s %.1f" % (NAMES[e], lat[e]) for e in engines)
          + "  (pkgnet/ORT time %.2f)" % (lat["pkgnet"] / lat["ort"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", help="a pkgnet model file (default: a random paper-size model)")
    parser.add_argument("--edge", nargs="?", const="resnet18", choices=sorted(EDGE_PAIRS),
                        help="an edge setting: k=2, w=16 with this teacher (default resnet18)")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 128])
    parser.add_argument("--seconds", type=float, default=30, help="timing wall time per thread count")
    parser.add_argument("--min-rounds", type=int, default=3)
    parser.add_argument("--slot-seconds", type=float, default=0.2,
                        help="each slot repeats its batch for at least this long (one call at least)")
    parser.add_argument("--gap", type=float, default=0.3,
                        help="pause before each slot: LLVM libomp threads spin 200 ms after work")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    # internal: one engine's worker process
    parser.add_argument("--worker", choices=sorted(ENGINES), help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.threads = args.threads[0]
        return worker(args)
    sys.stdout.reconfigure(line_buffering=True)  # keep our lines ordered with the workers' stderr

    missing = missing_packages()
    if missing:
        print("peer.py needs %s: python3 -m pip install onnx onnxruntime" % " and ".join(missing), file=sys.stderr)
        return 2
    engines = ["pkgnet", "ort"]
    if not args.no_torch and importlib.util.find_spec("torch") is not None:
        engines.append("torch")
    from onnx_graph import build_onnx, multiply_adds
    import onnx

    with tempfile.TemporaryDirectory(prefix="pkgnet-peer-") as tmp:
        paths = {"model": args.model}
        if args.model is None:
            setting = (2, 16, args.edge) if args.edge else (2, 64, "resnet50")
            paths["model"] = os.path.join(tmp, "k%d-w%d-%s.safetensors" % setting)
            synthetic.random_model(paths["model"], k=setting[0], width=setting[1], arch=setting[2], seed=0,
                                   pairs=EDGE_PAIRS.get(args.edge))
        _, metadata = safetensors_io.read_header(paths["model"])
        meta = json.loads(metadata["pkgnet"])
        channels = meta["student"].get("channels", 3)
        gap = torch_eager_gap(meta) if "torch" in engines else None
        if gap:
            print("PyTorch eager left out: benchmarks/torch_eager.py writes out the ImageNet ResNet teachers "
                  "with the published pairs only, and this model has %s" % gap)
            engines.remove("torch")
        t0 = time.perf_counter()
        paths["onnx"] = os.path.join(tmp, "model.onnx")
        proto = build_onnx(paths["model"])
        onnx.save(proto, paths["onnx"])
        onnx_s = time.perf_counter() - t0
        gflop = 2 * multiply_adds(proto) / 1e9
        del proto

        data = {"check_u8": synthetic.random_cubes(CHECK_CUBES, channels, seed=100)}
        data["check_f32"] = f32_layout(data["check_u8"])
        for n in args.batches:
            data["f32_%d" % n] = f32_layout(synthetic.random_cubes(n, channels, seed=n))
        data["u8_%d" % FRAME_CUBES] = synthetic.random_cubes(FRAME_CUBES, channels, seed=FRAME_CUBES)
        paths["data"] = os.path.join(tmp, "cubes.npz")
        np.savez(paths["data"], **data)

        st = meta["student"]
        print("machine: %s" % machine_line())
        print("model: %s  (k=%d, w=%d, %s teacher, %s; %.3f GFLOP per cube; %.1f MB)"
              % (args.model or "random weights", st["k"], st["width"], meta["teacher"]["arch"], st.get("task", "pred"),
                 gflop, os.path.getsize(paths["model"]) / 1e6))
        print("ONNX graph built from the model file in %.2f s (%.1f MB, opset 17)"
              % (onnx_s, os.path.getsize(paths["onnx"]) / 1e6))

        results = {}
        reference = {}
        for threads in args.threads:
            res = time_threads(args, engines, threads, paths, meta, reference)
            if threads == args.threads[0]:
                print_agreement(res["agree"], args.tolerance)
            if "failed" in res:
                if threads != args.threads[0]:
                    print_agreement(res["agree"], args.tolerance)
                print("engines disagree at %d threads (%s): not timing" % (threads, ", ".join(res["failed"])),
                      file=sys.stderr)
                return 1
            if threads == args.threads[0]:
                print("engines: " + "; ".join(res["info"][e].replace("\n", " ") for e in engines))
            print_results(res, engines, threads, gflop)
            results[threads] = res

        print("\nmemory (MiB, VmHWM of each engine's own process) and model load time:")
        print("  %-14s %7s %8s %8s %8s %11s %14s"
              % ("engine", "threads", "import s", "load s", "base", "after load", "after scoring"))
        for threads, res in results.items():
            for e in engines:
                m = res["memory"][e]
                print("  %-14s %7d %8.3f %8.3f %8.1f %11.1f %14.1f"
                      % (NAMES[e], threads, m["import_s"], m["load_s"], m["base"]["VmHWM"],
                                                                 m["after_load"]["VmHWM"],
                                                                 m["after_scoring"]["VmHWM"]))

        # 5. F16 storage: pkgnet on the F16 file against pkgnet on the F32 file
        tensors, md = safetensors_io.read(paths["model"])
        f16 = os.path.join(tmp, "model-f16.safetensors")
        safetensors_io.write(f16, {n: np.asarray(a, np.float32) for n, a in tensors.items()}, md, dtypes="F16")
        del tensors
        w = Worker("pkgnet", args.threads[0], f16, None, paths["data"])
        try:
            got = w.ask(cmd="scores", key="check_f32")["scores"]
        finally:
            w.close()
        de, di, dc = rel_diffs(got, reference["pkgnet"], meta)
        print("\nF16 weights (%.1f MB file, load %.3f s, VmHWM after load %.1f MiB): max relative score difference "
              "to the F32 file: prediction_error %.1e, inconsistency %.1e, combined %.1e"
              % (os.path.getsize(f16) / 1e6, w.ready["load_s"], w.ready["after_load"]["VmHWM"], de, di, dc))
        print("machine at the end: %s" % machine_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
