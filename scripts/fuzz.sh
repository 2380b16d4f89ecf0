#!/usr/bin/env bash
# Coverage-guided fuzzing of pkgnet's untrusted-input parsers.
#
#   scripts/fuzz.sh --short          ~45 s smoke run of every target (make test runs this)
#   scripts/fuzz.sh --long [RUNS]    the long run: RUNS (default 10,000,000) executions
#                                    of the loader target, then 10 minutes of the others
#   scripts/fuzz.sh --build          build the targets only
#   scripts/fuzz.sh --replay         run every saved corpus/crash input once
#
# Targets (built into .build-fuzz/, never into .build: normal builds are unaffected):
#   loader  Fuzz/LoaderFuzz  libFuzzer, swiftc -sanitize=fuzzer,address over the
#                            PkgnetCore + PkgnetKernels sources: Model(bytes:)
#   stream  Fuzz/StreamFuzz  libFuzzer: frames (size, stride, format, pixels) and
#                            boxes (NaN, inverted, outside) pushed into a Stream
#   torch   bindings/python/tests/fuzz_torch_checkpoint.py  atheris (if installed):
#                            the converter's torch checkpoint reader
#
# Findings land in .build-fuzz/<target>/crashes/; each must become a
# regression test (Tests/PkgnetTests/FuzzRegressionTests.swift replays
# Fuzz/regressions/*).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/.build-fuzz
MODE=${1:---short}
RUNS=${2:-10000000}
# 4 kB keeps an execution near 0.15 ms (JSON decoding dominates): whole
# 15 kB headers give ~8% more coverage at a fifth of the speed. The seeds are
# cut to this size too; FUZZ_MAX_LEN=16384 for a slower, deeper run.
MAX_LEN=${FUZZ_MAX_LEN:-4096}
export PYTHONPATH=$ROOT/bindings/python${PYTHONPATH:+:$PYTHONPATH}

SWIFTC=${SWIFTC:-swiftc}
CLANG=${CLANG:-$(dirname "$(command -v "$SWIFTC")")/clang}
# The toolchain's clang must ship the libFuzzer runtime; skip (not fail) where it does not.
FUZZER_RT=$("$CLANG" -print-resource-dir 2>/dev/null)/lib/linux/libclang_rt.fuzzer-x86_64.a
if [ ! -f "$FUZZER_RT" ]; then
    echo "fuzz.sh: $CLANG has no libFuzzer runtime ($FUZZER_RT); skipping fuzzing" >&2
    exit 0
fi
OMP_INCLUDE=$(ls -d /usr/lib/llvm-*/lib/clang/*/include 2>/dev/null | head -1)

build() {
    mkdir -p "$OUT/obj"
    # The C kernels: ASan, plus coverage so the fuzzer sees the checks in C too.
    local cflags=(-O1 -g -fPIC -fopenmp -march=x86-64-v2 -fno-math-errno -fno-omit-frame-pointer
                  -fsanitize=address,fuzzer-no-link -I Sources/PkgnetKernels/include -I "$OMP_INCLUDE")
    local objs=()
    for c in Sources/PkgnetKernels/*.c; do
        local o=$OUT/obj/$(basename "$c" .c).o
        if [ ! -f "$o" ] || [ "$c" -nt "$o" ]; then "$CLANG" "${cflags[@]}" -c "$c" -o "$o"; fi
        objs+=("$o")
    done
    printf 'module PkgnetKernels {\n    umbrella "%s/Sources/PkgnetKernels/include"\n    export *\n}\n' "$ROOT" > "$OUT/module.modulemap"
    # -O keeps Swift's overflow and bounds checks (the release build's
    # -Ounchecked drops them): a reachable trap must be found here.
    local swiftflags=(-O -g -parse-as-library -sanitize=fuzzer,address
                      -Xcc -fmodule-map-file="$OUT/module.modulemap" -I Sources/PkgnetKernels/include
                      -Xcc -I -Xcc "$OMP_INCLUDE" -lomp5 -ldl -lm)
    local core=(Sources/PkgnetCore/*.swift Sources/PkgnetCore/*/*.swift)
    local name
    for name in loader stream; do
        local dir=Fuzz/LoaderFuzz; [ $name = stream ] && dir=Fuzz/StreamFuzz
        local bin=$OUT/$name-fuzz newest
        newest=$(ls -t "${core[@]}" $dir/*.swift Sources/PkgnetKernels/*.c Sources/PkgnetKernels/include/*.h | head -1)
        if [ ! -x "$bin" ] || [ "$newest" -nt "$bin" ]; then
            echo "fuzz.sh: building $bin"
            "$SWIFTC" "${swiftflags[@]}" -module-name Pkgnet${name^}Fuzz "${core[@]}" $dir/*.swift "${objs[@]}" -o "$bin" \
                2> >(grep -v "Cannot export local symbol '__asan" >&2)  # gold's noise about ASan's outlined checks
        fi
    done
}

seeds() {
    local corpus=$OUT/loader/corpus
    mkdir -p "$corpus" "$OUT/loader/crashes" "$OUT/stream/corpus" "$OUT/stream/crashes"
    if [ ! -f "$OUT/loader/seeded" ]; then
        python3 Fuzz/make_seeds.py "$corpus" "$MAX_LEN"
        touch "$OUT/loader/seeded"
    fi
    # Past findings (now fixed) stay in the corpus: they are interesting inputs.
    local f
    for f in Fuzz/regressions/loader-*; do
        case "$f" in *.expect) ;; *) cp -n "$f" "$corpus"/ 2>/dev/null || true ;; esac
    done
    # The stream target loads one small real model once, then fuzzes frames.
    [ -f "$OUT/stream/model.safetensors" ] || python3 -c "from pkgnet import synthetic; synthetic.random_model('$OUT/stream/model.safetensors', k=1, width=16, dtype='f16')"
}

# libFuzzer on one core (the machine is shared); leaks are checked by the
# sanitizer runs, not per input, because libomp's thread pool keeps memory.
run() {  # target, extra libFuzzer flags...
    local name=$1; shift
    ( cd "$OUT/$name" && PKGNET_FUZZ_MODEL=$OUT/stream/model.safetensors \
      ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 OMP_NUM_THREADS=1 \
      "$OUT/$name-fuzz" -artifact_prefix=crashes/ -max_len="$MAX_LEN" -timeout=10 -rss_limit_mb=4096 \
        -print_final_stats=1 "$@" corpus )
}

torch() {  # seconds
    if python3 -c "import atheris" 2>/dev/null; then
        python3 bindings/python/tests/fuzz_torch_checkpoint.py -max_total_time="$1" -max_len=65536 \
            -artifact_prefix="$OUT/torch-crash-" -print_final_stats=1
    else
        echo "fuzz.sh: atheris is not installed (pip install atheris); skipping the torch checkpoint target" >&2
    fi
}

case "$MODE" in
--build) build ;;
--short)
    build; seeds
    # ~45 s of fuzzing (plus ~2 min to build the targets the first time).
    run loader -max_total_time=20
    run stream -max_total_time=15
    torch 10 ;;
--long)
    build; seeds
    run loader -runs="$RUNS"
    run stream -max_total_time=600
    torch 600 ;;
--replay)
    build; seeds
    run loader -runs=0 ; run stream -runs=0 ;;
*) echo "usage: $0 [--short | --long [RUNS] | --build | --replay]" >&2; exit 2 ;;
esac
