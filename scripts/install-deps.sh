#!/usr/bin/env bash
# Installs the Debian packages magiclens needs to build, test and run.
# This is the one place where the package list lives; .ci/run and `make run` call it.
set -euo pipefail

# Build and runtime libraries.
BUILD_PKGS="build-essential clang pkg-config libjpeg62-turbo-dev libpng-dev libwebp-dev
 libgif-dev libutf8proc-dev zlib1g-dev libjansson-dev libxxhash-dev libarchive-dev
 libopenmpi-dev openmpi-bin"
# Test tools: the PyTorch reference and the fixture generators.
TEST_PKGS="python3 python3-numpy python3-torch python3-msgpack python3-pil python3-regex valgrind"
# Benchmarks only (`scripts/install-deps.sh --bench`): FAISS for bench/bench_faiss.cpp.
BENCH_PKGS="libfaiss-dev libblas-dev liblapack-dev"
[ "${1:-}" = "--bench" ] && TEST_PKGS="$TEST_PKGS $BENCH_PKGS"

want=""
for p in $BUILD_PKGS $TEST_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || want="$want $p"
done
if [ -z "$want" ]; then
    exit 0
fi
echo "install-deps: installing:$want" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $want
