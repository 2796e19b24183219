#!/usr/bin/env bash
# index + search + export on a fixture gallery with a tiny random model: every
# query kind ranks as a brute-force float64 reference does (tests/reference/check_index.py).
set -euo pipefail
T="$ML_TMP/index_search"
rm -rf "$T"; mkdir -p "$T"
/usr/bin/python3 tests/reference/make_images.py "$T/img" --no-expected > /dev/null
/usr/bin/python3 tests/reference/make_checkpoint.py --size tiny --seed 11 --out "$T/m.pkl" > /dev/null
/usr/bin/python3 tests/reference/check_index.py "$BUILD/magiclens" "$T/m.pkl" "$T/work" "$T/img"
