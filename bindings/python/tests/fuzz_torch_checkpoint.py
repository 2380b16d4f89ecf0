"""atheris fuzz target for the converter's torch checkpoint reader.

    python3 bindings/python/tests/fuzz_torch_checkpoint.py [libFuzzer flags] [CORPUS]

(scripts/fuzz.sh runs it.) Contract under test: a checkpoint of any bytes
either loads or raises a pkgnet.Error subclass (FormatError, UnsupportedError,
...); any other exception, a hang or unbounded memory is a finding. Findings
go to Fuzz/regressions/torch-*, which test_fuzz_torch_checkpoint.py replays
(with the seeds) on every test run, atheris or not.
"""
import os
import sys
import tempfile
from collections import OrderedDict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
REGRESSIONS = os.path.join(HERE, "..", "..", "..", "Fuzz", "regressions")

import torchfile as tf  # noqa: E402  (the tests' independent writer)


def seeds():
    """Small valid checkpoints of both layouts, and wrapped state_dicts."""
    rng = np.random.default_rng(0)
    sd = OrderedDict([
        ("conv.weight", rng.normal(size=(2, 1, 3, 3)).astype(np.float32)),
        ("conv.bias", np.arange(2, dtype=np.float32)),
        ("bn.num_batches_tracked", np.array(3, dtype=np.int64)),
        ("half", np.ones((2, 2), dtype=np.float16)),
        ("flags", np.array([True, False])),
        ("empty", np.zeros((0, 2), dtype=np.float32)),
    ])
    out = {
        "zip": tf.zip_bytes(tf.tensors(sd)),
        "zip-big-endian": tf.zip_bytes(tf.tensors(sd), byteorder="big"),
        "zip-wrapped": tf.zip_bytes({"state_dict": tf.tensors(sd), "epoch": 3}),
        "legacy": tf.legacy_bytes(tf.tensors(sd)),
        "legacy-wrapped": tf.legacy_bytes({"model": tf.tensors(sd)}),
    }
    view = tf.Tensor(storage=np.arange(12, dtype=np.float32), offset=2, size=(2, 3), stride=(1, 2))
    out["zip-strided"] = tf.zip_bytes(OrderedDict([("v", view)]))
    return out


def regression_inputs():
    if not os.path.isdir(REGRESSIONS):
        return {}
    return {name: open(os.path.join(REGRESSIONS, name), "rb").read()
            for name in sorted(os.listdir(REGRESSIONS)) if name.startswith("torch-")}


_scratch = None


def check_one(data):
    """Runs the reader on one input; raises only on a contract violation."""
    global _scratch
    from pkgnet import torch_checkpoint as tc
    from pkgnet.errors import Error
    if _scratch is None:
        # The reader takes a path; /dev/shm keeps the per-input write off the disk.
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        _scratch = tempfile.NamedTemporaryFile(prefix="pkgnet-fuzz-", suffix=".pt", dir=base, delete=False).name
    with open(_scratch, "wb") as f:
        f.write(data)
    try:
        tc.load_state_dict(_scratch)
    except Error:
        pass  # refused with a documented error: what it must do


def main():
    import atheris
    with atheris.instrument_imports():
        from pkgnet import torch_checkpoint  # noqa: F401
    args = list(sys.argv)
    corpus = [a for a in args[1:] if not a.startswith("-")]
    if not corpus:
        corpus_dir = os.path.join(tempfile.gettempdir(), "pkgnet-torch-corpus")
        os.makedirs(corpus_dir, exist_ok=True)
        args.append(corpus_dir)
        corpus = [corpus_dir]
    for name, blob in list(seeds().items()) + list(regression_inputs().items()):
        path = os.path.join(corpus[0], name)
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(blob)
    atheris.Setup(args, check_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
