#!/usr/bin/env bash
# Runs the whole test suite: every C unit-test binary ($BUILD/tests/test_*)
# and every scripted test (tests/t_*.sh).  Each test is independent; the
# runner counts them and ends with the line "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
export BUILD="${BUILD:-build}"
export ML_ROOT="$PWD"
export ML_SHARED="${ML_SHARED:-$PWD/../shared}"
export MAGICLENS_VOCAB="${MAGICLENS_VOCAB:-$ML_SHARED/assets/bpe_simple_vocab_16e6.txt.gz}"
case "$BUILD" in /*) tmp_default="$BUILD/test-tmp" ;; *) tmp_default="$PWD/$BUILD/test-tmp" ;; esac
export ML_TMP="${ML_TMP:-$tmp_default}"
mkdir -p "$ML_TMP"
pass=0; fail=0; failed=""
run_one() {
    local name="$1"; shift
    local t0=$SECONDS
    if "$@" > "$ML_TMP/$name.log" 2>&1; then
        pass=$((pass + 1)); echo "PASS $name ($((SECONDS - t0))s)"
    else
        fail=$((fail + 1)); failed="$failed $name"
        echo "FAIL $name ($((SECONDS - t0))s)"; tail -n 30 "$ML_TMP/$name.log" | sed 's/^/    /'
    fi
}
filter="${1:-}"
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    n=$(basename "$t"); [[ -z "$filter" || "$n" == *"$filter"* ]] || continue
    run_one "$n" "$t"
done
for t in tests/t_*.sh; do
    [ -f "$t" ] || continue
    n=$(basename "$t" .sh); [[ -z "$filter" || "$n" == *"$filter"* ]] || continue
    run_one "$n" bash "$t"
done
[ -n "$failed" ] && echo "failed:$failed"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
