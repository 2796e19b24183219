#!/usr/bin/env bash
# Installs the Debian packages magiclens needs to build, test and run.
# This is the one place where the package list lives; .ci/run and `make run` call it.
set -euo pipefail

# Build and runtime libraries.
BUILD_PKGS="build-essential clang pkg-config libjpeg62-turbo-dev libpng-dev libwebp-dev
 libgif-dev libutf8proc-dev zlib1g-dev libjansson-dev libxxhash-dev libarchive-dev
 libopenmpi-dev openmpi-bin libmicrohttpd-dev libcurl4-openssl-dev libxml2-dev libbrotli-dev
 libmsgpack-dev"
# Test tools: the PyTorch reference and the fixture generators.
TEST_PKGS="python3 python3-numpy python3-torch python3-msgpack python3-pil python3-regex valgrind
 chromium nodejs"
# The Python package (setup.py; tests/t_python.sh installs it into a venv, offline).
TEST_PKGS="$TEST_PKGS python3-dev python3-setuptools python3-wheel python3-venv python3-pip"
# Benchmarks only (`scripts/install-deps.sh --bench`): FAISS for bench/bench_faiss.cpp.
# wrk drives the server load run (bench/load_serve.sh); python3-onnx writes the
# ONNX models of bench/vs_onnxruntime.sh (which installs onnxruntime-node from npm);
# OpenBLAS is the BLAS its PyTorch column runs on (Debian's default is netlib's).
BENCH_PKGS="libfaiss-dev libblas-dev liblapack-dev wrk python3-onnx libopenblas0-pthread"
[ "${1:-}" = "--bench" ] && TEST_PKGS="$TEST_PKGS $BENCH_PKGS"
# ARM64 cross-build and emulated tests (`scripts/install-deps.sh --aarch64`,
# docs/arm64.md): the cross compiler, qemu-user, and the :arm64 builds of the
# libraries (Debian multiarch).  Only this option adds the arm64 dpkg
# architecture.  MPI is left out for arm64 (optional; the x86 OpenMPI
# packages do not co-install with the arm64 ones).
ARM64_LIBS="libjpeg62-turbo-dev libpng-dev libwebp-dev libgif-dev libutf8proc-dev zlib1g-dev
 libjansson-dev libxxhash-dev libarchive-dev libmicrohttpd-dev libcurl4-openssl-dev libxml2-dev
 libbrotli-dev libmsgpack-dev"
if [ "${1:-}" = "--aarch64" ]; then
    TEST_PKGS="$TEST_PKGS gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        echo "install-deps: dpkg --add-architecture arm64" >&2
        $([ "$(id -u)" -eq 0 ] || echo sudo) dpkg --add-architecture arm64
    fi
    for p in $ARM64_LIBS; do TEST_PKGS="$TEST_PKGS $p:arm64"; done
fi

want=""
for p in $BUILD_PKGS $TEST_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || want="$want $p"
done
# Debian's nodejs comes without npm (NodeSource's includes it).
command -v npm > /dev/null 2>&1 || want="$want npm"
if [ -n "$want" ]; then
    echo "install-deps: installing:$want" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $want
fi

# The browser test drives Debian's chromium through playwright-core (npm; no
# browser download), installed into the git-ignored tests/browser/node_modules.
PW_VERSION=1.49.1
PW_DIR="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
if [ ! -f "$PW_DIR/node_modules/playwright-core/package.json" ]; then
    echo "install-deps: npm install playwright-core@$PW_VERSION into $PW_DIR/node_modules" >&2
    npm install --no-save --no-audit --no-fund --prefix "$PW_DIR" "playwright-core@$PW_VERSION" >&2
fi
