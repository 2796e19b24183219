#!/usr/bin/env bash
# Runs the whole test suite: every C unit-test binary ($BUILD/tests/test_*)
# and every scripted test (tests/t_*.sh).  Each test is independent.  A test
# that needs files it cannot have (the real benchmark annotations or WARC
# samples of ../shared) prints "SKIP <test>: <reason>" and exits 77.  The
# runner ends with the line "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/.."
export BUILD="${BUILD:-build}"
export ML_ROOT="$PWD"
export ML_SHARED="${ML_SHARED:-$PWD/../shared}"
case "$BUILD" in /*) tmp_default="$BUILD/test-tmp" ;; *) tmp_default="$PWD/$BUILD/test-tmp" ;; esac
export ML_TMP="${ML_TMP:-$tmp_default}"
mkdir -p "$ML_TMP"

# The CLIP vocabulary, by the lookup every command uses (`magiclens vocab`:
# $MAGICLENS_VOCAB, models/, ../shared/assets/).  None: fetch it alone,
# sha256-checked, into models/.  Still none: stop before running anything.
if ! vocab=$("$BUILD/magiclens" vocab 2> /dev/null); then
    echo "run.sh: no CLIP vocabulary found; fetching it with scripts/download-model.sh models vocab"
    if ! bash scripts/download-model.sh models vocab > "$ML_TMP/download-vocab.log" 2>&1 ||
        ! vocab=$("$BUILD/magiclens" vocab 2> /dev/null); then
        echo "run.sh: cannot run the tests without the CLIP vocabulary: put bpe_simple_vocab_16e6.txt.gz in models/ (scripts/download-model.sh fetches it) or set MAGICLENS_VOCAB"
        exit 1
    fi
fi
export MAGICLENS_VOCAB="$vocab"

pass=0; fail=0; skip=0; failed=""
run_one() {
    local name="$1"; shift
    local t0=$SECONDS rc=0
    "$@" > "$ML_TMP/$name.log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
        pass=$((pass + 1)); echo "PASS $name ($((SECONDS - t0))s)"
    elif [ "$rc" -eq 77 ]; then
        skip=$((skip + 1))
        grep -m1 "^SKIP " "$ML_TMP/$name.log" || echo "SKIP $name: (no reason given)"
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
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
