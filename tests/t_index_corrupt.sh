#!/usr/bin/env bash
# Corrupt, truncated, foreign and mismatched index files are refused with a
# clear message; a torn tail is ignored.
set -euo pipefail
T="$ML_TMP/index_corrupt"
rm -rf "$T"; mkdir -p "$T/img"
/usr/bin/python3 tests/reference/make_images.py "$T/fx" --no-expected > /dev/null
for f in $(head -12 "$T/fx/good.txt"); do cp "$T/fx/$f" "$T/img/"; done
/usr/bin/python3 tests/reference/make_checkpoint.py --size tiny --seed 14 --out "$T/m.pkl" > /dev/null
/usr/bin/python3 tests/reference/make_checkpoint.py --size tiny --seed 15 --out "$T/other.pkl" > /dev/null
/usr/bin/python3 tests/reference/check_index_corrupt.py "$BUILD/magiclens" "$T/m.pkl" "$T/other.pkl" "$T/work" "$T/img"
