#!/usr/bin/env bash
# kill -9 at random points during indexing, many rounds, then resume:
# nothing acknowledged is lost, nothing duplicated, the result is exact.
set -euo pipefail
T="$ML_TMP/index_crash"
rm -rf "$T"; mkdir -p "$T"
/usr/bin/python3 tests/reference/make_checkpoint.py --size tiny --seed 13 --out "$T/m.pkl" > /dev/null
/usr/bin/python3 tests/reference/check_index_crash.py "$BUILD/magiclens" "$T/m.pkl" "$T/work" "${ML_CRASH_ROUNDS:-16}" "${ML_CRASH_SEED:-1}"
