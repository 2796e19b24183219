#!/usr/bin/env bash
# Incremental indexing (new / changed / touched / deleted files, --add,
# --remove, tar shards, list files) against the float64 reference.
set -euo pipefail
T="$ML_TMP/index_update"
rm -rf "$T"; mkdir -p "$T"
/usr/bin/python3 tests/reference/make_images.py "$T/img" --no-expected > /dev/null
/usr/bin/python3 tests/reference/make_checkpoint.py --size tiny --seed 12 --out "$T/m.pkl" > /dev/null
/usr/bin/python3 tests/reference/check_index_update.py "$BUILD/magiclens" "$T/m.pkl" "$T/work" "$T/img"
