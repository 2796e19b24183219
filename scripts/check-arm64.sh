#!/usr/bin/env bash
# Compiles every source for ARM64 with Debian's cross compiler
# (apt-get install gcc-aarch64-linux-gnu) to prove it builds there: x86
# kernels must compile to empty units.  Objects only, against the x86
# headers, so it needs no arm64 libraries; `make ARCH=aarch64` (after
# scripts/install-deps.sh --aarch64) is the full cross-build.
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
    # the optional-instruction files get their flags, as in the Makefile
    case "$f" in
    *qgemm_i8mm.c) extra=-march=armv8.2-a+dotprod+i8mm ;;
    *_dotprod.c) extra=-march=armv8.2-a+dotprod ;;
    *qgemm_bf16.c) extra=-march=armv8.2-a+bf16 ;;
    *) extra= ;;
    esac
    "$CC" $extra -std=c11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -O2 -Iinclude -Isrc \
        -D_GNU_SOURCE -I"$out" -idirafter /usr/include -I/usr/include/libpng16 -I/usr/include/libxml2 -c "$f" -o "$out/o.o"
    n=$((n + 1))
done
echo "check-arm64: $n files compile for aarch64"
