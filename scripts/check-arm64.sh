#!/usr/bin/env bash
# Compiles every source for ARM64 with Debian's cross compiler
# (apt-get install gcc-aarch64-linux-gnu) to prove the portable path builds
# there: x86 kernels must compile to empty units.  Objects only; the
# system's image/JSON libraries are x86 builds, so nothing is linked.
set -euo pipefail
cd "$(dirname "$0")/.."
CC=${CC_ARM64:-aarch64-linux-gnu-gcc}
command -v "$CC" > /dev/null || { echo "check-arm64: $CC not installed (apt-get install gcc-aarch64-linux-gnu)"; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# libjpeg's jconfig.h lives in the arch folder; the rest of the headers are shared.
cp /usr/include/x86_64-linux-gnu/jconfig.h "$out/" 2>/dev/null || true
n=0
for f in $(find src tools -name '*.c' | sort); do
    "$CC" -std=c11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -O2 -Iinclude -Isrc \
        -D_GNU_SOURCE -I"$out" -idirafter /usr/include -I/usr/include/libpng16 -c "$f" -o "$out/o.o"
    n=$((n + 1))
done
echo "check-arm64: $n files compile for aarch64"
