#!/usr/bin/env bash
# RSS over CYCLES (default 10,000) load / score / stream / free cycles of the C
# API, plus valgrind memcheck of examples/c/score_cubes when valgrind exists.
#   benchmarks/leak_check.sh [CYCLES] [LIB=.build/release/libpkgnet.so]
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES=${1:-10000}
LIB=${2:-.build/release/libpkgnet.so}
WORK=$(mktemp -d /tmp/pkgnet-leak.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# A private copy: other builds may replace the library while this runs.
cp "$LIB" "$WORK/libpkgnet.so"
ln -s libpkgnet.so "$WORK/libpkgnet.so.0"
export PYTHONPATH=$PWD/bindings/python${PYTHONPATH:+:$PYTHONPATH}
python3 -c "from pkgnet import synthetic; synthetic.random_model('$WORK/model.safetensors', k=2, width=16, dtype='f16', seed=3)"
cc -O2 -g -Wall -Wextra -Iinclude benchmarks/leak_check.c -L"$WORK" -lpkgnet -Wl,-rpath,"$WORK" -o "$WORK/leak_check"
cc -O2 -g -Wall -Iinclude examples/c/score_cubes.c -L"$WORK" -lpkgnet -Wl,-rpath,"$WORK" -o "$WORK/score_cubes"
echo "== $CYCLES load/score/free cycles"
OMP_NUM_THREADS=1 "$WORK/leak_check" "$WORK/model.safetensors" "$CYCLES"
if command -v valgrind >/dev/null; then
    python3 -c "import numpy as np; np.random.default_rng(1).integers(0, 256, (4, 5, 32, 32, 3), dtype=np.uint8).tofile('$WORK/cubes.u8')"
    # The library is large and its DWARF is newer than valgrind reads well:
    # a stripped copy keeps valgrind's start-up fast and its reports clean.
    strip --strip-debug "$WORK/libpkgnet.so"
    echo "== valgrind memcheck: score_cubes (4 cubes)"
    # OMP_NUM_THREADS=1: libomp's worker threads otherwise keep "possibly lost"
    # stacks that are the runtime's, not pkgnet's.
    OMP_NUM_THREADS=1 valgrind --error-exitcode=3 --leak-check=full --show-leak-kinds=definite,indirect \
        --errors-for-leak-kinds=definite,indirect --read-var-info=no --track-origins=yes \
        "$WORK/score_cubes" "$WORK/model.safetensors" "$WORK/cubes.u8" 4
fi
