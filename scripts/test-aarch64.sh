#!/usr/bin/env bash
# The aarch64 build's kernel unit tests and tiny-model parity tests under
# qemu-aarch64 (user-mode emulation), once per emulated CPU level:
#   cortex-a53  plain NEON (ARMv8.0): the "neon" path only
#   max         every extension qemu has (dotprod, i8mm, bf16, ...): all paths
# The tests themselves are the x86 ones (tests/run.sh): their Python float64
# references run natively, and $BUILD/magiclens and $BUILD/tests/test_* are
# wrappers that run the aarch64 binaries under qemu.  Ends with the line
# "N passed, N failed" over all levels.  Speed means nothing here.
# Usage: BUILD=build-aarch64 bash scripts/test-aarch64.sh  (after make ARCH=aarch64)
set -u
cd "$(dirname "$0")/.."
ARM_BUILD="$(cd "${BUILD:-build-aarch64}" && pwd)"
QEMU=${QEMU:-qemu-aarch64}
command -v "$QEMU" > /dev/null || { echo "test-aarch64: $QEMU not found (scripts/install-deps.sh --aarch64)"; exit 2; }
[ -x "$ARM_BUILD/magiclens" ] || { echo "test-aarch64: no $ARM_BUILD/magiclens (make ARCH=aarch64)"; exit 2; }
CPUS=${ML_QEMU_CPUS:-"cortex-a53 max"}
# Unit tests (kernels, low precision, search scans, image decode + resize:
# the filter t_image runs test_image and t_image.sh) and scripted ones
# (end-to-end parity, every path x precision, search).
UNITS="test_kernels test_qgemm test_search test_image"
FILTERS="test_kernels test_qgemm test_search t_image t_embed_parity t_precision t_index_search"
# Emulation costs ~100x, so the paths are split between the levels
# (ML_TEST_ISAS, read by the unit tests and t_precision): plain NEON on the
# cortex-a53, the extensions on max.  The portable path is tested natively.
# t_embed_parity is fp32 only, whose kernels are the same code on every
# aarch64 path: it runs once, on the cortex-a53 (t_precision checks fp32
# against the same bounds on each path of max).  ML_SKIP_SLOW drops the
# largest 2-thread cases, as make test-asan does.
export ML_SKIP_SLOW=1
isas_for() { case "$1" in cortex-a53) echo "neon" ;; *) echo "dotprod i8mm bf16" ;; esac; }
# test_kernels (fp32 GEMM, ops, attention) runs the same NEON code on every
# aarch64 path: once per level is enough.
isas_of_test() { [ "$2" = test_kernels ] && echo "${1##* }" || echo "$1"; }
filters_for() { case "$1" in cortex-a53) echo "$FILTERS" ;; *) echo "${FILTERS/t_embed_parity /}" ;; esac; }
pass=0; fail=0; t_start=$SECONDS
for cpu in $CPUS; do
    W="$ARM_BUILD/qemu-$cpu"
    rm -rf "$W"; mkdir -p "$W/tests"
    wrap() { # wrapper path, aarch64 binary
        printf '#!/bin/sh\nexec %s -cpu %s %s "$@"\n' "$QEMU" "$cpu" "$2" > "$1"
        chmod +x "$1"
    }
    wrap "$W/magiclens" "$ARM_BUILD/magiclens"
    for u in $UNITS; do wrap "$W/tests/$u" "$ARM_BUILD/tests/$u"; done
    echo "== qemu-aarch64 -cpu $cpu: $("$W/magiclens" cpu)"
    echo "== paths tested: $(isas_for "$cpu")"
    t0=$SECONDS
    isas=$(isas_for "$cpu")
    for t in $(filters_for "$cpu"); do
        out=$(BUILD="$W" ML_TEST_ISAS="$(isas_of_test "$isas" "$t")" bash tests/run.sh "$t" 2>&1)
        echo "$out" | grep -v -E '^[0-9]+ passed' | sed "s/^/[$cpu] /"
        line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -1)
        p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/'); f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
        [ -n "$line" ] || { p=0; f=1; echo "[$cpu] $t: no summary line"; }
        pass=$((pass + p)); fail=$((fail + f))
    done
    echo "== -cpu $cpu: $((SECONDS - t0))s"
done
echo "test-aarch64: $((SECONDS - t_start))s under emulation"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
