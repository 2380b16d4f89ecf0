"""Seed corpus for the loader fuzz target (Fuzz/LoaderFuzz).

    PYTHONPATH=bindings/python python3 Fuzz/make_seeds.py OUT_DIR [MAX_LEN]

Real model files are megabytes, but fuzz inputs must stay small for fast
executions, so the seeds are:
  * valid model files of each layout, cut to MAX_LEN bytes (the whole header
    survives: it is ~15 kB; the data section is cut, so they fail at the
    offsets check, and mutations explore the table and metadata);
  * the same headers with the data section dropped and every data_offsets
    rewritten to an empty or tiny range, which pass the table checks and
    reach ModelConfig and the network builders;
  * small hand-made files: metadata only, one tensor of each dtype, and
    files whose header length field points at or past the end.
Files are made by the project's own writer (pkgnet.synthetic), independent
of the Swift loader under test.
"""
import json
import os
import struct
import sys
import tempfile

from pkgnet import synthetic


def pack(header, data=b""):
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data


def split(blob):
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def main():
    out = sys.argv[1]
    max_len = int(sys.argv[2]) if len(sys.argv) > 2 else 16384
    os.makedirs(out, exist_ok=True)
    seeds = {}
    layouts = [
        dict(k=2, width=16, arch="resnet18", task="pred", channels=3, dtype="f32"),
        dict(k=1, width=16, arch="resnet18", task="recon", channels=1, dtype="f16"),
        dict(k=2, width=16, arch="resnet34", task="pred", channels=3, dtype="bf16"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for i, layout in enumerate(layouts):
            path = os.path.join(tmp, "m%d.safetensors" % i)
            synthetic.random_model(path, seed=i, **layout)
            blob = open(path, "rb").read()
            seeds["cut-%d" % i] = blob[:max_len]
            header, _ = split(blob)
            # Every tensor squeezed to zero bytes: the table is consistent
            # only if shapes agree, so give each tensor shape [0].
            empty = {k: (v if k == "__metadata__" else dict(v, shape=[0], data_offsets=[0, 0]))
                     for k, v in header.items()}
            seeds["empty-%d" % i] = pack(empty)
            # A handful of real-shaped small tensors (biases, BN vectors) at
            # distinct offsets, the rest dropped: reaches the shape checks.
            small, data = {"__metadata__": header["__metadata__"]}, b""
            for name, entry in header.items():
                if name == "__metadata__" or len(entry["shape"]) != 1 or entry["shape"][0] > 64:
                    continue
                size = entry["shape"][0] * (4 if entry["dtype"] == "F32" else 2)
                small[name] = dict(entry, data_offsets=[len(data), len(data) + size])
                data += b"\0" * size
                if len(data) > max_len // 2:
                    break
            seeds["small-%d" % i] = pack(small, data)
    meta = {"pkgnet": json.dumps(synthetic.build_metadata(2, 16, "pred", 3, "resnet18"))}
    seeds["meta-only"] = pack({"__metadata__": meta})
    seeds["dtypes"] = pack({
        "__metadata__": meta,
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F16", "shape": [2, 1], "data_offsets": [8, 12]},
        "c": {"dtype": "BF16", "shape": [], "data_offsets": [12, 14]},
        "d": {"dtype": "F32", "shape": [0, 3], "data_offsets": [14, 14]},
    }, struct.pack("<ff", 1.5, -2.0) + b"\x00\x3c\x00\xbc" + b"\x80\x3f")
    # Duplicate keys (refused): a tensor named twice, and a field given twice.
    text = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"\\u0061":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
    seeds["duplicate-tensor"] = struct.pack("<Q", len(text)) + text + b"\0" * 8
    text = b'{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}'
    seeds["duplicate-field"] = struct.pack("<Q", len(text)) + text + b"\0" * 4
    seeds["empty-json"] = pack({})
    seeds["length-past-end"] = struct.pack("<Q", 1 << 40) + b"{}"
    seeds["short"] = b"\x02\x00\x00"
    for name, blob in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(blob[:max_len])
    print("%d seeds in %s" % (len(seeds), out))


if __name__ == "__main__":
    main()
