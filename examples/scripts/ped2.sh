#!/usr/bin/env bash
# Trains PKG-Net on UCSD Ped2's training clips and evaluates it on the test
# clips in ../shared/data/ped2, from a fresh checkout plus ../shared:
# the edge recipe of docs/training.md (CIFAR ResNet20 teacher, k=2 width-16
# student, d8/d16 pairs, published losses and BatchNorm mode, Adam 5e-4,
# batch 128, top-3 frame score, median window 19), and the ablations of the
# paper's Tab. 4 on the same split: prediction only (lambda_c = 0, score on
# S_e only), distillation only (lambda_e = lambda_g = 0, score on S_c only)
# and both. No setting is chosen per test clip: all are the published ones
# or fixed before evaluation.
#
# Environment: SHARED (default ../shared), OUT (default .build/ped2),
# EPOCHS (default 12, as the anchor recipe), THREADS (default 0 = all CPUs), ABLATIONS (default 1),
# SEED (default 0: the initial weights and the shuffles).
set -euo pipefail
cd "$(dirname "$0")/../.."

shared=${SHARED:-../shared}
out=${OUT:-.build/ped2}
epochs=${EPOCHS:-12}
threads=${THREADS:-0}
seed=${SEED:-0}
pkgnet=.build/release/pkgnet
data=$shared/data/ped2
mkdir -p "$out"
[ -x "$pkgnet" ] || make build

teacher=$out/resnet20.teacher.safetensors
[ -f "$teacher" ] || PYTHONPATH=bindings/python python3 -m pkgnet.convert teacher --arch resnet20 \
    --checkpoint "$shared/weights/cifar-resnet/resnet20-12fca82f.th" -o "$teacher"

run() {  # name, then extra pkgnet train options
    local name=$1; shift
    local start=$SECONDS
    "$pkgnet" train --data "$data" --teacher "$teacher" --width 16 --pairs d8:layer3,d16:layer2 \
        --epochs "$epochs" --lr 5e-4 --batch-size 128 --top-k 3 --median-window 19 --threads "$threads" \
        --seed "$seed" --out "$out/$name.safetensors" "$@"
    echo "$name: trained in $((SECONDS - start)) s"
    "$pkgnet" eval --model "$out/$name.safetensors" --data "$data" --threads "$threads" \
        --scores "$out/$name.csv" --report "$out/$name.html" | tee "$out/$name.eval.txt"
}

run both
if [ "${ABLATIONS:-1}" = 1 ]; then
    run prediction-only --loss-weights 0.8,0.1,0 --score-weights 1,0,0
    run distillation-only --loss-weights 0,0,0.2 --score-weights 0,0.65,0.35
fi
for name in both prediction-only distillation-only; do
    if [ -f "$out/$name.eval.txt" ]; then echo "$name: $(tail -n 1 "$out/$name.eval.txt")"; fi
done
