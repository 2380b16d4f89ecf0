"""The Ped2 edge recipe trained in PyTorch, scored by pkgnet: is a gap to the
anchor's AUROC the trainer's or the recipe's?

    python3 benchmarks/ped2_torch_recipe.py [--seed 0] [--epochs 12] [--threads 2]
                                           [--data ../shared/data/ped2] [--out .build/ped2-torch]

The recipe of examples/scripts/ped2.sh (CIFAR ResNet20 teacher, k=2 width-16
student, pairs d8:layer3,d16:layer2, published losses and fixed BatchNorm,
Adam lr 5e-4, batch 128, top-3 frame score, median window 19), with the
training loop in PyTorch eager (benchmarks/train_peer.py's network, loss and
Adam, checked step for step against pkgnet by
bindings/python/tests/test_train_torch.py), everything else in pkgnet:
1. pkgnet.train.Trainer writes the initial student for --seed (the
   published initialisation) and the model's settings;
2. PyTorch trains it for --epochs epochs on the Ped2 training cubes (every
   box with 4 frames before it, decoded with OpenCV), shuffled per epoch
   with numpy's generator seeded by --seed;
3. the trained student's tensors replace the initial ones in the model file,
   `pkgnet calibrate` computes mu and sigma on the training clips (eq. 8),
   `pkgnet eval` scores the test clips.
So the two trainers can be compared on the same evaluation, seed by seed.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "bindings" / "python"), str(HERE)]

import train_peer  # noqa: E402
from pkgnet import convert, safetensors_io  # noqa: E402

PAIRS = [("d8", "layer3"), ("d16", "layer2")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ped2"))
    parser.add_argument("--out", default=str(ROOT / ".build" / "ped2-torch"))
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit("ped2_torch_recipe.py needs PyTorch: python3 -m pip install torch")
    from pkgnet.train import Trainer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pkgnet_cli = str(ROOT / ".build" / "release" / "pkgnet")
    checkpoint = Path(args.data).parent.parent / "weights" / "cifar-resnet" / "resnet20-12fca82f.th"
    teacher = out / "resnet20.teacher.safetensors"
    if not teacher.exists():
        convert.convert_teacher(str(checkpoint), "resnet20", str(teacher))

    cubes = train_peer.ped2_cubes(args.data, 10**9)
    if cubes is None:
        sys.exit("no Ped2 training cubes: needs %s and cv2" % args.data)
    print("%d training cubes" % len(cubes), flush=True)
    cubes_path = out / "cubes.npy"
    np.save(cubes_path, cubes)

    initial = out / ("initial-seed%d.safetensors" % args.seed)
    trainer = Trainer(teacher, cubes[:256], k=2, width=16, pairs=PAIRS, batch_size=128, learning_rate=5e-4,
                      epochs=args.epochs, seed=args.seed, top_k=3, median_window=19, threads=args.threads)
    trainer.write_model(initial, calibrate=False)
    trainer.close()

    torch.manual_seed(args.seed)
    spec = {"initial": str(initial), "teacher": str(teacher), "cubes": str(cubes_path), "width": 16,
            "pairs": PAIRS, "batch": 128, "threads": args.threads, "lr": 5e-4, "seed": args.seed}
    engine = train_peer.TorchEngine(spec)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        loss = engine.epoch()
        seconds = time.perf_counter() - t0
        print("epoch %d/%d: loss %.5f, %.0f s (%.0f cubes/s)" % (epoch, args.epochs, loss, seconds,
                                                                len(cubes) / seconds), flush=True)
    print("PyTorch training: %.0f s" % (time.perf_counter() - start), flush=True)

    tensors, metadata = safetensors_io.read(initial)
    trained = {"student." + name: value.detach().numpy() for name, value in engine.net.student.state_dict().items()
               if not name.endswith("num_batches_tracked")}
    assert set(trained) <= set(tensors), sorted(set(trained) - set(tensors))
    tensors.update(trained)
    model = out / ("torch-seed%d.safetensors" % args.seed)
    safetensors_io.write(model, {n: np.ascontiguousarray(v, np.float32) for n, v in tensors.items()}, metadata)
    subprocess.run([pkgnet_cli, "calibrate", "--model", str(model), "--data", args.data,
                    "--threads", str(args.threads), "--quiet"], check=True)
    result = subprocess.run([pkgnet_cli, "eval", "--model", str(model), "--data", args.data,
                             "--threads", str(args.threads), "--scores", str(out / ("torch-seed%d.csv" % args.seed))],
                            check=True, capture_output=True, text=True)
    (out / ("torch-seed%d.eval.txt" % args.seed)).write_text(result.stdout)
    print(result.stdout)
    print(json.dumps({"seed": args.seed, "epochs": args.epochs, "model": str(model)}))


if __name__ == "__main__":
    main()
